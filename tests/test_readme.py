"""The README's and the docs pages' code blocks run as written.

Every fenced block of ``docs/*.md`` is either run here (the predicate that picks it is
below) or is one of the install commands in ``NOT_RUN`` (they need the network). Snippet
lines (``--8<-- "path"``) are replaced by the file they name, as the docs build does.
In the README, the complete examples run; fragments need a real remote host.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from optio_host.testing import SshServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(120)

_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)
_SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.MULTILINE)

#: Install commands: they need the network (the test suite has none), so they are not run.
NOT_RUN = {
    "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/optio-host demo",
    "pip install optio-host mongomock-motor\npython first_task.py",
}


def _blocks_of(path: Path) -> list[tuple[str, str]]:
    text = _SNIPPET.sub(lambda m: (ROOT / m.group(1)).read_text(), path.read_text())
    return [(lang, code) for lang, code in _FENCE.findall(text)]


BLOCKS = _blocks_of(README)
DOC_BLOCKS = [(page.name, lang, code) for page in PAGES for lang, code in _blocks_of(page)]


def _is_complete_python(lang: str, code: str) -> bool:
    return lang == "python" and "asyncio.run(" in code


def _is_test_file(lang: str, code: str) -> bool:
    return lang == "python" and ("\ndef test_" in code or "\nasync def test_" in code)


def _is_python_worker(lang: str, code: str) -> bool:
    return lang == "python" and "from optio_host import worker" in code


def _is_shell_worker(lang: str, code: str) -> bool:
    return lang == "sh" and code.startswith("#!/bin/sh")


def _is_pytest_command(lang: str, code: str) -> bool:
    return lang == "sh" and code.startswith("pytest ")


def _is_cli_session(lang: str, code: str) -> bool:
    return lang == "console" and code.startswith("$ ")


def _is_output(lang: str, code: str) -> bool:
    return lang == "text"  # sample output shown next to the block that prints it


RUNNERS: list[Callable[[str, str], bool]] = [
    _is_complete_python,
    _is_test_file,
    _is_python_worker,
    _is_shell_worker,
    _is_pytest_command,
    _is_cli_session,
    _is_output,
]


def _docs(pick: Callable[[str, str], bool]) -> list[str]:
    return [code for _, lang, code in DOC_BLOCKS if pick(lang, code)]


def _ids(code: str) -> str:
    return code.strip().splitlines()[-1][:40]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPTIO_LOG" and not k.startswith("PYTEST_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    source = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    return env


def test_setup_commands_open_the_readme() -> None:
    text = README.read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert first_block is not None
    assert first_block.group(1).strip().splitlines() == [
        "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/optio-host demo",
        "sh scripts/test.sh",
    ]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "\nsh scripts/test.sh\n" in ci  # CI runs exactly the README's test command
    assert "sh scripts/docs.sh" in ci  # and builds the docs, strictly


def test_every_docs_block_is_run_or_an_install_command() -> None:
    assert {page.name for page in PAGES} >= {
        "first-task.md", "protocol.md", "how-it-works.md", "testing.md", "cli.md",
        "compatibility.md", "benchmarks.md",
    }  # fmt: skip
    for page, lang, code in DOC_BLOCKS:
        runs = [pick.__name__ for pick in RUNNERS if pick(lang, code)]
        assert runs or code.strip() in NOT_RUN, f"{page}: a ```{lang} block nothing runs: {code[:80]!r}"


@pytest.mark.parametrize(
    "code", [c for lang, c in BLOCKS if _is_complete_python(lang, c)] + _docs(_is_complete_python), ids=_ids
)
def test_complete_python_examples_run(code: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=100,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_python_worker_example(tmp_path: Path) -> None:
    codes = [c for lang, c in BLOCKS if _is_python_worker(lang, c)] + _docs(_is_python_worker)
    assert len(codes) == 2
    for index, code in enumerate(codes):
        folder = tmp_path / str(index)
        folder.mkdir()
        (folder / "optio.log").write_text("")
        subprocess.run([sys.executable, "-c", code], cwd=folder, env=_env(), check=True, timeout=50)
        assert (folder / "optio.log").read_text().splitlines() == [
            "STATUS: 30% analysing",
            "DELIVERABLE: deliverables/summary.txt",
            "DONE: analysis complete",
        ]
        assert (folder / "deliverables" / "summary.txt").read_text() == "42\n"


def test_shell_worker_example(tmp_path: Path) -> None:
    codes = [c for lang, c in BLOCKS if _is_shell_worker(lang, c)] + _docs(_is_shell_worker)
    assert len(codes) == 2
    for index, code in enumerate(codes):
        folder = tmp_path / str(index)
        folder.mkdir()
        subprocess.run(["/bin/sh", "-c", code], cwd=folder, env=_env(), check=True, timeout=50)
        assert (folder / "optio.log").read_text().splitlines() == [
            "STATUS: 10% counting lines",
            "DELIVERABLE: deliverables/count.txt",
            "DONE: counted",
        ]


def _project(folder: Path) -> Path:
    """A task package's folder whose pytest.ini says nothing, with the docs' test file in it."""
    (test_file,) = _docs(_is_test_file)
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "test_my_task.py").write_text(test_file)
    return folder


def test_the_testing_page_runs_with_an_empty_pytest_ini(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v"],
        cwd=_project(tmp_path), env=_env(), capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_worker_reports_progress[local] PASSED" in result.stdout
    assert "test_worker_reports_progress[remote] PASSED" in result.stdout


@pytest.mark.parametrize("code", _docs(_is_pytest_command), ids=_ids)
def test_the_testing_page_pytest_command(code: str, tmp_path: Path) -> None:
    env = {**_env(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    argv = [*shlex.split(code), "-p", "no:cacheprovider"]
    result = subprocess.run(
        argv, cwd=_project(tmp_path), env=env, capture_output=True, text=True, timeout=100, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_root_note_on_the_testing_page_is_the_one_printed() -> None:
    from optio_host.testing.sshd import TEST_ACCOUNT, account_note

    page = (ROOT / "docs" / "testing.md").read_text()
    if os.geteuid() == 0 and "OPTIO_HOST_SSHD_USER" not in os.environ:
        assert account_note() in page
    assert TEST_ACCOUNT in page


def _console_steps(code: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines, each with the output lines shown under it."""
    steps: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


