"""Workdir snapshot benchmarks (issue 14): archive and restore vs ``tar`` + ``gzip -1``, both hosts.

Shapes: 20,000 files of 4 KiB; 256 MiB of log lines; 256 MiB of random bytes (``scale`` shrinks
them for ``--quick``). Anchors, run in the same process and alternating with ours:

- archive, local:   ``tar -cf - . | gzip -1 > /dev/null``                      (cwd: the workdir)
- restore, local:   ``gzip -dc < A | tar -xf -``                               (cwd: an empty folder)
- remote: the same pipelines run through ``ssh`` to the same sshd (archive output and restore input
  crossing the SSH connection, as ours do);
- info: the same with ``pigz -1`` / ``pigz -dc``.

Ours: ``host.archive_workdir([])`` read to the end, ``host.restore_workdir(iter_local_file(A))``
into an empty workdir. Both sides start from the same archive ``A`` (made by the anchor).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable

from optio_host import LocalHost, RemoteHost
from optio_host._streams import iter_local_file
from optio_host.testing.sshd import SshServer

MIB = 1024 * 1024
Add = Callable[[str, str, str, "float | None", str, "bool | None"], None]


def make_shapes(root: str, scale: float) -> dict[str, str]:
    """The three workdirs (made once, reused), as ``{shape: taskdir}``; each has ``workdir/``."""
    mib = round(256 * scale)
    shapes = {
        f"{int(20_000 * scale):,} small files": "small",
        f"{mib} MiB log lines": "logs",
        f"{mib} MiB random": "random",
    }
    made = {}
    for label, name in shapes.items():
        taskdir = os.path.join(root, f"shape-{name}")
        workdir = os.path.join(taskdir, "workdir")
        made[label] = taskdir
        if os.path.isdir(workdir):
            continue
        os.makedirs(workdir)
        {"small": _small, "logs": _logs, "random": _random}[name](workdir, scale)
        subprocess.run(["chmod", "-R", "a+rX", taskdir], check=True)
    return made


def _small(workdir: str, scale: float) -> None:
    block = os.urandom(2048)
    for index in range(int(20_000 * scale)):
        folder = os.path.join(workdir, f"d{index // 500:03d}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"f{index:05d}.txt"), "wb") as handle:
            handle.write(block[index % 1024 :] + block[: index % 1024] + b"%08d" % index * 256)


def _logs(workdir: str, scale: float) -> None:
    rnd = random.Random(1)
    target = int(256 * MIB * scale)
    with open(os.path.join(workdir, "app.log"), "w") as handle:
        written = 0
        while written < target:
            lines = "".join(
                f"2026-11-29T{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}."
                f"{rnd.randrange(1000):03d} INFO worker-{rnd.randrange(16)} item {rnd.randrange(10**9)} "
                f"took {rnd.random():.4f}s status=ok\n"
                for _ in range(1000)
            )
            handle.write(lines)
            written += len(lines)


def _random(workdir: str, scale: float) -> None:
    with open(os.path.join(workdir, "blob.bin"), "wb") as handle:
        for _ in range(int(256 * scale)):
            handle.write(os.urandom(MIB))


def _ssh(server: SshServer) -> list[str]:
    """ssh to the test sshd over one shared master connection: like ours, no handshake per run."""
    return [
        "-o", "ControlMaster=auto", "-o", f"ControlPath={server.scratch}/../cm-%C", "-o", "ControlPersist=600",
        "-p", str(server.port), "-i", server.key_path, "-o", f"UserKnownHostsFile={server.known_hosts}",
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", f"{server.user}@{server.host}",
    ]  # fmt: skip


def _sh(command: str, *, stdin: str | None = None, stdout: str | None = None) -> Callable[[], object]:
    def run() -> None:
        with (
            open(stdin or os.devnull, "rb") as source,
            open(stdout or os.devnull, "wb") as sink,
        ):
            subprocess.run(["/bin/sh", "-c", command], stdin=source, stdout=sink, check=True)

    return run


async def _pair(
    ours: Callable[[], Awaitable[object]],
    anchor: Callable[[], object],
    runs: int,
    reset: Callable[[], Awaitable[object]],
) -> tuple[float, float]:
    """Medians of ``runs`` timings each, alternating which goes first; ``reset`` off the clock."""
    mine, theirs = [], []
    for index in range(runs):
        for which in (0, 1) if index % 2 == 0 else (1, 0):
            await reset()
            await asyncio.to_thread(subprocess.run, ["sync"], check=True)
            started = time.perf_counter()
            if which == 0:
                await ours()
                mine.append(time.perf_counter() - started)
            else:
                await asyncio.to_thread(anchor)
                theirs.append(time.perf_counter() - started)
    return statistics.median(mine), statistics.median(theirs)


async def bench_snapshots(server: SshServer, scale: float, runs: int, add: Add) -> None:
    print(f"workdir snapshots (scale {scale}), {runs} interleaved runs", flush=True)
    shapes = await asyncio.to_thread(make_shapes, server.scratch, scale)
    ssh = " ".join(f"'{word}'" for word in ["ssh", *_ssh(server)])
    await asyncio.to_thread(_sh(f"{ssh} true"))
    restore_task = os.path.join(server.scratch, "restore-task")
    anchor_dir = os.path.join(server.scratch, "restore-anchor")
    for label, taskdir in shapes.items():
        workdir = os.path.join(taskdir, "workdir")
        archive = os.path.join(server.scratch, f"{os.path.basename(taskdir)}.tgz")
        await asyncio.to_thread(_sh(f"cd '{workdir}' && tar -cf - . | gzip -1", stdout=archive))
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(workdir) for f in fs)
        local, remote = LocalHost(taskdir), RemoteHost(server.ssh_config(), taskdir)
        await remote.connect()
        try:
            await _archive_rows(label, size, local, remote, workdir, ssh, runs, add)
            await _restore_rows(label, size, archive, server, restore_task, anchor_dir, ssh, runs, add)
        finally:
            await remote.disconnect()


async def _drain(host: LocalHost | RemoteHost) -> None:
    async for _ in host.archive_workdir([]):
        pass


async def _nothing() -> None:
    return None


def _row(add: Add, figure: str, size: int, ours: float, anchor: float, target: bool) -> None:
    rate = size / MIB
    add(
        figure,
        f"{ours:.2f} s ({rate / ours:.0f} MiB/s)",
        f"{anchor:.2f} s",
        anchor / ours,
        ">= 0.9x" if target else "(info)",
        anchor / ours >= 0.9 if target else None,
    )


async def _archive_rows(
    label: str, size: int, local: LocalHost, remote: RemoteHost, workdir: str, ssh: str, runs: int, add: Add
) -> None:
    for codec, target in (("gzip", True), ("pigz", False)):
        anchor = f"cd '{workdir}' && tar -cf - . | {codec} -1"
        ours, theirs = await _pair(lambda: _drain(local), _sh(anchor), runs, _nothing)
        _row(add, f"archive {label}, local vs `tar -cf - . \\| {codec} -1`", size, ours, theirs, target)
        remote_anchor = f"{ssh} \"cd '{workdir}' && tar -cf - . | {codec} -1\""
        ours, theirs = await _pair(lambda: _drain(remote), _sh(remote_anchor), runs, _nothing)
        _row(add, f"archive {label}, remote vs the same through `ssh` ({codec})", size, ours, theirs, target)


async def _restore_rows(
    label: str,
    size: int,
    archive: str,
    server: SshServer,
    task: str,
    anchor_dir: str,
    ssh: str,
    runs: int,
    add: Add,
) -> None:
    async def reset() -> None:
        for folder in (os.path.join(task, "workdir"), anchor_dir):
            await asyncio.to_thread(shutil.rmtree, folder, True)
            os.makedirs(folder)
        subprocess.run(["chown", "-R", f"{server.user}:", task, anchor_dir], check=False)

    local = LocalHost(task)
    async with RemoteHost(server.ssh_config(), task) as remote:
        for codec, target in (("gzip", True), ("pigz", False)):
            anchor = f"cd '{anchor_dir}' && {codec} -dc | tar -xf -"
            ours, theirs = await _pair(
                lambda: local.restore_workdir(iter_local_file(archive)),
                _sh(anchor, stdin=archive),
                runs,
                reset,
            )
            _row(add, f"restore {label}, local vs `{codec} -dc \\| tar -xf -`", size, ours, theirs, target)
            remote_anchor = f"{ssh} \"cd '{anchor_dir}' && {codec} -dc | tar -xf -\""
            ours, theirs = await _pair(
                lambda: remote.restore_workdir(iter_local_file(archive)),
                _sh(remote_anchor, stdin=archive),
                runs,
                reset,
            )
            _row(
                add,
                f"restore {label}, remote vs the same through `ssh` ({codec})",
                size,
                ours,
                theirs,
                target,
            )
