"""Deliverables are files: any bytes, any size, and the bytes handed over are those of the file checked.

Every test runs on LocalHost and RemoteHost with real worker processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from optio_host.context import HookContext
from optio_host.host.base import Host
from optio_host.protocol import Deliverable, run_log_protocol_session
from optio_host.testing import RecordingContext

pytestmark = pytest.mark.timeout(90)

Body = Callable[[Host, HookContext], Awaitable[object]]
BINARY = bytes(range(256)) * 4096 + b"\xff\xfe\x00 not utf-8 \xc3\x28"


def sh(script: str) -> Body:
    async def body(host: Host, hook_ctx: HookContext) -> None:
        await host.write_text("worker.sh", script)
        result = await host.run(["/bin/sh", "worker.sh"])
        assert result.exit_code == 0, result.stderr

    return body


def deliver(name: str, data: bytes) -> Body:
    """A body that puts ``data`` at ``deliverables/name``, announces it and writes DONE."""

    async def body(host: Host, hook_ctx: HookContext) -> None:
        await host.put_file_to_host(data, f"{host.workdir}/deliverables/{name}")
        await host.run(f"echo 'DELIVERABLE: deliverables/{name}' >> optio.log; echo DONE >> optio.log")

    return body


async def test_binary_deliverable_through_save_chunks_and_read_bytes(host: Host, tmp_path: Path) -> None:
    seen: list[tuple[str, int, str, bytes, bytes]] = []

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        assert isinstance(hook_ctx, HookContext)
        digest = await deliverable.save(tmp_path / "out" / deliverable.relative_path)
        streamed = b"".join([chunk async for chunk in deliverable.chunks()])  # opens and checks again
        whole = await deliverable.read_bytes()
        seen.append((deliverable.relative_path, deliverable.size, digest, streamed, whole))

    ctx = RecordingContext()
    await run_log_protocol_session(
        host, ctx, body=deliver("sub/blob.bin", BINARY), on_deliverable_file=on_file
    )
    assert seen == [("sub/blob.bin", len(BINARY), hashlib.sha256(BINARY).hexdigest(), BINARY, BINARY)]
    assert (tmp_path / "out" / "sub" / "blob.bin").read_bytes() == BINARY
    assert not [name for name in os.listdir(tmp_path / "out" / "sub") if name != "blob.bin"]  # no temp left
    assert ctx.messages == ["Deliverable: sub/blob.bin"]


async def test_an_empty_deliverable_and_an_unread_one(host: Host) -> None:
    sizes: list[int] = []

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        sizes.append(deliverable.size)  # not read at all: the session releases it

    await run_log_protocol_session(
        host, RecordingContext(), body=deliver("empty", b""), on_deliverable_file=on_file
    )
    await run_log_protocol_session(
        host, RecordingContext(), body=deliver("x", b"x"), on_deliverable_file=on_file
    )
    assert sizes == [0, 1]


async def test_both_callbacks_is_a_value_error(host: Host) -> None:
    async def text(hook_ctx: HookContext, relative: str, content: str) -> None: ...

    async def files(hook_ctx: HookContext, deliverable: Deliverable) -> None: ...

    with pytest.raises(ValueError, match="not both"):
        await run_log_protocol_session(
            host,
            RecordingContext(),
            body=sh("echo DONE >> optio.log"),
            on_deliverable=text,
            on_deliverable_file=files,
        )


async def test_fifo_and_devices_are_refused_without_blocking(host: Host, tmp_path: Path) -> None:
    handed: list[str] = []
    skipped: list[tuple[str, str]] = []

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        handed.append(deliverable.relative_path)
        await deliverable.read_bytes()

    script = """
mkfifo deliverables/pipe
mkfifo ../outside-pipe
ln -s ../../outside-pipe deliverables/link-to-pipe
ln -s /dev/zero deliverables/zero
printf ok > deliverables/ok.txt
for name in pipe link-to-pipe zero ok.txt; do echo "DELIVERABLE: deliverables/$name" >> optio.log; done
echo DONE >> optio.log
"""
    ctx = RecordingContext()
    async with asyncio.timeout(30):  # a blocked open would hang here (or freeze the loop locally)
        await run_log_protocol_session(
            host,
            ctx,
            body=sh(script),
            on_deliverable_file=on_file,
            on_deliverable_skipped=lambda path, message: skipped.append((path, message)),
        )
    assert handed == ["ok.txt"]
    assert [path for path, _ in skipped] == ["pipe", "link-to-pipe", "zero"]
    for path, message in skipped:
        assert message.startswith(f"Deliverable {path}: fetch failed: ") and message.endswith(", skipping")
        assert message in ctx.messages
    assert "not a regular file" in skipped[0][1]


async def test_a_symlinked_deliverables_folder_is_refused(host: Host) -> None:
    handed: list[bytes] = []

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        handed.append(await deliverable.read_bytes())

    script = """
