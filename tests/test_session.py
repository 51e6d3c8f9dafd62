"""The log-protocol session driver, on LocalHost and RemoteHost, with real worker processes.

Workers are small ``sh``/``python3`` scripts written to the workdir through the
host API and run from the session's ``body``; they append to ``optio.log``
exactly as a real worker would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import optio_host
import optio_host.errors
import optio_host.protocol as protocol
from optio_host.context import HookContext
from optio_host.host.base import Host
from optio_host.protocol import session as session_module
from optio_host.protocol.session import (
    DELIVERABLE_QUEUE_BOUND,
    SessionFailed,
    _SessionFailed,
    fetch_deliverable_text,
    run_log_protocol_session,
)
from optio_host.testing import RecordingContext

pytestmark = pytest.mark.timeout(60)

Body = Callable[[Host, HookContext], Awaitable[object]]


@pytest.fixture(autouse=True)
async def _no_leaked_session_tasks() -> AsyncIterator[None]:
    yield
    assert session_tasks() == []


def session_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("optio-session-")]


def _script_body(interpreter: str, file_name: str, script: str) -> Body:
    """A body that writes ``script`` into the workdir, runs it with ``interpreter`` and waits."""

    async def body(host: Host, hook_ctx: HookContext) -> None:
        await host.write_text(file_name, script)
        result = await host.run([interpreter, file_name])
        if result.exit_code != 0:
            raise RuntimeError(f"worker failed: {result.stderr}")

    return body


def sh_body(script: str) -> Body:
    """A body that runs ``script`` with /bin/sh in the workdir and waits for it."""
    return _script_body("/bin/sh", "worker.sh", script)


def py_body(script: str) -> Body:
    """A body that runs a Python ``script`` with the host's python3 and waits for it."""
    return _script_body("/usr/bin/python3", "worker.py", script)


class Collected:
    """An ``on_deliverable`` that records what it receives."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    async def __call__(self, hook_ctx: HookContext, relative: str, text: str) -> None:
        assert isinstance(hook_ctx, HookContext)
        self.items.append((relative, text))


def skip_messages(ctx: RecordingContext) -> list[str]:
    return [message for message in ctx.messages if "skipping" in message]


# ------------------------------------------------------------------ names


def test_names_are_the_same_objects() -> None:
    assert _SessionFailed is SessionFailed is optio_host.errors.SessionFailed is optio_host.SessionFailed
    assert DELIVERABLE_QUEUE_BOUND == 64
    for name in session_module.__all__:
        if not name.startswith("_"):
            assert getattr(protocol, name) is getattr(session_module, name)


async def test_fetch_deliverable_text_calls_the_host_with_one_positional_argument() -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    class FakeHost:
        async def fetch_bytes_from_host(self, *args: object, **kwargs: object) -> bytes:
            calls.append((args, kwargs))
            return "héllo ✓".encode()

    assert await fetch_deliverable_text(FakeHost(), "/w/deliverables/a.txt") == "héllo ✓"  # type: ignore[arg-type]
    assert calls == [(("/w/deliverables/a.txt",), {})]


# ------------------------------------------------------------------ outcomes


async def test_done_with_summary(host: Host) -> None:
    ctx = RecordingContext()
    script = """
