"""Faults without network namespaces: killed SSH connections, sshd restarts, crashes, load.

(Link cuts and packet loss, which need root and network namespaces, are in test_faults_netns.py.)
"""

from __future__ import annotations

import asyncio
import time

import pytest

from optio_host import HostConnectionError, RemoteHost, SessionFailed
from optio_host.host.base import Host
from optio_host.protocol import run_log_protocol_session
from optio_host.testing import RecordingContext
from optio_host.testing.sshd import SshServer

from ._support import PACED_WORKER, sha256

pytestmark = pytest.mark.timeout(120)

# 500 STATUS lines and 20 deliverables, then DONE; about 3 s.


@pytest.fixture
def server() -> object:
    with SshServer() as sshd:
        yield sshd


def _remote(server: SshServer, name: str, **overrides: object) -> RemoteHost:
    return RemoteHost(server.ssh_config(keepalive_interval=1, **overrides), f"{server.scratch}/{name}")


async def _run_worker_session(host: Host, ctx: RecordingContext, **kwargs: object) -> dict[str, str]:
    received: dict[str, str] = {}

    async def body(h: Host, _hook: object) -> None:
        proc = await h.launch_detached(["/bin/sh", "-c", PACED_WORKER, "worker", "0.005"], name="worker")
        assert await proc.wait(reconnect_timeout=60) == 0

    async def on_deliverable(_hook: object, relative: str, text: str) -> None:
        assert relative not in received, f"{relative} delivered twice"
        received[relative] = text

    await run_log_protocol_session(host, ctx, body=body, on_deliverable=on_deliverable, **kwargs)  # type: ignore[arg-type]
    return received


def _assert_exactly_once(ctx: RecordingContext, received: dict[str, str]) -> None:
    steps = [m for m in ctx.messages if m.startswith("step ")]
    assert steps == [f"step {i}" for i in range(500)]
    assert received == {f"d{n}.txt": f"deliverable {n}\n" for n in range(20)}
    assert ctx.messages.count("all steps") == 1


async def test_session_survives_killed_connections(server: SshServer) -> None:
    ctx = RecordingContext()
    async with _remote(server, "cut-session") as host:
        session = asyncio.create_task(_run_worker_session(host, ctx))
        kills = 0
        while not session.done() and kills < 3:
            await asyncio.sleep(0.6)
            server.kill_connections()
            kills += 1
        received = await asyncio.wait_for(session, 90)
    assert kills == 3
    _assert_exactly_once(ctx, received)
    assert ctx.messages.count("Reconnected to the host") >= 1


async def test_in_flight_run_fails_promptly_and_the_next_call_reconnects(server: SshServer) -> None:
    async with _remote(server, "inflight") as host:
        await host.setup_workdir()
        running = asyncio.create_task(host.run(["sleep", "30"]))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        server.kill_connections()
        with pytest.raises(HostConnectionError):
            await asyncio.wait_for(running, 20)
        assert time.monotonic() - started < 10
        assert (await host.run(["echo", "back"])).stdout == "back\n"


async def test_interrupted_upload_leaves_no_target_and_no_temp(server: SshServer) -> None:
    async with _remote(server, "upload") as host:
        await host.setup_workdir()
        target = host.workdir + "/big.bin"

        async def slow_chunks() -> object:
            for _ in range(400):
                yield b"x" * 65536
                await asyncio.sleep(0.005)

        upload = asyncio.create_task(host.put_file_to_host(slow_chunks(), target))  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        server.kill_connections()
        with pytest.raises(HostConnectionError):
            await asyncio.wait_for(upload, 20)
        assert await host.file_size(target) is None  # reconnects; no half-written target
        leftovers = await host.run(["ls", "-A", host.workdir])
        assert leftovers.stdout == ""  # the orphaned temp file was removed after reconnecting
        data = b"y" * 100_000
        await host.put_file_to_host(data, target, expected_sha256=sha256(data))
        assert await host.file_size(target) == len(data)


async def test_sshd_restart_between_calls_is_invisible(server: SshServer) -> None:
    async with _remote(server, "restart") as host:
        await host.setup_workdir()
        assert (await host.run(["echo", "1"])).stdout == "1\n"
        server.restart()
        assert (await host.run(["echo", "2"])).stdout == "2\n"
        assert await host.fetch_bytes_from_host("/etc/hostname")


