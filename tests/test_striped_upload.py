"""Striped uploads: past one segment a RemoteHost sends a file over several channels at once
(one channel carries at most sshd's 2 MiB window per round trip). Content, failure and
cancellation are checked on a real sshd; ``segments`` is checked for any input."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optio_host import RemoteHost
from optio_host.host._striped import LANES, SEGMENT, segments

from ._support import sha256

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


async def _until(condition: Callable[[], bool]) -> None:
    # No event says "a channel opened"; poll briefly (loopback: a few milliseconds).
    async with asyncio.timeout(20):
        while not condition():
            await asyncio.sleep(0.01)


async def _temp_files(host: RemoteHost, folder: str) -> list[str]:
    listing = await host.run(["ls", "-A", folder])
    return [name for name in listing.stdout.split() if name.endswith(".tmp")]


async def test_a_striped_upload_uses_every_lane(remote_host: RemoteHost) -> None:
    data = os.urandom(2 * LANES * SEGMENT + 999)
    peak = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal peak
        yield data[:SEGMENT]
        yield data[SEGMENT : 2 * SEGMENT]
        # The first lane is taken at once, the others as their channels open: wait for them.
        await _until(lambda: len(remote_host.open_channels()) == LANES)
        peak = len(remote_host.open_channels())
        yield data[2 * SEGMENT :]

    target = remote_host.workdir + "/striped.bin"
    await remote_host.put_file_to_host(source(), target)
    assert peak == LANES
    assert await remote_host.file_sha256(target) == sha256(data)
    assert await remote_host.wait_channels_closed(5.0) == []


async def test_a_lane_that_cannot_write_fails_the_upload_and_commits_nothing(
    remote_host: RemoteHost,
) -> None:
    folder = remote_host.workdir + "/f"
    target = folder + "/out.bin"

    async def source() -> AsyncIterator[bytes]:
        yield os.urandom(SEGMENT + 1)
        # The host's user can no longer open the half-written file: the next frame fails.
        (temp,) = await _temp_files(remote_host, folder)
        await remote_host.run(["chmod", "0444", f"{folder}/{temp}"], check=True)
        yield os.urandom(3 * SEGMENT)

    with pytest.raises(OSError, match=r"writing .*out\.bin on .* failed \(exit 1\): .*[Pp]ermission denied"):
        await remote_host.put_file_to_host(source(), target)
    assert await remote_host.file_size(target) is None
    assert await _temp_files(remote_host, folder) == []
    assert await remote_host.wait_channels_closed(5.0) == []


async def test_cancelling_a_striped_upload_leaves_no_channel_and_no_file(remote_host: RemoteHost) -> None:
    folder = remote_host.workdir + "/c"
    started = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        yield os.urandom(3 * SEGMENT)
        started.set()
        await asyncio.Event().wait()  # the rest never comes
        yield b""  # pragma: no cover

    task = asyncio.ensure_future(remote_host.put_file_to_host(source(), folder + "/out.bin"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await remote_host.wait_channels_closed(5.0) == []
    assert (await remote_host.run(["ls", "-A", folder])).stdout.split() == []