echo "STATUS: starting" >> optio.log
echo "STATUS: 40% half way" >> optio.log
echo "DONE: all finished" >> optio.log
"""
    await run_log_protocol_session(host, ctx, body=sh_body(script))
    assert ctx.progress == [(None, "starting"), (40, "half way"), (None, "all finished")]
    # Step 1 left the layout in place.
    assert await host.file_size(host.workdir + "/deliverables") is not None
    assert (await host.fetch_bytes_from_host(host.workdir + "/optio.log")).endswith(b"DONE: all finished\n")


async def test_done_without_summary_reports_nothing_more(host: Host) -> None:
    ctx = RecordingContext()
    await run_log_protocol_session(
        host, ctx, body=sh_body("echo 'STATUS: 1% a' >> optio.log\necho DONE >> optio.log\n")
    )
    assert ctx.progress == [(1, "a")]


async def test_prepare_replaces_an_old_log(host: Host) -> None:
    # A log left by an earlier run must not end the new session at once.
    await host.write_text("optio.log", "DONE: stale\n")
    ctx = RecordingContext()
    await run_log_protocol_session(host, ctx, body=sh_body("echo 'DONE: fresh' >> optio.log\n"))
    assert ctx.messages == ["fresh"]


async def test_body_writes_done_and_returns_at_once_is_success(host: Host) -> None:
    # The body returns the moment DONE is in the file, often before the tail read it.
    for attempt in range(5):
        ctx = RecordingContext()

        async def body(host: Host, hook_ctx: HookContext, attempt: int = attempt) -> None:
            await host.run(
                ["/bin/sh", "-c", f"echo 'STATUS: run {attempt}' >> optio.log; echo DONE >> optio.log"]
            )

        await run_log_protocol_session(host, ctx, body=body)
        assert ctx.progress == [(None, f"run {attempt}")]


async def test_done_ends_the_session_while_the_body_still_runs(host: Host) -> None:
    ctx = RecordingContext()
    started = time.monotonic()
    await run_log_protocol_session(
        host, ctx, body=sh_body("echo 'DONE: early' >> optio.log\nexec sleep 30\n")
    )
    assert time.monotonic() - started < 15
    assert ctx.progress == [(None, "early")]


async def test_done_without_trailing_newline_counts_once_the_body_returned(host: Host) -> None:
    ctx = RecordingContext()
    await run_log_protocol_session(
        host, ctx, body=sh_body("printf 'STATUS: x\\nDONE: no newline' >> optio.log\n")
    )
    assert ctx.progress == [(None, "x"), (None, "no newline")]


@pytest.mark.parametrize("then", ["exit", "keep running"])
async def test_error_line_fails_the_session(host: Host, then: str) -> None:
    ctx = RecordingContext()
    script = "echo 'STATUS: working' >> optio.log\necho 'ERROR: disk full' >> optio.log\n"
    if then == "keep running":
        script += "exec sleep 30\n"
    started = time.monotonic()
    with pytest.raises(SessionFailed, match=r"^disk full$"):
        await run_log_protocol_session(host, ctx, body=sh_body(script))
    assert time.monotonic() - started < 15
    assert ctx.progress[0] == (None, "working")


async def test_bare_error_has_a_default_message(host: Host) -> None:
    with pytest.raises(_SessionFailed, match=r"^agent reported ERROR$"):
        await run_log_protocol_session(host, RecordingContext(), body=sh_body("echo ERROR >> optio.log\n"))


async def test_body_returning_without_done_fails(host: Host) -> None:
    ctx = RecordingContext()
    script = "echo 'STATUS: 10% only this' >> optio.log\n"
    with pytest.raises(SessionFailed, match="body returned before DONE was observed"):
        await run_log_protocol_session(host, ctx, body=sh_body(script))
    assert ctx.progress == [(10, "only this")]


async def test_body_exception_propagates(host: Host) -> None:
    class WorkerCrashed(Exception):
        pass

    async def body(host: Host, hook_ctx: HookContext) -> None:
        await host.run(["/bin/sh", "-c", "echo 'STATUS: about to crash' >> optio.log"])
        raise WorkerCrashed("boom")

    with pytest.raises(WorkerCrashed, match="boom"):
        await run_log_protocol_session(host, RecordingContext(), body=body)


async def test_cancellation_through_should_continue_returns_quietly(host: Host) -> None:
    calls: list[str] = []

    def on_progress(percent: float | None, message: str | None) -> None:
        if message == "waiting":
            ctx.cancel()

    ctx = RecordingContext(on_progress=on_progress)

    async def after(hook_ctx: HookContext) -> None:
        calls.append("after")

    started = time.monotonic()
    await run_log_protocol_session(
        host, ctx, body=sh_body("echo 'STATUS: waiting' >> optio.log\nexec sleep 30\n"), after_execute=after
    )
    assert time.monotonic() - started < 15
    assert ctx.progress == [(None, "waiting")]
    assert calls == ["after"]


async def test_already_cancelled_context_does_not_run_the_body(host: Host) -> None:
    ctx = RecordingContext()
    ctx.cancel()
    ran: list[bool] = []

    async def body(host: Host, hook_ctx: HookContext) -> None:
        ran.append(True)

    await run_log_protocol_session(host, ctx, body=body)
    assert ran == []


async def test_asyncio_cancellation_leaves_no_tasks(host: Host) -> None:
    started = asyncio.Event()

    def on_progress(percent: float | None, message: str | None) -> None:
        if message == "running":
            started.set()

    ctx = RecordingContext(on_progress=on_progress)
    after_calls: list[str] = []

    async def after(hook_ctx: HookContext) -> None:
        after_calls.append("after")

    session = asyncio.create_task(
        run_log_protocol_session(
            host,
            ctx,
            body=sh_body("echo 'STATUS: running' >> optio.log\nexec sleep 30\n"),
            after_execute=after,
        )
    )
    await asyncio.wait_for(started.wait(), 20)
    assert len(session_tasks()) == 4
    session.cancel()
    with pytest.raises(asyncio.CancelledError):
        await session
    assert session_tasks() == []
    assert after_calls == ["after"]


async def test_a_tail_that_ends_without_done_fails(host: Host) -> None:
    started = asyncio.Event()

    def on_progress(percent: float | None, message: str | None) -> None:
        if message == "started":
            started.set()

    async def body(host: Host, hook_ctx: HookContext) -> None:
        await host.run(["/bin/sh", "-c", "echo 'STATUS: started' >> optio.log"])
        await started.wait()
        await host.disconnect()  # stops every tail of this host
        await asyncio.Event().wait()

    with pytest.raises(SessionFailed, match="tail"):
        await run_log_protocol_session(host, RecordingContext(on_progress=on_progress), body=body)


# ------------------------------------------------------------------ lines


async def test_unknown_lines_are_reported_and_blank_ones_ignored(host: Host) -> None:
    ctx = RecordingContext()
    script = """
printf 'plain output\\n\\n   \\n  indented  \\nSTATUS: 3%% s\\nDONE x\\nDONE\\n' >> optio.log
"""
    await run_log_protocol_session(host, ctx, body=sh_body(script))
    assert ctx.progress == [(None, "plain output"), (None, "  indented"), (3, "s"), (None, "DONE x")]


# ------------------------------------------------------------------ deliverables


async def test_deliverables_are_fetched_in_order(host: Host) -> None:
    ctx = RecordingContext()
    collected = Collected()
    script = """
mkdir -p deliverables/sub
printf 'first\\n' > deliverables/a.txt
echo "DELIVERABLE: deliverables/a.txt" >> optio.log
printf 'ünïcødé ✓' > deliverables/sub/b.md
echo "DELIVERABLE:   $PWD/deliverables/sub/b.md  " >> optio.log
printf '' > deliverables/empty.txt
echo "DELIVERABLE: ./deliverables/x/../empty.txt" >> optio.log
echo "DONE: 3 files" >> optio.log
"""
    await run_log_protocol_session(host, ctx, body=sh_body(script), on_deliverable=collected)
    assert collected.items == [("a.txt", "first\n"), ("sub/b.md", "ünïcødé ✓"), ("empty.txt", "")]
    assert ctx.messages == [
        "Deliverable: a.txt",
        "Deliverable: sub/b.md",
        "Deliverable: empty.txt",
        "3 files",
    ]


async def test_bad_deliverables_are_skipped_and_the_session_goes_on(host: Host) -> None:
    ctx = RecordingContext()
    collected = Collected()
    script = """
printf secret > secret.txt
printf ok > deliverables/ok.txt
ln -s ../secret.txt deliverables/inside-link.txt
ln -s /etc/hostname deliverables/outside-link.txt
mkdir deliverables/dir
echo "DELIVERABLE: ../escape.txt" >> optio.log
echo "DELIVERABLE: /etc/hostname" >> optio.log
echo "DELIVERABLE: secret.txt" >> optio.log
echo "DELIVERABLE: deliverables" >> optio.log
echo "DELIVERABLE: deliverables/inside-link.txt" >> optio.log
echo "DELIVERABLE: deliverables/outside-link.txt" >> optio.log
echo "DELIVERABLE: deliverables/missing.txt" >> optio.log
echo "DELIVERABLE:" >> optio.log
echo "DELIVERABLE: deliverables/ok.txt" >> optio.log
echo "DONE" >> optio.log
"""
    await run_log_protocol_session(host, ctx, body=sh_body(script), on_deliverable=collected)
    assert collected.items == [("ok.txt", "ok")]
    messages = ctx.messages
    # The published texts, exactly (SPEC: what a consumer observes).
    for text in [
        "invalid deliverable path '../escape.txt', skipping",
        "invalid deliverable path '/etc/hostname', skipping",
        "deliverable 'secret.txt': not under deliverables/, skipping (malfunction)",
        "deliverable 'deliverables': not under deliverables/, skipping (malfunction)",
        "invalid deliverable path '', skipping",
        "Deliverable: inside-link.txt",
        "Deliverable: outside-link.txt",
        "Deliverable: missing.txt",
        "Deliverable missing.txt: not found",
        "Deliverable: ok.txt",
    ]:
        assert text in messages
    for name in ["inside-link.txt", "outside-link.txt"]:
        [refusal] = [m for m in messages if m.startswith(f"Deliverable {name}: fetch failed: ")]
        assert refusal.endswith(", skipping")
        assert "outside" in refusal and "PermissionError" in refusal
    # Announced when the line is read, before the host is asked: "not found" comes after.
    assert messages.index("Deliverable: missing.txt") < messages.index("Deliverable missing.txt: not found")


async def test_fetch_and_callback_problems_are_reported_not_fatal(host: Host) -> None:
    ctx = RecordingContext()
    seen: list[str] = []

    async def on_deliverable(hook_ctx: HookContext, relative: str, text: str) -> None:
        seen.append(relative)
        if relative == "raises.txt":
            raise RuntimeError("callback broke")

    script = """
printf '\\377\\376 not utf-8' > deliverables/binary.dat
printf 'fine' > deliverables/raises.txt
printf 'fine' > deliverables/last.txt
mkdir deliverables/folder
echo "DELIVERABLE: deliverables/binary.dat" >> optio.log
echo "DELIVERABLE: deliverables/raises.txt" >> optio.log
echo "DELIVERABLE: deliverables/folder" >> optio.log
echo "DELIVERABLE: deliverables/last.txt" >> optio.log
echo "DONE" >> optio.log
"""
    await run_log_protocol_session(host, ctx, body=sh_body(script), on_deliverable=on_deliverable)
    assert seen == ["raises.txt", "last.txt"]
    messages = ctx.messages
    assert "Deliverable binary.dat: not valid UTF-8, skipping callback" in messages
    assert "on_deliverable callback raised: RuntimeError('callback broke')" in messages
    [folder] = [m for m in messages if m.startswith("Deliverable folder: fetch failed: ")]
    assert folder.endswith(", skipping") and "IsADirectoryError" in folder


async def test_without_a_callback_deliverables_are_reported_only(host: Host) -> None:
    ctx = RecordingContext()
    script = (
        "printf x > deliverables/a.txt\n"
        "echo 'DELIVERABLE: deliverables/a.txt' >> optio.log\n"
        "echo DONE >> optio.log\n"
    )
    await run_log_protocol_session(host, ctx, body=sh_body(script))
    assert ctx.messages == ["Deliverable: a.txt"]


# ------------------------------------------------------------------ volume and back-pressure

VOLUME_WORKER = """
import os
with open("optio.log", "ab", buffering=0) as log:
    for i in range(1000):
        line = f"STATUS: {i % 101}% line {i} " + "x" * (i % 7) + "\\n"
        if i % 10 == 0:
            name = f"d{i // 10:03d}.txt"
            with open(os.path.join("deliverables", name), "w") as out:
                out.write(f"content {i // 10}")
            line = f"DELIVERABLE: deliverables/{name}\\n" + line
        data = line.encode()
        if i % 3 == 0:
            # Split a line across writes, even mid-keyword.
            cut = (i % 11) + 1
            log.write(data[:cut])
            log.write(data[cut:])
        else:
            log.write(data)
    log.write(b"DONE: volume\\n")
