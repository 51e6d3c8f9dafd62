"""A hostile worker's log cannot harm the orchestrator (issue 12, findings 3, 4, 12 and 13, log side).

The worker owns ``optio.log``: it may replace it with a symlink (to an outside
file, to ``/dev/zero``), a FIFO, or write lines of any length and any bytes.
Whatever it does, the tail follows only a regular file, the event loop keeps
running (a ticking task measures it), memory stays bounded, and nothing it
wrote reaches a terminal with its control characters raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tracemalloc
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import pexpect
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from optio_host import LocalHost, RemoteHost, SessionFailed
from optio_host._lines import DEFAULT_LINE_LIMIT, LineSplitter
from optio_host.cli._display import for_terminal
from optio_host.host import _ssh
from optio_host.host.base import Host
from optio_host.protocol import run_log_protocol_session
from optio_host.testing import RecordingContext
from optio_host.testing.sshd import SshServer

from .test_cli import assert_one_line_error, cli, spawn, ssh_args

pytestmark = pytest.mark.timeout(90)

#: The longest the event loop may go without running a ready task.
MAX_STALL = 0.1


class LoopWatch:
    """A ticking task: ``longest`` is the longest the loop went past a tick's due time."""

    TICK = 0.005

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # the first tick is scheduled before the work starts
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.TICK)
            now = loop.time()
            self.longest = max(self.longest, now - last - self.TICK)
            last = now


async def sh(host: Host, script: str, *args: str) -> None:
    """Run ``script`` (``$1``... = ``args``) in the workdir; it must succeed."""
    result = await host.run(["/bin/sh", "-c", script, "sh", *args])
    assert result.exit_code == 0, result.stderr


async def first_lines(host: Host, path: str, count: int) -> list[str]:
    lines: list[str] = []
    async with contextlib.aclosing(host.tail_file(path)) as tail:
        async for line in tail:
            lines.append(line)
            if len(lines) == count:
                break
    return lines


# A file outside the workdir the worker would like the orchestrator to read.
OUTSIDE = "STATUS: leaked\nDONE: leaked\n"


async def outside_file(host: Host) -> str:
    path = host.taskdir + "/outside.txt"
    await sh(host, 'printf "%s" "$2" > "$1"', path, OUTSIDE)
    return path


# ------------------------------------------------------------------ the tail, both hosts


@pytest.mark.parametrize("target", ["outside", "/dev/zero"])
async def test_tail_refuses_a_symlinked_file(host: Host, target: str) -> None:
    link_to = await outside_file(host) if target == "outside" else target
    await sh(host, 'ln -s -- "$1" log.txt', link_to)
    async with LoopWatch() as watch:
        with pytest.raises(OSError, match=r"log\.txt: it is a symbolic link; only a regular file"):
            await asyncio.wait_for(first_lines(host, host.workdir + "/log.txt", 1), 20)
    assert watch.longest < MAX_STALL


async def test_tail_refuses_a_fifo_without_blocking(host: Host) -> None:
    await sh(host, "mkfifo log.txt")
    async with LoopWatch() as watch:
        with pytest.raises(OSError, match=r"log\.txt: it is a FIFO \(named pipe\)"):
            await asyncio.wait_for(first_lines(host, host.workdir + "/log.txt", 1), 20)
    assert watch.longest < MAX_STALL


async def test_tail_refuses_a_folder(host: Host) -> None:
    await sh(host, "mkdir log.txt")
    with pytest.raises(OSError, match=r"log\.txt: it is a directory"):
        await asyncio.wait_for(first_lines(host, host.workdir + "/log.txt", 1), 20)


@pytest.mark.parametrize("swap", ["link", "fifo"])
async def test_tail_refuses_what_replaces_the_file_later(host: Host, swap: str) -> None:
    outside = await outside_file(host)
    await host.write_text("log.txt", "first\n")
    seen: list[str] = []
    first = asyncio.Event()

    async def follow() -> None:
        async for line in host.tail_file(host.workdir + "/log.txt"):
            seen.append(line)
            first.set()

    follower = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(first.wait(), 20)
        make = 'ln -s -- "$1" new.txt' if swap == "link" else "mkfifo new.txt"
        await sh(host, f'{make} && mv -f new.txt log.txt && echo more >> "$1"', outside)
        kind = "a symbolic link" if swap == "link" else "a FIFO"
        with pytest.raises(OSError, match=f"log.txt: it is {kind}"):
            await asyncio.wait_for(follower, 20)
    finally:
        follower.cancel()
    assert seen == ["first"]  # nothing of the outside file


