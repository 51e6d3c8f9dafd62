"""Process control on both hosts: whole process trees end on terminate, timeout and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from optio_host import CommandTimeout
from optio_host.host.base import Host

from ._support import is_alive, read_pid, wait_gone

pytestmark = pytest.mark.timeout(60)

# Starts a grandchild `sleep 300` (via a child shell) and records the grandchild's pid.
_TREE = 'sh -c \'sleep 300 & printf "%s!" $! > "$1"; wait\' sh "$1" & wait'


async def _start_tree(host: Host, name: str, **kwargs: object) -> tuple[object, int, str]:
    pidfile = f"{host.workdir}/{name}.pid"
    handle = await host.launch_subprocess(["/bin/sh", "-c", _TREE, "sh", pidfile], **kwargs)  # type: ignore[arg-type]
    grandchild = await read_pid(host, pidfile)
    assert await is_alive(host, grandchild)
    return handle, grandchild, pidfile


async def test_aggressive_terminate_kills_the_whole_tree(host: Host) -> None:
    handle, grandchild, _ = await _start_tree(host, "aggr")
    started = time.monotonic()
    await host.terminate_subprocess(handle, aggressive=True)  # type: ignore[arg-type]
    assert time.monotonic() - started < 4
    assert await wait_gone(host, grandchild)
    assert handle.returncode is not None  # type: ignore[attr-defined]


async def test_graceful_terminate_sends_term_first(host: Host) -> None:
    marker = f"{host.workdir}/got-term"
    script = f"trap 'echo term > \"{marker}\"; exit 0' TERM; echo ready; sleep 300 & wait"
    handle = await host.launch_subprocess(["/bin/sh", "-c", script])
    assert await anext(handle.stdout) == b"ready\n"  # the trap is installed
    await host.terminate_subprocess(handle, aggressive=False)
    assert await host.fetch_bytes_from_host(marker) == b"term\n"
    assert handle.returncode == 0


async def test_graceful_terminate_kills_what_ignores_term(host: Host) -> None:
    handle = await host.launch_subprocess(
        ["/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]
    )
    assert await anext(handle.stdout) == b"ready\n"
    started = time.monotonic()
    await host.terminate_subprocess(handle, aggressive=False)
    elapsed = time.monotonic() - started
    assert 4.5 < elapsed < 12, elapsed  # waited the 5 s grace, then SIGKILL
    assert handle.returncode is not None and handle.returncode != 0


async def test_graceful_terminate_also_ends_children(host: Host) -> None:
    handle, grandchild, _ = await _start_tree(host, "grace")
    await host.terminate_subprocess(handle, aggressive=False)  # type: ignore[arg-type]
    assert await wait_gone(host, grandchild)


async def test_terminate_after_exit_is_a_no_op(host: Host) -> None:
    handle = await host.launch_subprocess("exit 3")
    async for _ in handle.stdout:
        pass
    assert await handle.wait() == 3
    await host.terminate_subprocess(handle, aggressive=True)
    await host.terminate_subprocess(handle, aggressive=False)
    assert handle.returncode == 3


async def test_run_timeout_kills_the_whole_tree(host: Host) -> None:
    pidfile = f"{host.workdir}/timeout.pid"
    with pytest.raises(CommandTimeout):
        await host.run(["/bin/sh", "-c", _TREE, "sh", pidfile], timeout=1)
    grandchild = await read_pid(host, pidfile)
    assert await wait_gone(host, grandchild)


async def test_cancelling_run_kills_the_whole_tree(host: Host) -> None:
    pidfile = f"{host.workdir}/cancel.pid"
    runner = asyncio.create_task(host.run(["/bin/sh", "-c", _TREE, "sh", pidfile]))
    grandchild = await read_pid(host, pidfile)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert await wait_gone(host, grandchild)


async def test_many_concurrent_runs(host: Host) -> None:
    results = await asyncio.gather(*(host.run(["echo", str(n)]) for n in range(50)))
    assert [r.stdout for r in results] == [f"{n}\n" for n in range(50)]


async def test_run_streams_input_and_output(host: Host) -> None:
    seen: list[bytes] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first\n"
        yield b"second\n"

    result = await host.run(["cat"], input=chunks(), on_stdout=seen.append, timeout=30)
    assert b"".join(seen) == b"first\nsecond\n"
    assert result.stdout == "" and result.exit_code == 0


async def test_a_handle_owns_its_process_and_a_cancelled_close_still_ends_it(host: Host) -> None:
    async with await host.launch_subprocess("echo ready; exec sleep 60") as handle:
        assert await anext(handle.stdout) == b"ready\n"
    assert handle.returncode is not None  # async with ended it

    stubborn = await host.launch_subprocess("trap '' TERM; echo ready; while :; do sleep 1; done")
    assert await anext(stubborn.stdout) == b"ready\n"
    closing = asyncio.ensure_future(stubborn.aclose())  # TERM is ignored: it would wait 5 s
    await asyncio.sleep(0.3)
    closing.cancel()
    async with asyncio.timeout(10):
        with pytest.raises(asyncio.CancelledError):
            await closing
    assert stubborn.returncode is not None  # killed at once on the cancel, then re-raised


async def test_a_run_cancelled_while_starting_ends_its_whole_tree_promptly(host: Host) -> None:
    marker = f"{time.time_ns() % 10**9}"
    for delay in (0, 0, 0.001, 0.005):
        task = asyncio.ensure_future(host.run(f"sleep 7.{marker} & echo started; wait"))
        await asyncio.sleep(delay)
        started = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 4  # not the 7 s the background sleep keeps a pipe open
    processes = await host.run(["ps", "-eo", "args"])
    assert f"sleep 7.{marker}" not in processes.stdout
