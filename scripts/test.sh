#!/bin/sh
# The whole test suite, in virtual environments of its own:
#   .venv-test    the newest dependencies we allow: every test
#   .venv-oldest  the oldest optio-core we support (0.1.0): the optio-core integration tests again
# Unraisable exceptions (a finaliser's error) and ResourceWarnings (something left for the
# garbage collector to close) fail the run. Extra arguments go to the first pytest run
# (e.g. `sh scripts/test.sh -x -k remote`).
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv .venv-test
.venv-test/bin/pip install -q --disable-pip-version-check -e '.[test]'
.venv-test/bin/pytest -W error::pytest.PytestUnraisableExceptionWarning -W error::ResourceWarning "$@"

"$PYTHON" -m venv .venv-oldest
.venv-oldest/bin/pip install -q --disable-pip-version-check -e '.[test]' 'optio-core==0.1.0'
.venv-oldest/bin/pytest -q -W error::pytest.PytestUnraisableExceptionWarning -W error::ResourceWarning tests/test_optio_core.py tests/test_download.py tests/test_hook_context.py