# ------------------------------------------------------------------ the session, both hosts


def _replacing_body(script: str, *args: str) -> Any:
    """A session body that waits for ``STATUS: one``, then runs ``script`` and waits forever."""

    async def body(host: Host, _hook: object) -> None:
        await host.write_text("optio.log", "STATUS: one\n")
        await sh(host, script, *args)
        await asyncio.sleep(120)

    return body


@pytest.mark.parametrize("target", ["outside", "/dev/zero"])
async def test_session_fails_when_the_log_becomes_a_symlink(host: Host, target: str) -> None:
    link_to = await outside_file(host) if target == "outside" else target
    ctx = RecordingContext()
    body = _replacing_body('sleep 0.3; ln -s -- "$1" new.log && mv -f new.log optio.log', link_to)
    async with LoopWatch() as watch:
        with pytest.raises(SessionFailed, match=r"cannot follow the worker's log: .*symbolic link"):
            await asyncio.wait_for(run_log_protocol_session(host, ctx, body=body), 30)
    assert "one" in ctx.messages
    assert not any("leaked" in message for message in ctx.messages)
    assert watch.longest < MAX_STALL


async def test_session_fails_when_the_log_is_a_fifo(host: Host) -> None:
    ctx = RecordingContext()

    async def body(h: Host, _hook: object) -> None:
        await sh(h, "rm optio.log && mkfifo optio.log")
        await asyncio.sleep(120)

    async with LoopWatch() as watch:
        with pytest.raises(SessionFailed, match=r"cannot follow the worker's log: .*FIFO"):
            await asyncio.wait_for(run_log_protocol_session(host, ctx, body=body), 30)
    assert watch.longest < MAX_STALL


#: A log with one line of 40 MiB between two normal ones.
HUGE_LINE = (
    "printf 'STATUS: 7%% big '; head -c 41943040 /dev/zero | tr '\\0' x; printf '\\nSTATUS: after\\nDONE\\n'"
)