"""


async def test_a_thousand_status_lines_and_a_hundred_deliverables(host: Host) -> None:
    ctx = RecordingContext()
    collected = Collected()
    await run_log_protocol_session(host, ctx, body=py_body(VOLUME_WORKER), on_deliverable=collected)
    statuses = [(p, m) for p, m in ctx.progress if p is not None]
    expected_statuses = [(i % 101, (f"line {i} " + "x" * (i % 7)).rstrip()) for i in range(1000)]
    assert len(statuses) == 1000
    assert statuses == expected_statuses
    assert collected.items == [(f"d{n:03d}.txt", f"content {n}") for n in range(100)]
    reported = [m for m in ctx.messages if m.startswith("Deliverable: ")]
    assert reported == [f"Deliverable: d{n:03d}.txt" for n in range(100)]
    assert ctx.messages[-1] == "volume"
    assert len(ctx.progress) == 1000 + 100 + 1


async def test_slow_callback_applies_back_pressure_without_losing_anything(host: Host) -> None:
    total = 100
    release = asyncio.Event()
    stalled = asyncio.Event()
    blocked_at = 1 + DELIVERABLE_QUEUE_BOUND + 1  # one being handled, a full queue, one waiting to enter

    def on_progress(percent: float | None, message: str | None) -> None:
        reported = sum(m.startswith("Deliverable: ") for m in ctx.messages)
        if message is not None and message.startswith("Deliverable: ") and reported >= blocked_at:
            stalled.set()

    ctx = RecordingContext(on_progress=on_progress)
    collected = Collected()

    async def slow(hook_ctx: HookContext, relative: str, text: str) -> None:
        await release.wait()
        await collected(hook_ctx, relative, text)

    script = f"""
i=0
while [ $i -lt {total} ]; do
  printf '%s' "$i" > deliverables/f$i.txt
  echo "DELIVERABLE: deliverables/f$i.txt" >> optio.log
  i=$((i + 1))
done
echo "DONE" >> optio.log
"""
    session = asyncio.create_task(
        run_log_protocol_session(host, ctx, body=sh_body(script), on_deliverable=slow)
    )
    await asyncio.wait_for(stalled.wait(), 30)
    # The tail must now be paused: give it time to (wrongly) read on, then check it did not.
    await asyncio.sleep(0.5)
    assert sum(m.startswith("Deliverable: ") for m in ctx.messages) == blocked_at
    assert not session.done()
    release.set()
    await asyncio.wait_for(session, 30)
    assert collected.items == [(f"f{n}.txt", str(n)) for n in range(total)]


# ------------------------------------------------------------------ hooks


async def test_hooks_run_around_the_body_with_a_hook_context(host: Host) -> None:
    order: list[str] = []

    async def before(hook_ctx: HookContext) -> None:
        assert hook_ctx.host is host
        assert hook_ctx.process_id == "hooks"
        order.append("before")

    async def body(host: Host, hook_ctx: HookContext) -> None:
        order.append("body")
        await host.run(["/bin/sh", "-c", "echo DONE >> optio.log"])

    async def after(hook_ctx: HookContext) -> None:
        order.append("after")

    await run_log_protocol_session(
        host, RecordingContext("hooks"), body=body, before_execute=before, after_execute=after
    )
    assert order == ["before", "body", "after"]


async def test_before_execute_failing_still_runs_after_execute(host: Host) -> None:
    order: list[str] = []

    async def before(hook_ctx: HookContext) -> None:
        raise ValueError("bad setup")

    async def body(host: Host, hook_ctx: HookContext) -> None:
        order.append("body")

    async def after(hook_ctx: HookContext) -> None:
        order.append("after")

    with pytest.raises(ValueError, match="bad setup"):
        await run_log_protocol_session(
            host, RecordingContext(), body=body, before_execute=before, after_execute=after
        )
    assert order == ["after"]


async def test_after_execute_failure_is_raised_after_success(host: Host) -> None:
    async def after(hook_ctx: HookContext) -> None:
        raise OSError("cleanup failed")

    with pytest.raises(OSError, match="cleanup failed"):
        await run_log_protocol_session(
            host, RecordingContext(), body=sh_body("echo DONE >> optio.log\n"), after_execute=after
        )


async def test_after_execute_failure_after_a_failure_is_reported_and_the_first_error_kept(host: Host) -> None:
    ctx = RecordingContext()

    async def after(hook_ctx: HookContext) -> None:
        raise OSError("cleanup failed")

    with pytest.raises(SessionFailed, match="first problem"):
        await run_log_protocol_session(
            host, ctx, body=sh_body("echo 'ERROR: first problem' >> optio.log\n"), after_execute=after
        )
    assert ctx.messages[-1] == "after_execute callback raised: OSError('cleanup failed')"