mkdir -p ../elsewhere && printf secret > ../elsewhere/loot.txt
mv deliverables deliverables.old && ln -s ../elsewhere deliverables
echo "DELIVERABLE: deliverables/loot.txt" >> optio.log
echo DONE >> optio.log
"""
    ctx = RecordingContext()
    await run_log_protocol_session(host, ctx, body=sh(script), on_deliverable_file=on_file)
    assert handed == []
    [refusal] = [m for m in ctx.messages if m.startswith("Deliverable loot.txt: fetch failed: ")]
    assert "outside" in refusal and "PermissionError" in refusal


SWAPPER = """
printf good > deliverables/good.txt
printf secret > ../secret.txt
i=0
while [ $i -lt 60 ]; do
  cp deliverables/good.txt deliverables/.tmp && mv -f deliverables/.tmp deliverables/x
  echo "DELIVERABLE: deliverables/x" >> optio.log
  ln -s ../../secret.txt deliverables/.tmp && mv -fT deliverables/.tmp deliverables/x
  i=$((i + 1))
done
echo DONE >> optio.log
"""


async def test_a_symlink_swapped_in_after_the_announcement_is_never_delivered(host: Host) -> None:
    contents: list[bytes] = []

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        contents.append(await deliverable.read_bytes())

    ctx = RecordingContext()
    await run_log_protocol_session(host, ctx, body=sh(SWAPPER), on_deliverable_file=on_file)
    refusals = [m for m in ctx.messages if m.startswith("Deliverable x: fetch failed: ")]
    assert set(contents) <= {b"good"}
    assert len(contents) + len(refusals) + ctx.messages.count("Deliverable x: not found") == 60
    assert all("outside" in m or "not found" in m or "changed size" in m for m in refusals)


async def test_text_callback_gets_the_same_refusals(host: Host) -> None:
    texts: list[str] = []

    async def on_text(hook_ctx: HookContext, relative: str, text: str) -> None:
        texts.append(text)

    ctx = RecordingContext()
    await run_log_protocol_session(host, ctx, body=sh(SWAPPER), on_deliverable=on_text)
    assert set(texts) <= {"good"}


async def test_a_sparse_deliverable_is_streamed_not_allocated(host: Host) -> None:
    size = 8 * 1024**3
    seen: list[tuple[int, int]] = []

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        read = 0
        stream = deliverable.chunks()
        async for chunk in stream:
            assert not chunk.strip(b"\0")
            read += len(chunk)
            if read >= 4 * 1024 * 1024:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        seen.append((deliverable.size, read))

    async def on_text(hook_ctx: HookContext, relative: str, text: str) -> None:
        raise AssertionError("an 8 GiB text deliverable must not reach the callback")

    script = (
        f"truncate -s {size} deliverables/sparse.bin\n"
        "echo 'DELIVERABLE: deliverables/sparse.bin' >> optio.log\necho DONE >> optio.log\n"
    )
    await run_log_protocol_session(host, RecordingContext(), body=sh(script), on_deliverable_file=on_file)
    assert seen and seen[0][0] == size and seen[0][1] < 64 * 1024 * 1024
    ctx = RecordingContext()
    await run_log_protocol_session(host, ctx, body=sh(script), on_deliverable=on_text)
    [refusal] = [m for m in ctx.messages if m.startswith("Deliverable sparse.bin: fetch failed: ")]
    assert "on_deliverable_file" in refusal


async def test_fetch_bytes_from_host_refuses_a_fifo_at_once(host: Host) -> None:
    await host.run("mkfifo pipe")
    async with asyncio.timeout(20):
        with pytest.raises(OSError, match="not a regular file"):
            await host.fetch_bytes_from_host(host.workdir + "/pipe")


async def test_open_regular_file_checks_what_it_opened(host: Host, tmp_path: Path) -> None:
    real_workdir: Any = await host.realpath(host.workdir)  # type: ignore[attr-defined]
    await host.run("mkdir -p d && printf abc > d/f && ln -s ../outside d/link && printf x > outside")
    folder = real_workdir + "/d"
    size, chunks = await host.open_regular_file(host.workdir + "/d/f", under=folder)  # type: ignore[attr-defined]
    assert size == 3 and b"".join([c async for c in chunks]) == b"abc"
    with pytest.raises(PermissionError, match="outside"):
        await host.open_regular_file(host.workdir + "/d/link", under=folder)  # type: ignore[attr-defined]
    with pytest.raises(FileNotFoundError):
        await host.open_regular_file(host.workdir + "/d/none", under=folder)  # type: ignore[attr-defined]
    # Closed before it was read: nothing is left open (an fd, a remote reader).
    _, unread = await host.open_regular_file(host.workdir + "/d/f", under=folder)  # type: ignore[attr-defined]
    await unread.aclose()  # type: ignore[attr-defined]


async def test_save_into_a_folder_never_writes_outside_it(host: Host, tmp_path: Path) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / "a").mkdir(parents=True)
    (out / "a" / "link").symlink_to(outside)
    digests: list[str] = []

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        digests.append(await deliverable.save_into(out))

    script = """
