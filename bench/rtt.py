"""Transfers and snapshots at 50 ms round trip, vs OpenSSH ``sftp`` and ``scp`` (issue 14).

Needs root (a network namespace with an sshd behind a veth link, from ``tests/_netns.py``). This
kernel has no ``sch_netem``: the delay comes from ``DelayRelay``, a TCP relay on this machine's end
of the link that holds every chunk back 25 ms each way; it runs in a process of its own, and every
client (ours, sftp, scp) connects through it.

    PYTHONPATH=src .venv/bin/python bench/rtt.py [--size-mib 256] [--rtt-ms 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests._netns import NetnsLab  # (run from the repository root)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from optio_host import RemoteHost
from optio_host._streams import iter_local_file
from snapshots import _logs  # (the bench folder is not a package)

MIB = 1024 * 1024


class RelayProcess:
    """A ``DelayRelay`` in a process of its own: the link's work competes neither with the client's
    event loop nor for its GIL (in a thread it did both, and capped what we measured)."""

    _CODE = (
        "import asyncio, sys\n"
        "from tests._netns import DelayRelay\n"
        "async def main():\n"
        "    relay = DelayRelay(sys.argv[1], (sys.argv[2], int(sys.argv[3])))\n"
        "    relay.delay = float(sys.argv[4])\n"
        "    print(await relay.start(), flush=True)\n"
        "    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)\n"
        "    await relay.close()\n"
        "asyncio.run(main())\n"
    )

    def __init__(self, listen: str, target: tuple[str, int], delay: float) -> None:
        self._args = [listen, target[0], str(target[1]), str(delay)]
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> int:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._process = subprocess.Popen(
            [sys.executable, "-c", self._CODE, *self._args],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        return int(self._process.stdout.readline())

    def close(self) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # its cue to close the relay and exit
            self._process.wait(20)


def openssh(kind: str, port: int, known_hosts: str, key: str) -> list[str]:
    return [
        kind,
        "-q",
        "-P",
        str(port),
        "-i",
        key,
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "BatchMode=yes",
    ]


async def timed(label: str, size: int, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    if label.endswith("ours"):
        await action()  # type: ignore[misc]
    else:
        await asyncio.to_thread(action)
    seconds = time.perf_counter() - started
    print(f"  {label:<44} {seconds:6.2f} s  {size / MIB / seconds:6.1f} MiB/s", flush=True)
    return seconds


async def main(args: argparse.Namespace) -> None:
    size = args.size_mib * MIB
    scratch = tempfile.mkdtemp(prefix="optio-rtt-")
    lab = NetnsLab().start()
    relay = RelayProcess(lab.local_address, (lab.address, lab.sshd.port), args.rtt_ms / 2000)
    try:
        port = relay.start()
        known_hosts = os.path.join(scratch, "known_hosts")
        key_type, key = lab.sshd.host_public_key().split()[:2]
        with open(known_hosts, "w") as handle:
            handle.write(f"[{lab.local_address}]:{port} {key_type} {key}\n")
        config = dataclasses.replace(
            lab.sshd.ssh_config(), host=lab.local_address, port=port, known_hosts=known_hosts
        )
        source = os.path.join(scratch, "source.bin")
        with open(source, "wb") as handle:
            for _ in range(args.size_mib):
                handle.write(os.urandom(MIB))
        archive = os.path.join(scratch, "snapshot.tgz")
        subprocess.run(f"tar -cf - -C {scratch} source.bin | gzip -1 > {archive}", shell=True, check=True)
        logs = os.path.join(scratch, "logs")
        os.makedirs(logs)
        _logs(logs, args.size_mib / 256)
        logs_archive = os.path.join(scratch, "logs.tgz")
        subprocess.run(f"tar -cf - -C {logs} . | gzip -1 > {logs_archive}", shell=True, check=True)
        remote = f"{lab.sshd.scratch}/target.bin"
        user_at = f"{lab.sshd.user}@{lab.local_address}"
        ssh_key = lab.sshd.key_path
        print(f"{args.rtt_ms} ms RTT (user-space relay), {args.size_mib} MiB of random bytes", flush=True)
        async with RemoteHost(config, f"{lab.sshd.scratch}/task") as host:
            await host.setup_workdir()
            rows = {
                "put, ours": lambda: host.put_file_to_host(source, remote),
                "put, sftp": lambda: sftp(port, known_hosts, ssh_key, user_at, f"put {source} {remote}"),
                "put, scp": lambda: subprocess.run(
                    [*openssh("scp", port, known_hosts, ssh_key), source, f"{user_at}:{remote}"], check=True
                ),
                "get, ours": lambda: host.fetch_file_from_host(remote, os.path.join(scratch, "back.bin")),
                "get, sftp": lambda: sftp(port, known_hosts, ssh_key, user_at, f"get {remote} {scratch}/b2"),
                "get, scp": lambda: subprocess.run(
                    [*openssh("scp", port, known_hosts, ssh_key), f"{user_at}:{remote}", f"{scratch}/b3"],
                    check=True,
                ),
            }
            anchor_dir = f"{lab.sshd.scratch}/anchor"
            ssh = openssh("ssh", port, known_hosts, ssh_key)
            ssh[2] = "-p"  # (ssh spells the port option in lower case)
            for shape, tgz in (("random", archive), ("log lines", logs_archive)):
                rows |= {
                    f"restore ({shape}), ours": lambda tgz=tgz: host.restore_workdir(iter_local_file(tgz)),
                    f"restore ({shape}), ssh gzip -dc | tar -x": lambda tgz=tgz: through_ssh(
                        ssh,
                        user_at,
                        f"rm -rf {anchor_dir} && mkdir {anchor_dir} && cd {anchor_dir} && gzip -dc | tar -xf -",
                        tgz,
                    ),
                    f"archive ({shape}), ours": lambda: drain(host),
                    f"archive ({shape}), ssh tar -c | gzip -1": lambda: through_ssh(
                        ssh, user_at, f"cd {anchor_dir} && tar -cf - . | gzip -1", None
                    ),
                }
            times: dict[str, list[float]] = {label: [] for label in rows}
            for _ in range(args.runs):  # every row once per round, so noise spreads over all of them
                for label, action in rows.items():
                    times[label].append(await timed(label, size, action))
            print(f"medians of {args.runs} round(s):")
            for label, seconds in times.items():
                middle = statistics.median(seconds)
                print(f"  {label:<44} {middle:6.2f} s  {size / MIB / middle:6.1f} MiB/s", flush=True)
            await host.cleanup_taskdir(True)
    finally:
        relay.close()
        lab.close()
        shutil.rmtree(scratch, ignore_errors=True)


def sftp(port: int, known_hosts: str, key: str, user_at: str, batch: str) -> None:
    subprocess.run(
        [*openssh("sftp", port, known_hosts, key), "-b", "-", user_at], input=batch.encode(), check=True
    )


def through_ssh(ssh: list[str], user_at: str, command: str, stdin: str | None) -> None:
    with open(stdin or os.devnull, "rb") as source, open(os.devnull, "wb") as sink:
        subprocess.run([*ssh, user_at, command], stdin=source, stdout=sink, check=True)


async def drain(host: RemoteHost) -> None:
    async for _ in host.archive_workdir([]):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rtt-ms", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="rounds over every row (default 3)")
    asyncio.run(main(parser.parse_args()))