async def test_unreachable_after_loss_gives_up_with_a_clear_error(server: SshServer) -> None:
    async with _remote(server, "gone") as host:
        await host.setup_workdir()
        server.stop()
        started = time.monotonic()
        with pytest.raises(HostConnectionError, match="could not reconnect"):
            await host.run(["true"])
        assert time.monotonic() - started < 30


async def test_session_fails_after_its_reconnect_budget(server: SshServer) -> None:
    ctx = RecordingContext()
    async with _remote(server, "budget") as host:

        async def body(h: Host, _hook: object) -> None:
            await h.write_text("optio.log", "STATUS: started\n")
            server.stop()  # the host goes away for good
            await asyncio.sleep(60)

        started = time.monotonic()
        with pytest.raises(SessionFailed, match="could not get it back within 3s"):
            await run_log_protocol_session(host, ctx, body=body, reconnect_timeout=3)
        assert time.monotonic() - started < 40


def _context_waiting_for(message: str) -> tuple[RecordingContext, asyncio.Event]:
    seen = asyncio.Event()
    ctx = RecordingContext(on_progress=lambda _p, m: seen.set() if m == message else None)
    return ctx, seen


async def test_killed_worker_fails_the_session_quickly(host: Host) -> None:
    ctx, working = _context_waiting_for("working")

    async def body(h: Host, _hook: object) -> None:
        proc = await h.launch_detached("echo 'STATUS: working' >> optio.log; sleep 300", name="victim")
        await working.wait()
        await h.run(["/bin/sh", "-c", 'kill -s KILL -- "-$(cat "$1/pid")"', "sh", proc.state_dir])
        await proc.wait()

    started = time.monotonic()
    with pytest.raises(SessionFailed, match="body returned before DONE was observed"):
        await run_log_protocol_session(host, ctx, body=body)
    assert time.monotonic() - started < 10


async def test_cancelled_session_leaves_no_tail_running(host: Host) -> None:
    ctx, go = _context_waiting_for("go")
    started = asyncio.Event()

    async def body(h: Host, _hook: object) -> None:
        await h.write_text("optio.log", "STATUS: go\n")
        started.set()
        await asyncio.sleep(300)

    session = asyncio.create_task(run_log_protocol_session(host, ctx, body=body))
    await asyncio.wait_for(started.wait(), 20)
    await asyncio.wait_for(go.wait(), 20)
    session.cancel()
    with pytest.raises(asyncio.CancelledError):
        await session
    log = host.workdir + "/optio.log"
    deadline = time.monotonic() + 10
    while True:
        tails = await host.run(["pgrep", "-f", f"tail -c \\+[0-9]+ -F -s 0.1 -- {log}"])
        if tails.stdout == "" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert tails.stdout == ""


# ------------------------------------------------------------------ load


async def test_fifty_concurrent_sessions_on_one_host(remote_host: RemoteHost) -> None:
    async def one(index: int) -> tuple[int, int]:
        host = RemoteHost(remote_host.ssh_config, f"{remote_host.taskdir}/s{index}")
        ctx = RecordingContext(f"s{index}")
        script = 'for i in $(seq 40); do echo "STATUS: $i% line $i"; done >> optio.log; echo DONE >>optio.log'
        async with host:

            async def body(h: Host, _hook: object) -> None:
                await h.run(["/bin/sh", "-c", script])

            await run_log_protocol_session(host, ctx, body=body)
        lines = [m for m in ctx.messages if m.startswith("line ")]
        return len(lines), len(set(lines))

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == [(40, 40)] * 50


async def test_sessions_on_ten_hosts_at_once() -> None:
    servers = [SshServer().start() for _ in range(10)]
    try:

        async def one(server: SshServer) -> int:
            ctx = RecordingContext()
            async with _remote(server, "ten") as host:

                async def body(h: Host, _hook: object) -> None:
                    await h.run(["/bin/sh", "-c", PACED_WORKER, "worker", "0.005"])

                received = await _run_worker_session_plain(host, ctx, body)
            _assert_exactly_once(ctx, received)
            return len(received)

        assert await asyncio.gather(*(one(s) for s in servers)) == [20] * 10
    finally:
        for server in servers:
            server.close()


async def _run_worker_session_plain(host: Host, ctx: RecordingContext, body: object) -> dict[str, str]:
    received: dict[str, str] = {}

    async def on_deliverable(_hook: object, relative: str, text: str) -> None:
        received[relative] = text

    await run_log_protocol_session(host, ctx, body=body, on_deliverable=on_deliverable)  # type: ignore[arg-type]
    return received
