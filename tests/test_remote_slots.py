"""Session slots on a RemoteHost: ending a process gives its slot back, however it ended.

OpenSSH allows ``MaxSessions`` channels per connection and the pool holds 4 connections
x 8 slots. A channel whose output nobody reads never closes by itself (sshd sends its close
only after the last byte fits into our window), so every way a process can end must close it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import textwrap

import pytest

from optio_host import RemoteHost
from optio_host.host import _ssh
from optio_host.testing.sshd import SshServer

pytestmark = pytest.mark.timeout(120)

#: More than the pool's capacity (4 connections x 8 slots), so a leak per process shows as a hang.
BEYOND_CAPACITY = 40


async def _no_slot_in_use(host: RemoteHost) -> None:
    assert await host.wait_channels_closed(5.0) == []
    assert host.slots_in_use == 0


@pytest.mark.parametrize("aggressive", [True, False], ids=["kill", "term"])
async def test_killed_commands_with_unread_output_free_their_slots(
    remote_host: RemoteHost, aggressive: bool
) -> None:
    for _ in range(BEYOND_CAPACITY):
        handle = await asyncio.wait_for(remote_host.launch_subprocess("yes"), 20)
        assert (await anext(handle.stdout)).startswith(b"y\n")
        await asyncio.wait_for(remote_host.terminate_subprocess(handle, aggressive=aggressive), 20)
    assert (await asyncio.wait_for(remote_host.run(["echo", "still here"]), 20)).stdout == "still here\n"
    await _no_slot_in_use(remote_host)


@pytest.mark.slow
async def test_four_hundred_kills_with_unread_output(remote_host: RemoteHost) -> None:
    for _ in range(400):
        handle = await asyncio.wait_for(remote_host.launch_subprocess("yes"), 20)
        assert await anext(handle.stdout)
        await asyncio.wait_for(remote_host.terminate_subprocess(handle, aggressive=True), 20)
    await _no_slot_in_use(remote_host)


async def test_a_killed_process_keeps_its_slot_until_terminated(remote_host: RemoteHost) -> None:
    # The counter is real: a live command is listed, and terminating it clears it.
    handle = await remote_host.launch_subprocess("yes")
    assert await anext(handle.stdout)
    assert remote_host.open_channels() == ["yes"]
    assert remote_host.slots_in_use == 1
    await remote_host.terminate_subprocess(handle, aggressive=True)
    await _no_slot_in_use(remote_host)


async def test_exited_commands_whose_output_was_drained_free_their_slots(remote_host: RemoteHost) -> None:
    for _ in range(BEYOND_CAPACITY):
        result = await asyncio.wait_for(remote_host.run("head -c 3000000 /dev/zero"), 20)
        assert len(result.stdout) == 3_000_000
    await _no_slot_in_use(remote_host)


async def test_abandoned_output_streams_free_their_slots(remote_host: RemoteHost) -> None:
    for _ in range(BEYOND_CAPACITY):
        handle = await asyncio.wait_for(remote_host.launch_subprocess("yes"), 20)
        assert await anext(handle.stdout)
        await handle.stdout.aclose()  # type: ignore[attr-defined]
    await _no_slot_in_use(remote_host)


async def test_exited_commands_dropped_with_unread_output_free_their_slots(remote_host: RemoteHost) -> None:
    # The process has exited, but 10 MB of its output was never read and the handle is dropped.
    for _ in range(BEYOND_CAPACITY):
        handle = await asyncio.wait_for(remote_host.launch_subprocess("head -c 10000000 /dev/zero"), 20)
        assert await anext(handle.stdout)
        del handle
        gc.collect()  # the output stream's finaliser closes the channel
    await _no_slot_in_use(remote_host)


async def test_cancelled_readers_free_their_slots(remote_host: RemoteHost) -> None:
    async def read_all(handle) -> None:  # type: ignore[no-untyped-def]
        async for _ in handle.stdout:
            pass

    for _ in range(BEYOND_CAPACITY):
        handle = await asyncio.wait_for(remote_host.launch_subprocess("echo started; exec sleep 30"), 20)
        assert await anext(handle.stdout) == b"started\n"
        reader = asyncio.ensure_future(read_all(handle))
        await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await remote_host.terminate_subprocess(handle, aggressive=True)
    await _no_slot_in_use(remote_host)


async def test_a_dead_connection_frees_its_slots(remote_host: RemoteHost) -> None:
    handles = []
    for _ in range(5):
        handle = await remote_host.launch_subprocess("yes")
        assert await anext(handle.stdout)
        handles.append(handle)
    assert remote_host.slots_in_use == 5
    remote_host._connected_pool.primary.conn.abort()  # the link dies under them
    await _no_slot_in_use(remote_host)
    # ... and the host carries on over a fresh connection.
    assert (await asyncio.wait_for(remote_host.run(["echo", "back"]), 20)).stdout == "back\n"
    await _no_slot_in_use(remote_host)


def test_the_plugin_fails_a_test_that_leaks_a_channel(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\noptio_host_check_channels = true\n")
    pytester.makepyfile(
        textwrap.dedent(
            """
            async def test_leaks(remote_host):
                handle = await remote_host.launch_subprocess("yes")
                assert await anext(handle.stdout)
                test_leaks.keep = handle  # neither read to the end nor terminated

            async def test_clean(remote_host):
                handle = await remote_host.launch_subprocess("yes")
                assert await anext(handle.stdout)
                await remote_host.terminate_subprocess(handle, aggressive=True)
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=100)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*1 command channel(s) still open*['yes']*"])


class _Heard(logging.Handler):
    """Sets an event when a record arrives (so the test awaits the warning, no polling)."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.event.set()


async def test_a_long_wait_for_a_slot_names_what_holds_them(
    optio_sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ssh, "SLOT_WAIT_WARNING", 0.2)
    heard = _Heard()
    logging.getLogger("optio_host.ssh").addHandler(heard)
    config = dataclasses.replace(optio_sshd.ssh_config(), max_sessions=3)  # 1 slot x 4 connections
    try:
        async with RemoteHost(config, optio_sshd.scratch + "/slots-wait") as host:
            await host.setup_workdir()
            handles = [await host.launch_subprocess("yes") for _ in range(4)]
            waiting = asyncio.ensure_future(host.launch_subprocess(["echo", "fifth"]))
            await asyncio.wait_for(heard.event.wait(), 20)
            assert not waiting.done()  # every slot is held by a live command: waiting is right
            assert "held by ['yes', 'yes', 'yes', 'yes']" in heard.messages[0]
            await handles[0].aclose()
            async with await asyncio.wait_for(waiting, 20) as fifth:
                assert await anext(fifth.stdout) == b"fifth\n"
            for handle in handles[1:]:
                await handle.kill()
            await _no_slot_in_use(host)
    finally:
        logging.getLogger("optio_host.ssh").removeHandler(heard)


async def test_a_cancelled_launch_leaves_no_process_and_no_slot(remote_host: RemoteHost) -> None:
    marker = f"optio-cancelled-launch-{os.getpid()}"
    for delay in (0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1):
        launch = asyncio.ensure_future(remote_host.launch_subprocess(["sh", "-c", f"sleep 600 # {marker}"]))
        await asyncio.sleep(delay)
        launch.cancel()
        try:
            handle = await launch
        except asyncio.CancelledError:
            continue
        await handle.kill()  # it started before the cancel arrived: ours to end
    await _no_slot_in_use(remote_host)
    processes = await remote_host.run(["ps", "-eo", "args"])
    assert marker not in processes.stdout
