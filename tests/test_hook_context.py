"""HookContext (on LocalHost and RemoteHost) and the RecordingContext test double."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

import optio_host
import optio_host.context as context_module
import optio_host.errors
import optio_host.process
from optio_host.context import HookContext, HookContextProtocol, HostCommandError, RunResult
from optio_host.host.base import Host
from optio_host.testing import RecordingContext

pytestmark = pytest.mark.timeout(60)


def percents(ctx: RecordingContext) -> list[float]:
    return [p for p, m in ctx.progress if m is None and p is not None]


# ------------------------------------------------------------------ names and delegation


def test_reexports_are_the_same_objects() -> None:
    assert context_module.RunResult is optio_host.process.RunResult is optio_host.RunResult
    assert (
        context_module.HostCommandError is optio_host.errors.HostCommandError is optio_host.HostCommandError
    )
    assert optio_host.HookContext is HookContext
    assert optio_host.HookContextProtocol is HookContextProtocol


def test_attributes_are_read_from_the_wrapped_context(local_host: Host) -> None:
    ctx = RecordingContext("proc-1", params={"a": 1}, metadata={"m": "x"})
    ctx.custom = "extra"  # type: ignore[attr-defined]
    hook_ctx = HookContext(ctx, local_host)
    assert hook_ctx.process_id == "proc-1"
    assert hook_ctx.params == {"a": 1}
    assert hook_ctx.metadata == {"m": "x"}
    assert hook_ctx.custom == "extra"
    assert hook_ctx._child_counter is ctx._child_counter
    assert hook_ctx.ctx is ctx
    assert hook_ctx.host is local_host
    hook_ctx.report_progress(12, "twelve")
    hook_ctx.report_progress(None)
    assert ctx.progress == [(12, "twelve"), (None, None)]
    assert hook_ctx.should_continue() is True
    ctx.cancel()
    assert hook_ctx.should_continue() is False
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = hook_ctx.no_such_thing
    assert isinstance(hook_ctx, HookContextProtocol)


# ------------------------------------------------------------------ run_on_host


async def test_run_on_host(host: Host) -> None:
    hook_ctx = HookContext(RecordingContext(), host)
    assert await hook_ctx.run_on_host("echo out; echo err >&2") == "out\n"
    assert await hook_ctx.run_on_host("echo out; echo err >&2", capture_stderr=True) == "out\nerr\n"
    assert await hook_ctx.run_on_host("pwd") == host.workdir + "\n"
    assert await hook_ctx.run_on_host("pwd", cwd="/") == "/\n"
    result = await hook_ctx.run_on_host("echo o; echo e >&2; exit 4", check=False)
    assert result == RunResult("o\n", "e\n", 4)
    with pytest.raises(HostCommandError) as caught:
        await hook_ctx.run_on_host("echo nope >&2; exit 5")
    assert (caught.value.exit_code, caught.value.stderr, caught.value.command) == (
        5,
        "nope\n",
        "echo nope >&2; exit 5",
    )


# ------------------------------------------------------------------ path forms


async def test_relative_absolute_and_home_paths(host: Host) -> None:
    ctx = RecordingContext()
    hook_ctx = HookContext(ctx, host)
    await hook_ctx.copy_file(b"relative", "sub/dir/r.txt")
    assert await host.fetch_bytes_from_host(host.workdir + "/sub/dir/r.txt") == b"relative"
    absolute = host.taskdir + "/outside-workdir.txt"
    await hook_ctx.copy_file(b"absolute", absolute)
    assert await host.fetch_bytes_from_host(absolute) == b"absolute"
    assert await hook_ctx.read_text_from_host("sub/./dir//r.txt") == "relative"

    home = await host.resolve_host_home()
    name = f".optio-hook-test-{secrets.token_hex(6)}.txt"
    try:
        await hook_ctx.copy_file(b"in home", f"~/{name}")
        assert await host.fetch_bytes_from_host(f"{home}/{name}") == b"in home"
        assert await hook_ctx.read_from_host(f"~/{name}", silent=True) == b"in home"
    finally:
        await host.remove_file(f"{home}/{name}")
    # "~" alone is the home folder itself: reading it as a file fails on the host, not as a ValueError.
    with pytest.raises(OSError):
        await hook_ctx.read_from_host("~", silent=True)


@pytest.mark.parametrize(
    "bad", ["", "..", "../x", "a/../../x", "a/../b", "sub/..", ".", "~bob/x", "nul\0byte"]
)
async def test_refused_paths_raise_value_error_before_anything_happens(host: Host, bad: str) -> None:
    ctx = RecordingContext()
    hook_ctx = HookContext(ctx, host)
    with pytest.raises(ValueError, match="path"):
        await hook_ctx.copy_file(b"x", bad)
    with pytest.raises(ValueError, match="path"):
        await hook_ctx.read_from_host(bad)
    with pytest.raises(ValueError, match="path"):
        await hook_ctx.read_text_from_host(bad)
    with pytest.raises(ValueError, match="path"):
        await hook_ctx.download_file("http://127.0.0.1:9/x", bad)
    assert ctx.progress == []
    assert ctx.children == []
    assert ctx._child_counter.get("next", 0) == 0


# ------------------------------------------------------------------ copy_file


async def test_copy_file_progress_texts(host: Host) -> None:
    data = os.urandom(300_000)
    ctx = RecordingContext()
    hook_ctx = HookContext(ctx, host)

    await hook_ctx.copy_file(data, "out/data.bin")
    assert ctx.messages == ["Copying data.bin..."]
    assert ctx.progress[0] == (None, "Copying data.bin...")
    steps = percents(ctx)
    assert steps == sorted(steps)
    assert steps[-1] == 100.0
    assert await host.fetch_bytes_from_host(host.workdir + "/out/data.bin") == data

    ctx.progress.clear()
    await hook_ctx.copy_file(data, "out/data.bin", skip_if_unchanged=True)
    assert ctx.progress == [(None, "Verifying data.bin..."), (None, "Already up to date: data.bin")]

    ctx.progress.clear()
    changed = data[::-1]
    await hook_ctx.copy_file(changed, "out/data.bin", skip_if_unchanged=True)
    assert ctx.messages == ["Verifying data.bin...", "Copying data.bin..."]
    assert ctx.progress[:2] == [(None, "Verifying data.bin..."), (None, "Copying data.bin...")]
    assert percents(ctx)[-1] == 100.0
    assert await host.fetch_bytes_from_host(host.workdir + "/out/data.bin") == changed


async def test_copy_file_from_a_local_path_and_an_async_iterator(host: Host, tmp_path: Path) -> None:
    ctx = RecordingContext()
    hook_ctx = HookContext(ctx, host)
    local = tmp_path / "local.txt"
    local.write_bytes(b"from a local file")
    await hook_ctx.copy_file(str(local), "l.txt")
    await hook_ctx.copy_file(local, "l2.txt")

    async def stream() -> AsyncIterator[bytes]:
        yield b"from "
        yield b"a stream"

    await hook_ctx.copy_file(stream(), "s.txt")
    assert await hook_ctx.read_text_from_host("l.txt") == "from a local file"
    assert await hook_ctx.read_text_from_host("l2.txt") == "from a local file"
    assert await hook_ctx.read_text_from_host("s.txt") == "from a stream"
    assert ctx.messages == [
        "Copying l.txt...",
        "Copying l2.txt...",
        "Copying s.txt...",
        "Reading l.txt...",
        "Reading l2.txt...",
        "Reading s.txt...",
    ]


async def test_copy_file_empty_source_still_says_copying(host: Host) -> None:
    ctx = RecordingContext()
    await HookContext(ctx, host).copy_file(b"", "empty.txt", skip_if_unchanged=True)
    assert ctx.messages == ["Verifying empty.txt...", "Copying empty.txt..."]
    assert await host.file_size(host.workdir + "/empty.txt") == 0


async def test_copy_file_from_a_blob(host: Host) -> None:
    data = os.urandom(1_500_000)
    ctx = RecordingContext()
    blob = ctx.add_blob(data)
    reads: list[int] = []
    opened: list[ObjectId] = []
    original = ctx.load_blob

    @asynccontextmanager
    async def spying_load_blob(file_id: ObjectId) -> AsyncIterator[Any]:
        opened.append(file_id)
        async with original(file_id) as reader:
            real_read = reader.read

            async def read(size: int = -1) -> bytes:
                reads.append(size)
                return await real_read(size)

            reader.read = read  # type: ignore[method-assign]
            yield reader

    ctx.load_blob = spying_load_blob  # type: ignore[method-assign]
    hook_ctx = HookContext(ctx, host)

    await hook_ctx.copy_file(blob, "blob.bin")
    assert await host.fetch_bytes_from_host(host.workdir + "/blob.bin") == data
    assert ctx.messages == ["Copying blob.bin..."]
    assert opened == [blob]
    # Streamed in bounded chunks, never one read of everything.
    assert reads
    assert all(0 < size <= 1024 * 1024 for size in reads)

    ctx.progress.clear()
    await hook_ctx.copy_file(blob, "blob.bin", skip_if_unchanged=True)
    assert ctx.progress == [(None, "Verifying blob.bin..."), (None, "Already up to date: blob.bin")]

    ctx.progress.clear()
    other = ctx.add_blob(b"different contents")
    await hook_ctx.copy_file(other, "blob.bin", skip_if_unchanged=True)
    assert ctx.messages == ["Verifying blob.bin...", "Copying blob.bin..."]
    assert await hook_ctx.read_from_host("blob.bin", silent=True) == b"different contents"


async def test_copy_file_from_a_missing_blob_fails_and_writes_nothing(host: Host) -> None:
    ctx = RecordingContext()
    with pytest.raises(FileNotFoundError, match="blob"):
        await HookContext(ctx, host).copy_file(ObjectId(), "never.bin")
    assert await host.file_size(host.workdir + "/never.bin") is None


# ------------------------------------------------------------------ reading


async def test_read_from_host_messages(host: Host) -> None:
    await host.write_text("notes/read me.txt", "héllo ✓")
    ctx = RecordingContext()
    hook_ctx = HookContext(ctx, host)
    assert await hook_ctx.read_from_host("notes/read me.txt") == "héllo ✓".encode()
    assert await hook_ctx.read_text_from_host(host.workdir + "/notes/read me.txt") == "héllo ✓"
    assert await hook_ctx.read_text_from_host("notes/read me.txt", silent=True) == "héllo ✓"
    assert ctx.messages == ["Reading read me.txt...", "Reading read me.txt..."]
    with pytest.raises(FileNotFoundError):
        await hook_ctx.read_from_host("missing.txt", silent=True)


# ------------------------------------------------------------------ download_file


class ChildRecorder(RecordingContext):
    """Records the child task instead of running it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: list[Any] = []

    async def run_child_task(self, task: Any, **kwargs: Any) -> Any:
        self.recorded.append(task)
        self._child_counter["next"] = self._child_counter.get("next", 0) + 1
        return None