async def test_session_cuts_a_huge_line_with_bounded_memory(host: Host) -> None:
    async def body(h: Host, _hook: object) -> None:
        await sh(h, f"{{ {HUGE_LINE}; }} >> optio.log")
        await asyncio.sleep(120)

    # Memory first (tracemalloc slows every allocation, so the loop is timed in a second run).
    tracemalloc.start()
    try:
        await asyncio.wait_for(run_log_protocol_session(host, RecordingContext(), body=body), 60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A few copies of the 1 MiB line it keeps (decoded, parsed, recorded): not the 40 MiB. Over SSH,
    # asyncssh also holds what arrived but was not read yet: up to about three channel windows.
    transport = 3 * _ssh._WINDOW if isinstance(host, RemoteHost) else 0
    assert peak < 12 * 1024 * 1024 + transport, f"peak {peak / 2**20:.1f} MiB for a 40 MiB line"
    ctx = RecordingContext()
    async with LoopWatch() as watch:
        await asyncio.wait_for(run_log_protocol_session(host, ctx, body=body), 60)
    assert watch.longest < MAX_STALL
    length = len("STATUS: 7% big ") + 41943040
    assert ctx.progress == [
        (
            None,
            f"A line of optio.log ending at byte {length + 1} was cut at {DEFAULT_LINE_LIMIT} bytes: "
            f"the other {length - DEFAULT_LINE_LIMIT} bytes were dropped",
        ),
        (7, "big " + "x" * (DEFAULT_LINE_LIMIT - len("STATUS: 7% big "))),
        (None, "after"),
    ]


async def test_session_line_bound_is_a_keyword(host: Host) -> None:
    ctx = RecordingContext()

    async def body(h: Host, _hook: object) -> None:
        await h.write_text("optio.log", "STATUS: 12345678901234567890\nERROR: abcdefghijklmnop\n")
        await asyncio.sleep(120)

    with pytest.raises(SessionFailed) as failed:
        await run_log_protocol_session(host, ctx, body=body, max_line_bytes=12)
    assert str(failed.value) == "abcde"
    assert ctx.progress == [
        (None, "A line of optio.log ending at byte 29 was cut at 12 bytes: the other 16 bytes were dropped"),
        (None, "1234"),
        (None, "A line of optio.log ending at byte 53 was cut at 12 bytes: the other 11 bytes were dropped"),
    ]
    with pytest.raises(ValueError, match="max_line_bytes must be a positive int"):
        await run_log_protocol_session(host, ctx, body=body, max_line_bytes=0)


# ------------------------------------------------------------------ after a reconnect (remote)


@pytest.fixture
def server() -> Any:
    with SshServer() as sshd:
        yield sshd


async def test_symlinked_log_is_refused_after_a_reconnect(server: SshServer) -> None:
    one = asyncio.Event()
    ctx = RecordingContext(on_progress=lambda _percent, message: one.set() if message == "one" else None)
    async with RemoteHost(server.ssh_config(keepalive_interval=1), f"{server.scratch}/relink") as host:
        await host.setup_workdir()
        outside = await outside_file(host)
        log = host.workdir + "/optio.log"

        async def body(h: Host, _hook: object) -> None:
            await h.write_text("optio.log", "STATUS: one\n")
            await one.wait()
            server.kill_connections()
            # Swapped before the loop runs again: only a tail started after the reconnect sees it.
            os.symlink(outside, log + ".new")
            os.rename(log + ".new", log)
            await asyncio.sleep(120)

        with pytest.raises(SessionFailed, match=r"cannot follow the worker's log: .*symbolic link"):
            await asyncio.wait_for(run_log_protocol_session(host, ctx, body=body), 60)
    assert "Reconnected to the host" in ctx.messages
    assert not any("leaked" in message for message in ctx.messages)


# ------------------------------------------------------------------ fuzz (LocalHost)


class _CountingContext:
    """A ``ProcessContext`` that keeps no messages (their memory would be the test's, not ours)."""

    def __init__(self) -> None:
        self.process_id = "fuzz"
        self.params: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self.reports = 0
        self.longest = 0

    def report_progress(self, percent: float | None, message: str | None = None, **_: Any) -> None:
        self.reports += 1
        self.longest = max(self.longest, len(message or ""))

    def should_continue(self) -> bool:
        return True


FUZZ_LIMIT = 64 * 1024
#: Random bytes: NUL, invalid UTF-8, CR, stray newlines, and now and then a keyword.
_NOISE = st.lists(
    st.one_of(
        st.binary(max_size=200), st.sampled_from([b"STATUS: 5% ", b"DELIVERABLE: ", b"\r\n", b"\xff\xfe"])
    ),
    max_size=8,
).map(b"".join)
#: A line far past the bound (up to 6 MiB): its size, a pattern repeated to fill it, a newline or not.
#: (Drawn as a recipe, not as bytes: a failing example then prints in a few lines.)
_HUGE = st.tuples(
    st.integers(2 * FUZZ_LIMIT, 6 * 1024 * 1024), st.binary(min_size=1, max_size=3), st.booleans()
)


def _huge_line(size: int, pattern: bytes, newline: bool) -> bytes:
    return pattern * (size // len(pattern)) + (b"\n" if newline else b"")


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    # No "explain" phase: it traces every line run, which is what this test measures.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
@given(pieces=st.lists(st.tuples(_NOISE, _HUGE), min_size=1, max_size=3), tail=_NOISE)
def test_fuzzed_log_bytes_keep_memory_bounded_and_the_loop_running(
    tmp_path: Path, pieces: list[tuple[bytes, tuple[int, bytes, bool]]], tail: bytes
) -> None:
    content = b"".join(noise + _huge_line(*huge) for noise, huge in pieces) + tail
    directory = tmp_path / f"fuzz-{uuid.uuid4().hex}"
    asyncio.run(_fuzz_session(directory, content))


async def _fuzz_session(directory: Path, content: bytes) -> None:
    ctx = _CountingContext()
    host = LocalHost(directory)

    async def body(h: Host, _hook: object) -> None:
        whole = memoryview(content)  # slices of a view: no copies in the traced memory
        with open(os.path.join(h.workdir, "optio.log"), "ab") as log:
            for start in range(0, len(content), 1024 * 1024):
                log.write(whole[start : start + 1024 * 1024])
                log.flush()
                await asyncio.sleep(0)
            log.write(b"\nDONE\n")
        await asyncio.sleep(120)

    tracemalloc.start()
    try:
        async with LoopWatch() as watch:
            with contextlib.suppress(SessionFailed):  # the bytes may hold an ERROR line
                await asyncio.wait_for(
                    run_log_protocol_session(host, ctx, body=body, max_line_bytes=FUZZ_LIMIT), 60
                )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A report quotes at most a cut line (a skipped deliverable's path twice, as repr: 4 chars a byte).
    assert ctx.longest <= 10 * FUZZ_LIMIT
    assert peak < 4 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for {len(content) / 2**20:.1f} MiB of log"
    assert watch.longest < MAX_STALL, f"the loop stalled {watch.longest * 1000:.0f} ms"


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=400),
    cuts=st.lists(st.integers(0, 400), max_size=10),
    limit=st.integers(1, 20),
)
def test_bounded_splitter_keeps_offsets_and_cuts_exactly(data: bytes, cuts: list[int], limit: int) -> None:
    splitter = LineSplitter(7, limit=limit)
    lines = []
    previous = 0
    for cut in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        lines += splitter.feed(data[previous:cut])
        assert splitter.pending <= len(data)
        assert len(splitter._buffer) <= limit  # the bound: never more than limit bytes held
        previous = cut
    whole = data.split(b"\n")[:-1]
    assert [line.raw for line in lines] == [line[:limit] for line in whole]
    assert [line.cut for line in lines] == [max(len(line) - limit, 0) for line in whole]
    assert [line.end for line in lines] == [
        7 + sum(len(w) + 1 for w in whole[: i + 1]) for i in range(len(whole))
    ]


# ------------------------------------------------------------------ terminal escapes


def test_for_terminal_escapes_control_characters_only() -> None:
    assert for_terminal("\x1b]0;title\x07 \x1b[2J ok\tü ✓ \x9b1m \u202eevil") == (
        "\\x1b]0;title\\x07 \\x1b[2J ok\tü ✓ \\x9b1m \\u202eevil"
    )
    assert for_terminal("line\r\nnext\x00\x7f") == "line\\x0d\\x0anext\\x00\\x7f"


#: A worker whose STATUS, output and ERROR carry OSC (window title, hyperlink) and CSI sequences.
ESCAPING_WORKER = r"""printf 'STATUS: 10%% \033]0;PWNED-TITLE\007 \033[2J cleared\n' >> "$OPTIO_LOG"
printf 'out \033]0;PWNED-OUTPUT\007\n'
sleep 0.5
printf 'ERROR: \033]8;;http://evil\033\\PWNED-LINK\033]8;;\033\\ \033[31mred\n' >> "$OPTIO_LOG"
sleep 30
"""


def _no_raw_sequences(shown: bytes) -> None:
    for raw in (b"\x1b]0;PWNED", b"\x1b]8;;http", b"\x1b[2J", b"\x1b[31mred"):
        assert raw not in shown, f"{raw!r} reached the terminal raw"


@pytest.fixture(params=["local", "remote"])
def where(request: pytest.FixtureRequest) -> list[str]:
    """The CLI's host options: this machine, or the test sshd."""
    return [] if request.param == "local" else ssh_args(request.getfixturevalue("optio_sshd"))


def _session_args(where: list[str], tmp_path: Path) -> list[str]:
    worker = tmp_path / "worker.sh"
    worker.write_text(ESCAPING_WORKER)
    return ["session", *where, "--out", str(tmp_path / "o"), "--upload", str(worker), "--", "sh", "worker.sh"]


def test_plain_session_shows_worker_escapes_escaped(where: list[str], tmp_path: Path) -> None:
    result = cli(*_session_args(where, tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == " 10% \\x1b]0;PWNED-TITLE\\x07 \\x1b[2J cleared\n"
    assert_one_line_error(result.stderr.splitlines(keepends=True)[-1], "PWNED-LINK")
    last = result.stderr.splitlines()[-1]
    assert "\x1b" not in last
    assert "\\x1b]8;;http://evil\\x1b\\PWNED-LINK" in last
    # Not a terminal: the worker's own output passes through unchanged, byte for byte.
    assert "out \x1b]0;PWNED-OUTPUT\x07\n" in result.stderr


@pytest.mark.timeout(60)
def test_live_session_shows_worker_escapes_escaped(where: list[str], tmp_path: Path) -> None:
    child = spawn(*_session_args(where, tmp_path))
    child.expect(pexpect.EOF)
    child.close()
    shown = child.before
    assert child.exitstatus == 1
    assert b"\x1b[" in shown  # a live display
    _no_raw_sequences(shown)
    assert b"\\x1b]0;PWNED-TITLE\\x07" in shown  # the STATUS line
    assert b"\\x1b]0;PWNED-OUTPUT\\x07" in shown  # the worker's output, above the bar
    assert b"\\x1b]8;;http://evil\\x1b\\PWNED-LINK" in shown  # the final error line
    assert b"Traceback" not in shown
