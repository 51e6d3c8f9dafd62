"""The pytest plugin needs no configuration: a fresh project whose pytest.ini says nothing.

Each test runs pytest in a subprocess in a temporary project, as a task author would:
no ``asyncio_mode``, no conftest. The inner tests use the ``host`` fixture, so they run
on this machine and on the test sshd.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from optio_host.testing.sshd import ACCOUNT_ENV, TEST_ACCOUNT, account_note

pytestmark = pytest.mark.timeout(120)

INNER_TEST = """
async def test_put_says_whether_it_wrote(host):
    target = host.workdir + "/data.txt"
    assert await host.put_file_to_host(b"payload", target, skip_if_unchanged=True) is True
    assert await host.put_file_to_host(b"payload", target, skip_if_unchanged=True) is False
    assert await host.put_file_to_host(b"changed", target, skip_if_unchanged=True) is True
    assert await host.fetch_bytes_from_host(target) == b"changed"
"""


SOURCE = str(Path(__file__).resolve().parent.parent / "src")


def _base_env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE, base.get("PYTHONPATH")]))
    return base


def _pytest(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_inner.py").write_text(INNER_TEST)
    base = _base_env()
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::pytest.PytestDeprecationWarning",
            "-k",
            "put_says",
            *args,
        ],
        cwd=project,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def test_async_tests_with_its_fixtures_run_without_asyncio_mode(tmp_path: Path) -> None:
    result = _pytest(tmp_path, "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_put_says_whether_it_wrote[local] PASSED" in result.stdout
    assert "test_put_says_whether_it_wrote[remote] PASSED" in result.stdout


def test_dash_p_loads_it_with_autoloading_off(tmp_path: Path) -> None:
    result = _pytest(
        tmp_path,
        "-p",
        "asyncio",
        "-p",
        "optio_host.testing",
        "-v",
        env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout  # local and remote


def test_dash_p_with_autoloading_on_loads_it_once(tmp_path: Path) -> None:
    result = _pytest(tmp_path, "-p", "optio_host.testing")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout  # local and remote


@pytest.mark.skipif(os.geteuid() != 0, reason="the account note is for runs as root")
def test_root_run_names_the_account_and_the_opt_out(tmp_path: Path) -> None:
    note = account_note()
    assert note is not None and TEST_ACCOUNT in note and ACCOUNT_ENV in note
    result = _pytest(tmp_path, "-k", "local")
    assert note in result.stdout  # in the run's header


@pytest.mark.skipif(os.geteuid() != 0, reason="logging in as root needs root")
def test_opt_out_logs_in_as_the_named_account(tmp_path: Path) -> None:
    result = _pytest(tmp_path, "-v", env={ACCOUNT_ENV: "root"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"sshd logs in as 'root' ({ACCOUNT_ENV})" in result.stdout
    assert "test_put_says_whether_it_wrote[remote] PASSED" in result.stdout


def test_opt_out_naming_no_account_is_a_clear_error(tmp_path: Path) -> None:
    result = _pytest(tmp_path, "-v", env={ACCOUNT_ENV: "no-such-account-here", "CI": "true"})
    assert result.returncode != 0
    assert f"{ACCOUNT_ENV}=no-such-account-here: no such account" in result.stdout


def test_without_pytest_asyncio_pytest_still_runs_and_the_fixtures_say_what_to_install(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "blocker" / "pytest_asyncio"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('pytest-asyncio is not installed (simulated)')\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_sync.py").write_text(
        "def test_plain():\n    assert True\n\ndef test_uses(local_host):\n    pass\n"
    )
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": f"{blocker.parent}{os.pathsep}{SOURCE}"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "optio_host.testing", "-rf"],
        cwd=project, env={**_base_env(), **env}, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert "1 passed, 1 error" in result.stdout, result.stdout + result.stderr
    assert "local_host: optio-host's host fixtures need pytest-asyncio" in result.stdout
