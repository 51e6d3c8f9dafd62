"""Memory stays flat: large transfers in a fresh process peak far below the data size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

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
    outcome = _run_child(CHILD, spec)
    assert outcome["size"] == SIZE
    assert os.path.getsize(spec["back"]) == SIZE
    # About 50 MiB is the interpreter with its imports; the data itself must not show up.
    assert outcome["peak"] < 150 * 1024 * 1024, (
        f"peak RSS {outcome['peak'] / 2**20:.0f} MiB for {SIZE >> 20} MiB"
    )


DELIVERABLE_CHILD = r"""
import asyncio, json, sys
from optio_host import RemoteHost, SSHConfig
from optio_host.protocol import run_log_protocol_session
from optio_host.testing import RecordingContext
spec = json.loads(sys.argv[1])

async def main():
    saved = {}

    async def body(host, hook_ctx):
        await host.run(
            f"head -c {spec['size']} /dev/urandom > deliverables/big.bin && "
            "echo 'DELIVERABLE: deliverables/big.bin' >> optio.log && echo DONE >> optio.log",
            check=True,
        )

    async def on_file(hook_ctx, deliverable):
        saved["sha256"] = await deliverable.save(spec["out"])
        saved["size"] = deliverable.size

    async with RemoteHost(SSHConfig(**spec["ssh"]), spec["taskdir"]) as host:
        await run_log_protocol_session(host, RecordingContext(), body=body, on_deliverable_file=on_file)
        saved["remote_sha256"] = await host.file_sha256(host.workdir + "/deliverables/big.bin")
    with open("/proc/self/status") as status:
        saved["peak"] = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    print(json.dumps(saved))

asyncio.run(main())
"""


def test_a_1_gib_deliverable_from_a_remote_host_keeps_memory_under_100_mib(
    optio_sshd: SshServer, tmp_path: os.PathLike[str]
) -> None:
    size = 1024**3
    spec = {
        "ssh": {
            "host": optio_sshd.host,
            "user": optio_sshd.user,
            "key_path": optio_sshd.key_path,
            "port": optio_sshd.port,
            "known_hosts": optio_sshd.known_hosts,
            "host_key_policy": "strict",
        },
        "taskdir": f"{optio_sshd.scratch}/deliverable-memory-test",
        "out": os.path.join(tmp_path, "big.bin"),
        "size": size,
    }
    try:
        outcome = _run_child(DELIVERABLE_CHILD, spec)
        assert outcome["size"] == size == os.path.getsize(spec["out"])
        assert outcome["sha256"] == outcome["remote_sha256"]
        print(f"1 GiB deliverable saved from RemoteHost: VmHWM {outcome['peak'] / 2**20:.1f} MiB")
        assert outcome["peak"] < 100 * 1024 * 1024, f"peak RSS {outcome['peak'] / 2**20:.0f} MiB for 1 GiB"
    finally:
        subprocess.run(["rm", "-rf", spec["taskdir"], spec["out"]], check=False)


def _run_child(script: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter (so VmHWM is its own) and return its JSON outcome."""
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome
