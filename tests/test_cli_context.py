"""The CLI's ProcessContext and the stand-in it shares with RecordingContext.

The CLI's context reports to the display and keeps nothing per call (a long session must
not grow); it offers ``run_child_task`` and ``load_blob`` like RecordingContext does.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from bson import ObjectId
from optio_core.models import TaskInstance

from optio_host._process_context import StandInContext
from optio_host.cli._session import CLI_PROCESS_ID, _CliContext
from optio_host.context import HookContext
from optio_host.host.interface import Host
from optio_host.testing import RecordingContext

pytestmark = pytest.mark.timeout(60)

Heard = list[tuple[float | None, str | None]]
CALLS = 100_000


def _listener() -> tuple[Heard, Callable[[float | None, str | None], None]]:
    heard: Heard = []
    return heard, lambda percent, message: heard.append((percent, message))


def _growth_of_reporting(ctx: StandInContext) -> int:
    """Bytes still allocated after CALLS progress reports, each with a fresh message."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for index in range(CALLS):
            ctx.report_progress(index % 101, f"step {index} of a long session")
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


def test_the_cli_context_keeps_nothing_per_progress_call() -> None:
    count = [0]

    def show(percent: float | None, message: str | None) -> None:
        count[0] += 1

    growth = _growth_of_reporting(_CliContext(show))
    assert count[0] == CALLS  # every report reached the display
    assert growth < 64 * 1024, f"{CALLS} reports left {growth} bytes behind"


def test_the_memory_measure_sees_a_context_that_records() -> None:
    # The same measure on RecordingContext, which keeps every call: the test above could fail.
    recording = RecordingContext()
    growth = _growth_of_reporting(recording)
    assert len(recording.progress) == CALLS
    assert growth > 4 * 1024 * 1024


def test_the_cli_context_reports_to_the_display_with_plain_deliverable_reasons() -> None:
    heard, show = _listener()
    ctx = _CliContext(show)
    assert (ctx.process_id, ctx.params, ctx.metadata) == (CLI_PROCESS_ID, {}, {})
    ctx.report_progress(40, "STATUS text", level="warning")
    ctx.report_progress(None, "Deliverable out.txt: fetch failed: PermissionError(13, 'Permission denied')")
    assert heard == [(40, "STATUS text"), (None, "Deliverable out.txt: fetch failed: Permission denied")]
    assert ctx.should_continue()
    ctx.cancel()
    assert not ctx.should_continue() and ctx.cancellation_flag.is_set()


async def test_the_cli_context_runs_a_child_inline_showing_its_messages_only() -> None:
    heard, show = _listener()
    ctx = _CliContext(show)
    seen: list[tuple[str, dict[str, Any], int]] = []

    async def child(child_ctx: Any) -> None:
        seen.append((child_ctx.process_id, child_ctx.params, ctx._child_counter["next"]))
        child_ctx.report_progress(None, "Downloading a.bin")
        child_ctx.report_progress(70, None)  # the child's own percent: not the session's bar
        child_ctx.report_progress(100, "fetched")

    outcome = await ctx.run_child_task(
        TaskInstance(execute=child, process_id=f"{CLI_PROCESS_ID}.download-0", name="d", params={"k": 1})
    )
    assert outcome.state == "done"
    assert seen == [(f"{CLI_PROCESS_ID}.download-0", {"k": 1}, 1)]  # counter advanced first
    assert heard == [(None, "Downloading a.bin"), (None, "fetched")]
    assert not hasattr(ctx, "children") and not hasattr(ctx, "progress")  # nothing recorded


async def test_the_cli_context_child_failures_and_cancellation() -> None:
    ctx = _CliContext(lambda percent, message: None)

    async def broken(child_ctx: Any) -> None:
        raise RuntimeError("child broke")

    async def cancels(child_ctx: Any) -> None:
        ctx.cancel()  # the parent's cancellation is the child's
        assert not child_ctx.should_continue()

    with pytest.raises(RuntimeError, match="child broke"):
        await ctx.run_child_task(TaskInstance(execute=broken, process_id="c0", name="c0"))
    survived = await ctx.run_child_task(
        TaskInstance(execute=broken, process_id="c1", name="c1"), survive_failure=True
    )
    assert (survived.state, str(survived.original_exception)) == ("failed", "child broke")
    cancelled = await ctx.run_child_task(TaskInstance(execute=cancels, process_id="c2", name="c2"))
    assert cancelled.state == "cancelled"
    assert ctx._child_counter == {"next": 3}


async def test_the_cli_context_has_no_blob_store_and_says_what_to_do() -> None:
    ctx = _CliContext(lambda percent, message: None)
    blob = ObjectId()
    with pytest.raises(FileNotFoundError) as caught:
        async with ctx.load_blob(blob):
            pass
    message = str(caught.value)
    assert str(blob) in message
    assert "no blob store" in message and "pass the file's path instead" in message


async def test_copying_a_blob_under_the_cli_fails_before_anything_is_written(local_host: Host) -> None:
    hook_ctx = HookContext(_CliContext(lambda percent, message: None), local_host)
    with pytest.raises(FileNotFoundError, match="no blob store"):
        await hook_ctx.copy_file(ObjectId(), "copied.bin")
    assert await local_host.file_size(local_host.workdir + "/copied.bin") is None


async def test_recording_context_texts_are_unchanged_by_the_shared_base() -> None:
    class Sub(RecordingContext):
        pass

    blob = ObjectId()
    for ctx in (RecordingContext(), Sub("sub")):
        with pytest.raises(FileNotFoundError) as caught:
            async with ctx.load_blob(blob):
                pass
        assert str(caught.value) == f"no blob {blob} in this RecordingContext"
    assert repr(Sub("sub")) == "RecordingContext('sub')"

    async def child(child_ctx: Any) -> None:
        child_ctx.report_progress(5, "child")

    parent = RecordingContext("p")
    await parent.run_child_task(TaskInstance(execute=child, process_id="p.c", name="c"))
    [child_ctx] = parent.child_contexts
    assert type(child_ctx) is RecordingContext and child_ctx.progress == [(5, "child")]


def test_the_cli_does_not_import_the_testing_kit() -> None:
    code = (
        "import sys, optio_host.cli._session\n"
        "print(sorted(m for m in sys.modules if m.startswith(('optio_host.testing', 'pytest', '_pytest'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