async def test_download_file_child_id_name_and_arguments(host: Host) -> None:
    ctx = ChildRecorder("parent.task")
    hook_ctx = HookContext(ctx, host)
    await hook_ctx.download_file("https://example.invalid/a.tar.gz", "dl/a.tar.gz")
    ctx._child_counter["next"] = 7
    await hook_ctx.download_file(
        "https://example.invalid/b", "/abs/b.bin", description="the b file", cleanup_on_fail=False
    )
    first, second = ctx.recorded
    assert (first.process_id, first.name) == ("parent.task.download-0", "download a.tar.gz")
    assert (second.process_id, second.name) == ("parent.task.download-7", "download b.bin")
    assert second.description == "the b file"
    assert first.cancellable is True
    assert first.supports_resume is False


async def test_download_file_passes_the_resolved_target_and_options(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_create(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return "the task"

    monkeypatch.setattr(context_module, "create_download_task", fake_create)
    ctx = ChildRecorder()
    hook_ctx = HookContext(ctx, host)
    digest = "ab" * 32
    await hook_ctx.download_file("https://example.invalid/c.txt", "x/c.txt", expected_sha256=digest)
    await hook_ctx.download_file("https://example.invalid/d.txt", "~/d.txt", cleanup_on_fail=False)
    home = await host.resolve_host_home()
    assert calls == [
        (
            ("test.download-0", "download c.txt"),
            {
                "url": "https://example.invalid/c.txt",
                "target": host.workdir + "/x/c.txt",
                "host": host,
                "description": None,
                "cleanup_on_fail": True,
                "expected_sha256": digest,
            },
        ),
        (
            ("test.download-1", "download d.txt"),
            {
                "url": "https://example.invalid/d.txt",
                "target": home + "/d.txt",
                "host": host,
                "description": None,
                "cleanup_on_fail": False,
                "expected_sha256": None,
            },
        ),
    ]
    assert ctx.recorded == ["the task", "the task"]


@asynccontextmanager
async def http_server(body: bytes) -> AsyncIterator[str]:
    """A one-route HTTP/1.0 server on loopback serving ``body``; yields its base URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if request.split(b" ")[1] == b"/file.bin":
            head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            writer.write(head + body)
        else:
            writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_download_file_for_real(host: Host) -> None:
    # The test sshd runs on this machine, so the host (local or remote) reaches the loopback server.
    data = os.urandom(200_000)
    ctx = RecordingContext("real")
    hook_ctx = HookContext(ctx, host)
    async with http_server(data) as base:
        await hook_ctx.download_file(
            f"{base}/file.bin", "downloads/file.bin", expected_sha256=hashlib.sha256(data).hexdigest()
        )
        with pytest.raises(optio_host.DownloadFailed):
            await hook_ctx.download_file(f"{base}/missing", "downloads/missing.bin")
    assert await host.fetch_bytes_from_host(host.workdir + "/downloads/file.bin") == data
    assert [task.process_id for task in ctx.children] == ["real.download-0", "real.download-1"]
    assert ctx._child_counter["next"] == 2
    child = ctx.child_contexts[0]
    assert child.process_id == "real.download-0"
    assert child.progress[0] == (None, "Downloading file.bin")
    assert ctx.progress == []  # the child's progress is its own


# ------------------------------------------------------------------ RecordingContext


async def test_recording_context_basics() -> None:
    heard: list[tuple[float | None, str | None]] = []
    ctx = RecordingContext(on_progress=lambda p, m: heard.append((p, m)))
    assert (ctx.process_id, ctx.params, ctx.metadata) == ("test", {}, {})
    ctx.report_progress(5)
    ctx.report_progress(None, "msg", level="warning")
    assert ctx.progress == heard == [(5, None), (None, "msg")]
    assert ctx.messages == ["msg"]
    assert ctx.should_continue()
    assert not ctx.cancellation_flag.is_set()
    ctx.cancel()
    assert not ctx.should_continue()
    await asyncio.wait_for(ctx.cancellation_flag.wait(), 1)


async def test_recording_context_blobs() -> None:
    ctx = RecordingContext()
    blob = ctx.add_blob(b"0123456789")
    assert isinstance(blob, ObjectId)
    async with ctx.load_blob(blob) as reader:
        assert await reader.read(4) == b"0123"
        assert await reader.read() == b"456789"
        assert await reader.read(4) == b""
    with pytest.raises(FileNotFoundError):
        async with ctx.load_blob(ObjectId()):
            pass


async def test_recording_context_children() -> None:
    from optio_core.models import TaskInstance

    seen: list[tuple[str, dict[str, Any], int]] = []

    async def ok(child: RecordingContext) -> None:
        seen.append((child.process_id, child.params, parent._child_counter["next"]))
        child.report_progress(50, "half")

    async def broken(child: RecordingContext) -> None:
        raise RuntimeError("child broke")

    parent = RecordingContext("p")
    outcome = await parent.run_child_task(
        TaskInstance(execute=ok, process_id="p.c0", name="c0", params={"k": 1})
    )
    assert outcome.state == "done"
    # The counter is advanced before the child runs, as optio-core does.
    assert seen == [("p.c0", {"k": 1}, 1)]
    assert parent.child_contexts[0].progress == [(50, "half")]
    with pytest.raises(RuntimeError, match="child broke"):
        await parent.run_child_task(TaskInstance(execute=broken, process_id="p.c1", name="c1"))
    survived = await parent.run_child_task(
        TaskInstance(execute=broken, process_id="p.c2", name="c2"), survive_failure=True
    )
    assert survived.state == "failed"
    assert [task.process_id for task in parent.children] == ["p.c0", "p.c1", "p.c2"]
    assert parent._child_counter == {"next": 3}
    # Cancellation is shared with children.
    parent.cancel()
    assert not parent.child_contexts[0].should_continue()
