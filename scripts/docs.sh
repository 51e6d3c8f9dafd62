#!/bin/sh
# The docs site, built strictly (any warning fails) into ./site (git-ignored), in a
# virtual environment of its own (.venv-docs) so it installs from scratch.
# Extra arguments go to `mkdocs build` (e.g. `sh scripts/docs.sh --verbose`).
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv .venv-docs
.venv-docs/bin/pip install -q --disable-pip-version-check -e '.[docs]'
NO_MKDOCS_2_WARNING=1 .venv-docs/bin/mkdocs build --strict --site-dir site "$@"