mkdir -p deliverables/a/link deliverables/b
printf one > deliverables/a/link/x.txt
printf two > deliverables/b/y.txt
echo "DELIVERABLE: deliverables/a/link/x.txt" >> optio.log
echo "DELIVERABLE: deliverables/b/y.txt" >> optio.log
echo DONE >> optio.log
"""
    ctx = RecordingContext()
    await run_log_protocol_session(host, ctx, body=sh(script), on_deliverable_file=on_file)
    assert digests == [hashlib.sha256(b"two").hexdigest()]
    assert (out / "b" / "y.txt").read_bytes() == b"two"
    assert list(outside.iterdir()) == []
    [raised] = [m for m in ctx.messages if m.startswith("on_deliverable callback raised: ValueError(")]
    assert "symlink leads outside" in raised


async def test_a_deliverable_that_grows_while_read_is_refused_within_its_size(
    host: Host, tmp_path: Path
) -> None:
    """The size seen at open bounds every read: what a worker appends later is never read or kept."""
    # More than a remote reader can send ahead into the channel's window before the file grows.
    start, grown = 32 * 1024 * 1024, 16 * 1024 * 1024
    (tmp_path / "out").mkdir()
    outcomes: dict[str, tuple[int, int, str]] = {}

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        # Opened (and sized) by the session already: grow it before the first read.
        await host.run(f"head -c {grown} /dev/zero >> deliverables/{deliverable.relative_path}")
        kept = 0
        try:
            if deliverable.relative_path == "chunks":
                async for chunk in deliverable.chunks():
                    kept += len(chunk)
            elif deliverable.relative_path == "read_bytes":
                kept = len(await deliverable.read_bytes())
            else:
                await deliverable.save(tmp_path / "out" / "saved")
        except OSError as exc:
            outcomes[deliverable.relative_path] = (deliverable.size, kept, str(exc))

    script = "".join(
        f"head -c {start} /dev/zero > deliverables/{name}\n"
        f"echo 'DELIVERABLE: deliverables/{name}' >> optio.log\n"
        for name in ("chunks", "read_bytes", "save")
    )
    await run_log_protocol_session(
        host, RecordingContext(), body=sh(script + "echo DONE >> optio.log\n"), on_deliverable_file=on_file
    )
    assert sorted(outcomes) == ["chunks", "read_bytes", "save"]
    for size, kept, message in outcomes.values():
        assert size == start and kept <= start and "changed size while being read" in message
    assert not os.listdir(tmp_path / "out")  # nothing saved, no temporary file left


async def test_open_regular_file_reads_no_further_than_the_size_at_open(host: Host) -> None:
    start = 32 * 1024 * 1024  # more than the channel's window: the host is still reading when it grows
    await host.run(f"head -c {start} /dev/zero > log")
    size, chunks = await host.open_regular_file(  # type: ignore[attr-defined]
        host.workdir + "/log",
        under=await host.realpath(host.workdir),  # type: ignore[attr-defined]
    )
    await host.run("head -c 8388608 /dev/zero >> log")
    kept: list[int] = []

    async def read() -> None:
        async for chunk in chunks:
            kept.append(len(chunk))

    with pytest.raises(OSError, match="changed size while being read"):
        await read()
    assert size == start and sum(kept) <= size
