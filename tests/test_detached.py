"""Detached processes: started on either host, they outlive the connection and can be re-attached."""

from __future__ import annotations

import pytest

from optio_host import LocalHost, RemoteHost
from optio_host.detached import KILLED, DetachedProcess
from optio_host.host.base import Host
from optio_host.testing.sshd import SshServer

from ._support import is_alive, read_pid, wait_gone

pytestmark = pytest.mark.timeout(60)


async def test_runs_records_output_and_exit_code(host: Host) -> None:
    proc = await host.launch_detached(["/bin/sh", "-c", 'echo "out $1"; echo err >&2; exit 3', "sh", "x y"])
    assert await proc.wait() == 3
    assert await host.fetch_bytes_from_host(proc.output_path) == b"out x y\nerr\n"
    assert await proc.returncode() == 3


async def test_string_command_env_and_cwd(host: Host) -> None:
    await host.write_text("sub/marker", "")
    proc = await host.launch_detached('ls; printf "%s" "$SECRET"', env={"SECRET": "s'3\ncret"}, cwd="sub")
    assert await proc.wait() == 0
    assert await host.fetch_bytes_from_host(proc.output_path) == b"marker\ns'3\ncret"


async def test_running_process_reports_none_then_terminates_with_its_children(host: Host) -> None:
    proc = await host.launch_detached("sleep 300 & printf '%s!' $! > child.pid; wait", name="sleeper")
    assert proc.state_dir.endswith("/.optio/detached/sleeper")
    assert await proc.returncode() is None
    leader = await proc.pid()
    assert await is_alive(host, leader)
    child = await read_pid(host, host.workdir + "/child.pid")
    await proc.terminate()
    assert await wait_gone(host, child)
    assert await wait_gone(host, leader)
    assert await proc.wait() != 0


async def test_sigkill_gives_killed(host: Host) -> None:
    proc = await host.launch_detached(["sleep", "300"])
    await proc.terminate(aggressive=True)
    assert await proc.wait() == KILLED


async def test_rejects_bad_names(local_host: LocalHost) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        await local_host.launch_detached(["true"], name="../escape")


async def test_survives_the_connection_and_reattaches(optio_sshd: SshServer) -> None:
    taskdir = optio_sshd.scratch + "/detached-reattach"
    async with RemoteHost(optio_sshd.ssh_config(), taskdir) as first:
        await first.setup_workdir()
        await first.run(["mkfifo", "fifo"])
        proc = await first.launch_detached("read line < fifo; echo got $line; exit 7", name="worker")
    # The first connection is gone; the worker still waits on its fifo.
    async with RemoteHost(optio_sshd.ssh_config(), taskdir) as second:
        again = DetachedProcess(second, proc.state_dir)
        assert await again.returncode() is None
        await second.run(["/bin/sh", "-c", "echo hello > fifo"])
        assert await again.wait() == 7
        assert await second.fetch_bytes_from_host(again.output_path) == b"got hello\n"
