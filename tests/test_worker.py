"""``optio_host.worker``: one well-formed protocol line per call, whatever the message or the writers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from optio_host import worker
from optio_host.protocol import (
    DeliverableEvent,
    DoneEvent,
    ErrorEvent,
    StatusEvent,
    parse_log_line,
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A session-like workdir with an empty log, as the current folder, no OPTIO_LOG."""
    folder = tmp_path / "workdir"
    (folder / "deliverables").mkdir(parents=True)
    (folder / "optio.log").write_text("")
    monkeypatch.delenv(worker.LOG_ENV, raising=False)
    monkeypatch.chdir(folder)
    return folder


def log_lines(workdir: Path) -> list[str]:
    text = (workdir / "optio.log").read_text()
    assert text.endswith("\n") or text == ""
    return text.splitlines()


def test_each_call_writes_one_parseable_line(workdir: Path) -> None:
    worker.status("Loading", percent=10)
    worker.status("No percent here")
    worker.done("all good")
    worker.error("oops")
    worker.done()
    worker.error()
    events = [parse_log_line(line) for line in log_lines(workdir)]
    assert events == [
        StatusEvent(10, "Loading"),
        StatusEvent(None, "No percent here"),
        DoneEvent("all good"),
        ErrorEvent("oops"),
        DoneEvent(None),
        ErrorEvent(None),
    ]


@pytest.mark.parametrize("breaker", ["\n", "\r", "\r\n", "\u2028", "\x0b", "\x85"])
def test_line_breaks_in_a_message_cannot_forge_a_second_line(workdir: Path, breaker: str) -> None:
    worker.status(f"first{breaker}DONE: forged", percent=5)
    worker.error(f"bad{breaker}DONE")
    worker.done(f"ok{breaker}ERROR: forged")
    lines = log_lines(workdir)
    assert len(lines) == 3
    assert (workdir / "optio.log").read_bytes().count(b"\n") == 3
    assert parse_log_line(lines[0]) == StatusEvent(5, "first DONE: forged")
    assert parse_log_line(lines[1]) == ErrorEvent("bad DONE")
    assert parse_log_line(lines[2]) == DoneEvent("ok ERROR: forged")


@pytest.mark.parametrize(("given", "written"), [(150, 100), (-5, 0), (42.6, 43), (0, 0), (100.0, 100)])
def test_percent_is_clamped_to_an_int_from_0_to_100(workdir: Path, given: float, written: int) -> None:
    worker.status("x", percent=given)
    assert log_lines(workdir) == [f"STATUS: {written}% x"]


def test_percent_must_be_a_number(workdir: Path) -> None:
    with pytest.raises(ValueError, match="NaN"):
        worker.status("x", percent=float("nan"))
    with pytest.raises(TypeError):
        worker.status("x", percent="50")  # type: ignore[arg-type]
    assert log_lines(workdir) == []