@pytest.fixture
def box_home(tmp_path: Path, optio_sshd: SshServer) -> Iterator[Path]:
    """A $HOME whose ~/.ssh names the test sshd ``box`` (config and known_hosts); cleans the remote home."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host box\n  HostName {optio_sshd.host}\n  Port {optio_sshd.port}\n"
        f"  User {optio_sshd.user}\n  IdentityFile {optio_sshd.key_path}\n"
    )
    shutil.copy(optio_sshd.known_hosts, home / ".ssh" / "known_hosts")
    remote_home = Path(pwd.getpwnam(optio_sshd.user).pw_dir)
    before = set(os.listdir(remote_home))
    try:
        yield home
    finally:
        for name in set(os.listdir(remote_home)) - before:
            path = remote_home / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


@pytest.mark.parametrize("code", _docs(_is_cli_session), ids=_ids)
def test_cli_page_sessions_run_as_shown(code: str, tmp_path: Path, box_home: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {**_env(), "HOME": str(box_home)}
    env = {k: v for k, v in env.items() if not k.startswith("OPTIO_")}
    for command, shown in _console_steps(code):
        result = subprocess.run(
            ["/bin/sh", "-c", "exec 2>&1\n" + command], cwd=work, env=env, capture_output=True, text=True,
            timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.stdout.splitlines() == shown, f"$ {command}\n{result.stdout}{result.stderr}"


def test_benchmarks_page_is_benchmarks_md() -> None:
    assert '--8<-- "BENCHMARKS.md"' in (ROOT / "docs" / "benchmarks.md").read_text()
