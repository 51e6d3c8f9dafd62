"""Deliverable.save() against fetch_file_from_host on the same remote file (ratio, not absolutes).

Usage (from the repository root):

    .venv/bin/python bench/deliverables.py            # 512 MiB, 5 interleaved runs each
    .venv/bin/python bench/deliverables.py --quick    # 64 MiB, 3 runs

A private OpenSSH sshd on 127.0.0.1 serves a RemoteHost. The file is written
once on the host; each run saves it through a session's ``on_deliverable_file``
(``save()``: open-then-verify, stream, SHA-256, atomic rename) and, interleaved,
through ``host.fetch_file_from_host`` (stream, atomic rename, no hash). The
target is ``save`` at >= 0.9x the throughput of the fetch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time

from optio_host import RemoteHost
from optio_host.context import HookContext
from optio_host.protocol import Deliverable, run_log_protocol_session
from optio_host.testing.context import RecordingContext
from optio_host.testing.sshd import SshServer

MIB = 1024 * 1024


async def timed_save(host: RemoteHost, target: str) -> float:
    elapsed: list[float] = []

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        started = time.perf_counter()
        await deliverable.save(target)
        elapsed.append(time.perf_counter() - started)

    async def body(host: RemoteHost, hook_ctx: HookContext) -> None:
        await host.run("echo 'DELIVERABLE: deliverables/big.bin' >> optio.log; echo DONE >> optio.log")

    await run_log_protocol_session(host, RecordingContext(), body=body, on_deliverable_file=on_file)  # type: ignore[arg-type]
    return elapsed[0]


async def timed_fetch(host: RemoteHost, target: str) -> float:
    started = time.perf_counter()
    await host.fetch_file_from_host(host.workdir + "/deliverables/big.bin", target)
    return time.perf_counter() - started


async def run(server: SshServer, size: int, runs: int, scratch: str) -> None:
    async with RemoteHost(server.ssh_config(), f"{server.scratch}/bench-deliverables") as host:
        await host.setup_workdir()
        await host.run(
            f"mkdir -p deliverables && head -c {size} /dev/urandom > deliverables/big.bin", check=True
        )
        saves: list[float] = []
        fetches: list[float] = []
        target = os.path.join(scratch, "out.bin")
        for _ in range(runs):
            saves.append(await timed_save(host, target))
            fetches.append(await timed_fetch(host, target))
        await host.cleanup_taskdir(True)
    save, fetch = statistics.median(saves), statistics.median(fetches)
    ratio = fetch / save  # throughput of save relative to fetch
    verdict = "ok" if ratio >= 0.9 else "MISSED"
    print(f"{size // MIB} MiB, median of {runs}:")
    print(f"  Deliverable.save()        {size / MIB / save:7.1f} MiB/s ({save:.2f} s)")
    print(f"  fetch_file_from_host()    {size / MIB / fetch:7.1f} MiB/s ({fetch:.2f} s)")
    print(f"  save / fetch throughput   {ratio:.2f}x (target >= 0.9x) {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64 MiB, 3 runs")
    args = parser.parse_args()
    size, runs = (64 * MIB, 3) if args.quick else (512 * MIB, 5)
    scratch = tempfile.mkdtemp(prefix="optio-bench-")
    try:
        with SshServer() as server:
            asyncio.run(run(server, size, runs, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