def test_log_is_found_from_env_then_cwd_then_parents(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = workdir / "a" / "b"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert worker.find_log() == str(workdir / "optio.log")

    elsewhere = tmp_path / "elsewhere.log"
    monkeypatch.setenv(worker.LOG_ENV, str(elsewhere))
    worker.status("via env")
    assert elsewhere.read_text() == "STATUS: via env\n"
    assert log_lines(workdir) == []


def test_no_log_anywhere_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(worker.LOG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    if any((parent / "optio.log").exists() for parent in tmp_path.parents):
        pytest.skip("an optio.log exists above the temporary folder")
    with pytest.raises(FileNotFoundError, match="OPTIO_LOG"):
        worker.status("lost")


def test_deliverable_outside_is_copied_in_and_announced(workdir: Path) -> None:
    (workdir / "result.csv").write_text("a,b\n1,2\n")
    assert worker.deliverable("result.csv") == "deliverables/result.csv"
    assert (workdir / "deliverables" / "result.csv").read_text() == "a,b\n1,2\n"
    assert (workdir / "result.csv").exists()
    assert (
        worker.deliverable(workdir / "result.csv", name="tables/renamed.csv")
        == "deliverables/tables/renamed.csv"
    )
    assert (workdir / "deliverables" / "tables" / "renamed.csv").read_text() == "a,b\n1,2\n"
    events = [parse_log_line(line) for line in log_lines(workdir)]
    assert events == [
        DeliverableEvent("deliverables/result.csv"),
        DeliverableEvent("deliverables/tables/renamed.csv"),
    ]
    # Nothing half-written left behind by the copy.
    assert sorted(os.listdir(workdir / "deliverables")) == ["result.csv", "tables"]


def test_deliverable_already_inside_is_pointed_at(workdir: Path) -> None:
    inside = workdir / "deliverables" / "sub" / "report.txt"
    inside.parent.mkdir()
    inside.write_text("report\n")
    before = inside.stat().st_ino
    assert worker.deliverable(inside) == "deliverables/sub/report.txt"
    assert inside.stat().st_ino == before  # not copied over itself
    assert log_lines(workdir) == ["DELIVERABLE: deliverables/sub/report.txt"]


def test_bad_deliverables_write_nothing(workdir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        worker.deliverable("missing.txt")
    (workdir / "x.txt").write_text("x")
    for name in ("../escape.txt", "/abs.txt", "", "."):
        with pytest.raises(ValueError, match="inside deliverables"):
            worker.deliverable("x.txt", name=name)
    with pytest.raises(ValueError, match="one log line"):
        worker.deliverable("x.txt", name="two\nlines.txt")
    assert log_lines(workdir) == []
    assert not (workdir / "escape.txt").exists()


_WRITER = textwrap.dedent(
    """
    import sys
    from optio_host import worker

    me = int(sys.argv[1])
    for i in range(1000):
        # Every 50th line is large (256 KiB): still one write, still one whole line.
        filler = "x" * (256 * 1024 if i % 50 == 0 else 10)
        worker.status(f"writer {me} line {i} {filler}", percent=i % 101)
    """
)


@pytest.mark.timeout(60)
def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    log = tmp_path / "optio.log"
    log.write_text("")
    env = {**os.environ, worker.LOG_ENV: str(log)}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(me)], env=env, stdin=subprocess.DEVNULL)
        for me in range(4)
    ]
    for process in writers:
        assert process.wait(60) == 0
    lines = log.read_text().split("\n")
    assert lines.pop() == ""  # the file ends with a newline
    assert len(lines) == 4000
    pattern = re.compile(r"STATUS: (\d{1,3})% writer (\d) line (\d+) (x+)")
    seen: Counter[tuple[int, int]] = Counter()
    for line in lines:
        match = pattern.fullmatch(line)
        assert match is not None, line[:100]
        me, i = int(match[2]), int(match[3])
        assert int(match[1]) == i % 101
        assert len(match[4]) == (256 * 1024 if i % 50 == 0 else 10)
        seen[me, i] += 1
    assert set(seen.values()) == {1}
    assert len(seen) == 4000


_PYTHON_WORKER = textwrap.dedent(
    """
    from optio_host import worker

    worker.status("python worker starting", percent=20)
    with open("made-here.txt", "w") as handle:
        handle.write("made by the python worker\\n")
    worker.deliverable("made-here.txt")
    worker.status("multi\\nline message", percent=80)
    worker.done("python worker done")
    """
)


