"""Striping: on a long link, past one segment, a RemoteHost sends an upload or a restore's
archive over several channels at once (one channel carries at most sshd's 2 MiB window per
round trip). Content, refusals, failure and cancellation are checked on a real sshd behind a
relay that adds 40 ms of round trip; ``segments`` is checked for any input."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optio_host import HostConnectionError, LocalHost, ProcessHandle, RemoteHost, RunResult
from optio_host.host._striped import LANES, SEGMENT, StripedWriter, segments
from optio_host.testing.sshd import SshServer

from ._netns import DelayRelay
from ._support import from_list, sha256
from .test_archive_safety import BROKEN, add, assert_refused_changes_nothing, listing, prepare, tar_bytes

pytestmark = pytest.mark.timeout(60)


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(1, 50))
async def test_segments_regroup_any_stream_into_exact_sizes(pieces: list[bytes], size: int) -> None:
    async def source() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    groups = [b"".join(group) async for group in segments(source(), size)]
    assert b"".join(groups) == b"".join(pieces)
    assert all(len(group) == size for group in groups[:-1])
    assert all(0 < len(group) <= size for group in groups)


@pytest.fixture
async def relay(optio_sshd: SshServer) -> AsyncIterator[DelayRelay]:
    """A relay on loopback to the test sshd that holds each chunk 20 ms (40 ms of round trip)."""
    relay = DelayRelay("127.0.0.1", (optio_sshd.host, optio_sshd.port))
    relay.delay = 0.02
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


@pytest.fixture
async def far_host(optio_sshd: SshServer, relay: DelayRelay, tmp_path: object) -> AsyncIterator[RemoteHost]:
    """A RemoteHost 40 ms of round trip away, through ``relay``."""
    port = relay.port
    known_hosts = os.path.join(str(tmp_path), "known_hosts")
    key_type, key = optio_sshd.host_public_key().split()[:2]
    with open(known_hosts, "w") as handle:
        handle.write(f"[127.0.0.1]:{port} {key_type} {key}\n")
    config = optio_sshd.ssh_config(host="127.0.0.1", port=port, known_hosts=known_hosts)
    host = RemoteHost(config, f"{optio_sshd.scratch}/far-{os.urandom(4).hex()}")
    try:
        await host.connect()
        await host.setup_workdir()
        yield host
        assert await host.wait_channels_closed(5.0) == []
        await host.cleanup_taskdir(aggressive=True)
    finally:
        await host.disconnect()


async def _until(condition: Callable[[], bool]) -> None:
    # No event says "a channel opened"; poll briefly (loopback: a few milliseconds).
    async with asyncio.timeout(20):
        while not condition():  # noqa: ASYNC110 - no public event for "a channel opened"
            await asyncio.sleep(0.01)


async def _temp_files(host: RemoteHost, folder: str) -> list[str]:
    listing = await host.run(["ls", "-A", folder])
    return [name for name in listing.stdout.split() if name.endswith(".tmp")]


async def test_a_striped_upload_uses_every_lane(far_host: RemoteHost) -> None:
    data = os.urandom(2 * LANES * SEGMENT + 999)
    peak = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal peak
        yield data[:SEGMENT]
        yield data[SEGMENT : 2 * SEGMENT]
        # The first lane is taken at once, the others as their channels open: wait for them.
        await _until(lambda: len(far_host.open_channels()) == LANES)
        peak = len(far_host.open_channels())
        yield data[2 * SEGMENT :]

    target = far_host.workdir + "/striped.bin"
    await far_host.put_file_to_host(source(), target)
    assert peak == LANES
    assert await far_host.file_sha256(target) == sha256(data)
    assert await far_host.wait_channels_closed(5.0) == []


async def test_a_lane_that_cannot_write_fails_the_upload_and_commits_nothing(
    far_host: RemoteHost,
) -> None:
    folder = far_host.workdir + "/f"
    target = folder + "/out.bin"

    async def source() -> AsyncIterator[bytes]:
        yield os.urandom(SEGMENT + 1)
        # The host's user can no longer open the half-written file: the next frame fails.
        (temp,) = await _temp_files(far_host, folder)
        await far_host.run(["chmod", "0444", f"{folder}/{temp}"], check=True)
        yield os.urandom(3 * SEGMENT)

    with pytest.raises(OSError, match=r"writing .*out\.bin on .* failed \(exit 1\): .*[Pp]ermission denied"):
        await far_host.put_file_to_host(source(), target)
    assert await far_host.file_size(target) is None
    assert await _temp_files(far_host, folder) == []
    assert await far_host.wait_channels_closed(5.0) == []


async def test_cancelling_a_striped_upload_leaves_no_channel_and_no_file(far_host: RemoteHost) -> None:
    folder = far_host.workdir + "/c"
    started = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        yield os.urandom(3 * SEGMENT)
        started.set()
        await asyncio.Event().wait()  # the rest never comes
        yield b""  # pragma: no cover

    task = asyncio.ensure_future(far_host.put_file_to_host(source(), folder + "/out.bin"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await far_host.wait_channels_closed(5.0) == []
    assert (await far_host.run(["ls", "-A", folder])).stdout.split() == []


# ------------------------------------------------------------------ restores


def _big(tar: tarfile.TarFile, blob: bytes) -> None:
    add(tar, "data/blob.bin", data=blob)  # incompressible: the archive spans several segments
    for index in range(50):
        add(tar, f"small/{index:02d}.txt", data=b"%d\n" % index * 100)


def _split(data: bytes, size: int = 256 * 1024) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_a_striped_restore_unpacks_the_archive(far_host: RemoteHost) -> None:
    blob = os.urandom(3 * SEGMENT)
    archive = tar_bytes(lambda tar: _big(tar, blob))
    peak = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal peak
        pieces = _split(archive)
        half = len(pieces) // 2
        for piece in pieces[:half]:
            yield piece
        # RESTORE's own channel and every lane are open.
        await _until(lambda: len(far_host.open_channels()) == LANES + 1)
        peak = len(far_host.open_channels())
        for piece in pieces[half:]:
            yield piece

    await far_host.write_text("old.txt", "old")
    await far_host.restore_workdir(source())
    assert peak == LANES + 1
    files = await listing(far_host)
    assert "old.txt" not in files and len([n for n in files if n.startswith("small/")]) == 50
    assert await far_host.file_sha256(far_host.workdir + "/data/blob.bin") == hashlib.sha256(blob).hexdigest()
    left = await far_host.run(["ls", "-A", far_host.taskdir])
    assert left.stdout.split() == ["workdir"]


def _hostile_after_the_first_segments(tar: tarfile.TarFile, kind: str) -> None:
    add(tar, "first.bin", data=os.urandom(2 * SEGMENT))
    if kind == "dotdot":
        add(tar, "../escaped.txt", data=b"x")
    else:
        add(tar, "link", tarfile.SYMTYPE, linkname="/etc")
        add(tar, "link/passwd", data=b"x")


@pytest.mark.parametrize("kind", ["dotdot", "link-out"])
async def test_a_member_leading_out_late_in_a_striped_restore_is_refused(
    far_host: RemoteHost, kind: str
) -> None:
    archive = tar_bytes(lambda tar: _hostile_after_the_first_segments(tar, kind))
    await assert_refused_changes_nothing(far_host, archive, "refused|outside|leads out|\\.\\.")
    left = await far_host.run(["ls", "-A", far_host.taskdir])
    assert left.stdout.split() == ["workdir"]


@pytest.mark.parametrize("case", ["bad-crc", "corrupt-deflate", "no-gzip-trailer"])
async def test_a_broken_striped_archive_is_refused(far_host: RemoteHost, case: str) -> None:
    blob = os.urandom(2 * SEGMENT)
    whole = bytearray(tar_bytes(lambda tar: _big(tar, blob)))
    if case == "bad-crc":
        whole[-8] ^= 0xFF
    elif case == "corrupt-deflate":
        whole[len(whole) * 3 // 4] ^= 0x55
    else:
        del whole[-8:]
    assert case in BROKEN  # the same cases as the unstriped suite
    await assert_refused_changes_nothing(far_host, bytes(whole), "truncated|corrupt|refused")


async def test_a_cancelled_striped_restore_keeps_the_old_workdir(far_host: RemoteHost) -> None:
    before, _ = await prepare(far_host)
    archive = tar_bytes(lambda tar: _big(tar, os.urandom(3 * SEGMENT)))
    pieces = _split(archive)
    sent = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        for index, piece in enumerate(pieces):
            if index == len(pieces) // 2:
                sent.set()
                await asyncio.Event().wait()  # the rest never comes
            yield piece

    task = asyncio.ensure_future(far_host.restore_workdir(source()))
    await sent.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert await listing(far_host) == before
    left = await far_host.run(["ls", "-A", far_host.taskdir])
    assert left.stdout.split() == ["workdir"]
    assert await far_host.wait_channels_closed(5.0) == []


async def test_a_restore_cut_off_mid_stripe_leaves_nothing_once_reconnected(
    far_host: RemoteHost, relay: DelayRelay
) -> None:
    before, _ = await prepare(far_host)
    pieces = _split(tar_bytes(lambda tar: _big(tar, os.urandom(3 * SEGMENT))))
    halfway, dropped = asyncio.Event(), asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        for index, piece in enumerate(pieces):
            if index == len(pieces) * 3 // 4:
                halfway.set()
                await dropped.wait()  # the link goes down meanwhile
            yield piece

    task = asyncio.ensure_future(far_host.restore_workdir(source()))
    await halfway.wait()
    await _until(lambda: len(far_host.open_channels()) >= LANES)  # striping is under way
    relay.drop_connections()
    dropped.set()
    with pytest.raises(HostConnectionError):
        await task
    assert await listing(far_host) == before  # (this call reconnects)
    # The staging folder and the staged archive go once the host answers again.
    await _until_async(lambda: far_host.run(["ls", "-A", far_host.taskdir]), ["workdir"])


async def _until_async(probe: Callable[[], Awaitable[RunResult]], wanted: list[str]) -> None:
    async with asyncio.timeout(20):
        while (await probe()).stdout.split() != wanted:  # noqa: ASYNC110 - the clean-up runs in the background
            await asyncio.sleep(0.05)


async def test_a_restore_whose_lanes_find_no_spare_slot_still_completes(
    optio_sshd: SshServer, relay: DelayRelay, tmp_path: object
) -> None:
    # One connection allowed, one slot on it (max_sessions=2 keeps one for control): RESTORE and
    # the lanes cannot all run at once. The lanes go first; RESTORE follows once they are done.
    relay.max_connections = 1
    known_hosts = os.path.join(str(tmp_path), "known_hosts")
    key_type, key = optio_sshd.host_public_key().split()[:2]
    with open(known_hosts, "w") as handle:
        handle.write(f"[127.0.0.1]:{relay.port} {key_type} {key}\n")
    config = optio_sshd.ssh_config(host="127.0.0.1", port=relay.port, known_hosts=known_hosts, max_sessions=2)
    blob = os.urandom(2 * SEGMENT)
    async with RemoteHost(config, f"{optio_sshd.scratch}/one-{os.urandom(4).hex()}") as host:
        await host.setup_workdir()
        await host.restore_workdir(from_list(_split(tar_bytes(lambda tar: _big(tar, blob)))))
        assert await host.file_sha256("data/blob.bin") == hashlib.sha256(blob).hexdigest()
        await host.cleanup_taskdir(aggressive=True)


async def test_an_acknowledgement_for_bytes_a_lane_was_not_sent_fails_the_write(tmp_path: object) -> None:
    # A process on the host (same user) could write into a lane's output: each acknowledgement
    # must be for the next frame that lane was sent, or the host could claim bytes it never got
    # (and make the client remember every claim).
    async with LocalHost(os.path.join(str(tmp_path), "task")) as host:
        await host.setup_workdir()

        def launch(spare: bool) -> Awaitable[ProcessHandle]:
            return host.launch_subprocess('echo "ok 999999 1"; cat >/dev/null', stdin=True)

        async def write_one_byte() -> None:
            async with StripedWriter(launch, lanes=2) as writer:
                await writer.send([b"x"])
                await writer.finish()

        with pytest.raises(OSError, match=r"lane acknowledged b'ok 999999 1', expecting"):
            await write_one_byte()
