"""Memory stays flat: large transfers in a fresh process peak far below the data size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from optio_host.testing.sshd import SshServer

pytestmark = pytest.mark.timeout(240)

SIZE = 256 * 1024 * 1024

CHILD = r"""
import asyncio, json, sys
from optio_host import LocalHost, RemoteHost, SSHConfig
spec = json.loads(sys.argv[1])

async def main():
    remote = RemoteHost(SSHConfig(**spec["ssh"]), spec["taskdir"])
    local = LocalHost(spec["local_taskdir"])
    async with remote, local:
        await remote.setup_workdir()
        await local.setup_workdir()
        await remote.put_file_to_host(spec["source"], remote.workdir + "/big.bin")
        await remote.fetch_file_from_host(remote.workdir + "/big.bin", spec["back"])
        async for _chunk in remote.archive_workdir([]):
            await asyncio.sleep(0.01)  # a reader slower than the host: the backlog must stay bounded
        await local.restore_workdir(remote.archive_workdir([]))
        await remote.restore_workdir(local.archive_workdir([]))
        size = await remote.file_size(remote.workdir + "/big.bin")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    print(json.dumps({"peak": peak, "size": size}))

asyncio.run(main())
"""


def test_large_transfers_and_archives_keep_memory_flat(
    optio_sshd: SshServer, tmp_path: os.PathLike[str]
) -> None:
    source = os.path.join(tmp_path, "big.bin")
    with open(source, "wb") as handle:
        block = os.urandom(1024 * 1024)
        for index in range(SIZE // len(block)):
            handle.write(block[index:] + block[:index])  # incompressible, not repetitive
    spec = {
        "ssh": {
            "host": optio_sshd.host,
            "user": optio_sshd.user,
            "key_path": optio_sshd.key_path,
            "port": optio_sshd.port,
            "known_hosts": optio_sshd.known_hosts,
            "host_key_policy": "strict",
        },
        "taskdir": f"{optio_sshd.scratch}/memory-test",
        "local_taskdir": os.path.join(tmp_path, "local-task"),
        "source": source,
        "back": os.path.join(tmp_path, "back.bin"),
    }
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["size"] == SIZE
    assert os.path.getsize(spec["back"]) == SIZE
    # About 50 MiB is the interpreter with its imports; the data itself must not show up.
    assert outcome["peak"] < 150 * 1024 * 1024, (
        f"peak RSS {outcome['peak'] / 2**20:.0f} MiB for {SIZE >> 20} MiB"
    )