@pytest.mark.timeout(60)
def test_a_python_worker_runs_through_a_session(tmp_path: Path) -> None:
    script = tmp_path / "pyworker.py"
    script.write_text(_PYTHON_WORKER)
    out = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPTIO_")}
    command = ["session", "--out", str(out), "--upload", str(script), "--", sys.executable, "pyworker.py"]
    result = subprocess.run(
        [sys.executable, "-m", "optio_host", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "made-here.txt").read_text() == "made by the python worker\n"
    lines = result.stdout.splitlines()
    assert " 20% python worker starting" in lines
    assert " 80% multi line message" in lines
    assert "     python worker done" in lines


# ------------------------------------------------------------------ a single file, anywhere

_HEAVY = ("asyncssh", "optio_core", "bson", "cryptography", "click", "rich")


def test_importing_the_worker_helper_pulls_in_nothing_heavy() -> None:
    probe = (
        "import sys, optio_host.worker\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {_HEAVY!r}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('optio_host')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.splitlines() == ["[]", "['optio_host', 'optio_host.worker']"]


# -I: no PYTHONPATH, no user site packages; -S: no site-packages at all (optio_host may be installed).
_ISOLATED = [sys.executable, "-I", "-S"]


@pytest.fixture
def standalone(tmp_path: Path) -> Path:
    """worker.py alone in a session-like folder, for a Python that cannot import optio_host."""
    folder = tmp_path / "host"
    (folder / "deliverables").mkdir(parents=True)
    (folder / "optio.log").write_text("")
    (folder / "worker.py").write_bytes(Path(worker.__file__).read_bytes())
    isolated = subprocess.run(
        [*_ISOLATED, "-c", "import optio_host"], capture_output=True, cwd=folder, timeout=30, check=False
    )
    assert b"ModuleNotFoundError" in isolated.stderr  # nothing of the package is reachable
    return folder


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"]}  # no OPTIO_LOG: the log is found in the current folder
    return subprocess.run(
        [*_ISOLATED, "worker.py", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=30
    )


def test_the_copied_file_works_from_a_shell_worker(standalone: Path) -> None:
    (standalone / "result.csv").write_text("a,b\n")
    for args in (
        ("status", "50", "half way"),
        ("status", "7%", "with a sign"),
        ("status", "no percent"),
        ("status", "2024"),
        ("deliverable", "result.csv", "--name", "tables/r.csv"),
        ("done", "all\nfine"),
        ("error",),
    ):
        result = _cli(standalone, *args)
        assert result.returncode == 0, result.stderr
    assert _cli(standalone, "deliverable", "result.csv").stdout == "deliverables/result.csv\n"
    events = [parse_log_line(line) for line in (standalone / "optio.log").read_text().splitlines()]
    assert events == [
        StatusEvent(50, "half way"),
        StatusEvent(7, "with a sign"),
        StatusEvent(None, "no percent"),
        StatusEvent(None, "2024"),
        DeliverableEvent("deliverables/tables/r.csv"),
        DoneEvent("all fine"),
        ErrorEvent(None),
        DeliverableEvent("deliverables/result.csv"),
    ]
    assert (standalone / "deliverables" / "tables" / "r.csv").read_text() == "a,b\n"


def test_the_copied_file_reports_mistakes_without_writing(standalone: Path) -> None:
    missing = _cli(standalone, "deliverable", "missing.csv")
    assert missing.returncode == 1 and "missing.csv" in missing.stderr
    assert _cli(standalone, "status", "x", "--bogus").returncode == 2  # argparse's usage error
    assert _cli(standalone).returncode == 2
    assert (standalone / "optio.log").read_text() == ""


def test_the_copied_file_imports_as_a_module(standalone: Path) -> None:
    code = "import worker; worker.status('from python', percent=30); print(worker.temp_name_for('/a/b'))"
    result = subprocess.run(
        [*_ISOLATED, "-c", f"import sys; sys.path.insert(0, '.'); {code}"],
        cwd=standalone,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert re.fullmatch(r"/a/\.b\.optio-[0-9a-f]{16}\.tmp\n", result.stdout)
    assert (standalone / "optio.log").read_text() == "STATUS: 30% from python\n"


def test_the_keywords_are_defined_once_in_the_worker_helper() -> None:
    from optio_host.protocol import parser

    source = Path(parser.__file__).read_text()
    for keyword in worker.KEYWORDS:
        assert f'"{keyword}"' not in source
    assert parser.LOG_NAME is worker.LOG_NAME and parser.DELIVERABLES_DIR is worker.DELIVERABLES_DIR
    assert parse_log_line(f"{worker.DONE}: x") == DoneEvent("x")


def test_temp_names_fit_name_max_and_are_one_scheme() -> None:
    from optio_host import paths

    assert paths.temp_name_for is worker.temp_name_for
    name = worker.temp_name_for("/d/" + "é" * 127)
    assert len(os.path.basename(name).encode()) <= 255
    assert name != worker.temp_name_for("/d/" + "é" * 127)
