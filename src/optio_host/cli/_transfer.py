"""``optio-host put`` and ``optio-host get``: copy files and folders, with progress and an optional checksum.

``-`` as the local file is stdin (``put``) or stdout (``get``). ``-r`` copies a
folder with everything under it: names, bytes and permission bits; symbolic
links are skipped and named on stderr. As with ``scp -r`` and ``cp -r``, when the
target is an existing folder the copy goes inside it (``put -r photos box-dir``
gives ``box-dir/photos``); otherwise the target is created as the copy.
"""

from __future__ import annotations

import os
import posixpath
import re
import time

import click

from optio_host._streams import Sha256Tap, local_file_sha256
from optio_host.cli._display import human_rate, is_quiet, transfer_progress
from optio_host.cli._paths import host_path
from optio_host.cli._runner import EXIT_USAGE, CliError, Interrupt, run_async
from optio_host.cli._stdio import STDIO, stdin_chunks, write_stdout
from optio_host.cli._target import describe_target, host_options
from optio_host.cli._tree import get_tree, put_tree
from optio_host.host import make_host
from optio_host.host.base import checksum_mismatch
from optio_host.host.interface import Host
from optio_host.paths import temp_name_for
from optio_host.types import SSHConfig

__all__ = ["get", "put"]

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _check_sha256(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _SHA256.fullmatch(value):
        raise click.BadParameter("must be 64 hexadecimal digits (a SHA-256 digest)")
    return value.lower() if value else None


sha256_option = click.option(
    "--sha256",
    metavar="HEX",
    callback=_check_sha256,
    help="Expected SHA-256 of the file; on a mismatch the target is left untouched.",
)
recursive_option = click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="Copy a folder and everything in it (into TARGET if it is a folder).",
)


@click.command()
@host_options
@sha256_option
@recursive_option
@click.argument("local", type=click.Path())
@click.argument("remote")
def put(ssh_config: SSHConfig | None, sha256: str | None, recursive: bool, local: str, remote: str) -> int:
    """Copy the file LOCAL (- for stdin) to REMOTE on the host.

    REMOTE may be a folder (or end with /): the file keeps its name. A relative
    REMOTE is relative to the remote home folder (this folder without --ssh).
    The target appears complete or not at all. With -r, LOCAL is a folder.
    """
    if recursive and (local == STDIO or sha256):
        raise click.UsageError("-r copies a folder: it takes neither '-' nor --sha256")
    if not recursive and local != STDIO and os.path.isdir(local):
        raise click.UsageError(f"{local} is a folder on this machine: add -r to copy it")
    return run_async(lambda interrupt: _put(interrupt, ssh_config, sha256, recursive, local, remote))


@click.command()
@host_options
@sha256_option
@recursive_option
@click.argument("remote")
@click.argument("local", type=click.Path())
def get(ssh_config: SSHConfig | None, sha256: str | None, recursive: bool, remote: str, local: str) -> int:
    """Copy the file REMOTE on the host to LOCAL here (- for stdout).

    LOCAL may be a folder (or end with /): the file keeps its name. The local
    file appears complete (and verified, with --sha256) or not at all; on
    stdout, a checksum mismatch is reported after the bytes (exit code 1).
    With -r, REMOTE is a folder.
    """
    if recursive and (local == STDIO or sha256):
        raise click.UsageError("-r copies a folder: it takes neither '-' nor --sha256")
    return run_async(lambda interrupt: _get(interrupt, ssh_config, sha256, recursive, remote, local))


async def _is_dir(host: Host, path: str) -> bool:
    return (await host.run(["test", "-d", path], cwd="/")).exit_code == 0


def _report(text: str) -> None:
    """The summary line of a copy (not with ``-q``, nor when stdout carries the data)."""
    if not is_quiet():
        print(text, flush=True)


async def _put(
    interrupt: Interrupt,
    ssh_config: SSHConfig | None,
    sha256: str | None,
    recursive: bool,
    local: str,
    remote: str,
) -> int:
    where = _prefix(ssh_config)
    async with make_host(ssh=ssh_config) as host:
        target = await host_path(host, remote, local=ssh_config is None)
        into_folder = remote.endswith("/") or await _is_dir(host, target)
        started = time.monotonic()
        if recursive:
            if into_folder:
                target = posixpath.join(target, os.path.basename(os.path.abspath(local)))
            size = await interrupt.race(put_tree(host, local, target))
        elif local == STDIO:
            if into_folder:
                raise CliError(f"put -: {where}{target} is a folder; name the file to write")
            counter = Sha256Tap()
            await interrupt.race(
                host.put_file_to_host(counter.tap(stdin_chunks()), target, expected_sha256=sha256)
            )
            size = counter.count
        else:
            if into_folder:
                target = posixpath.join(target, os.path.basename(local))
            size = os.path.getsize(local)
            with transfer_progress(f"put {os.path.basename(local)}", size) as progress_cb:
                await interrupt.race(
                    host.put_file_to_host(local, target, expected_sha256=sha256, progress_cb=progress_cb)
                )
    source = "stdin" if local == STDIO else local
    _report(f"{source} -> {where}{target} ({human_rate(size, time.monotonic() - started)})")
    return 0


async def _get(
    interrupt: Interrupt,
    ssh_config: SSHConfig | None,
    sha256: str | None,
    recursive: bool,
    remote: str,
    local: str,
) -> int:
    where = _prefix(ssh_config)
    async with make_host(ssh=ssh_config) as host:
        source = await host_path(host, remote, local=ssh_config is None)
        started = time.monotonic()
        target = os.path.abspath(local)
        if recursive:
            if not await _is_dir(host, source):
                raise CliError(f"{source}: no such folder on {describe_target(ssh_config)}")
            if os.path.isdir(target):
                target = os.path.join(target, posixpath.basename(source.rstrip("/")) or "root")
            size = await interrupt.race(get_tree(host, source, target))
        else:
            if await _is_dir(host, source):
                # A usage error like put's, found only once the host was asked.
                raise CliError(
                    f"{source} is a folder on {describe_target(ssh_config)}: add -r to copy it", EXIT_USAGE
                )
            found = await host.file_size(source)
            if found is None:
                raise CliError(f"{source}: no such file on {describe_target(ssh_config)}")
            size = found
            if local == STDIO:
                await interrupt.race(_to_stdout(host, source, sha256, where))
                return 0
            if local.endswith("/") or os.path.isdir(target):
                target = os.path.join(target, posixpath.basename(source))
            await interrupt.race(_to_file(host, source, target, size, sha256, where))
    _report(f"{where}{source} -> {target} ({human_rate(size, time.monotonic() - started)})")
    return 0


async def _to_file(host: Host, source: str, target: str, size: int, sha256: str | None, where: str) -> None:
    with transfer_progress(f"get {posixpath.basename(source)}", size) as progress_cb:
        # With a checksum, land in a temporary name and rename only once verified.
        landing = target if sha256 is None else temp_name_for(target)
        try:
            await host.fetch_file_from_host(source, landing, progress_cb=progress_cb)
            if sha256 is not None:
                actual = await local_file_sha256(landing)
                if actual != sha256:
                    raise checksum_mismatch(f"{where}{source}", sha256, actual)
                os.replace(landing, target)
        finally:
            if landing != target and os.path.exists(landing):
                os.unlink(landing)


async def _to_stdout(host: Host, source: str, sha256: str | None, where: str) -> None:
    """Stream the file to stdout through ``cat`` on the host (the same way on both hosts)."""
    handle = await host.launch_subprocess(["cat", "--", source], cwd="/", merge_stderr=False)
    tap = Sha256Tap()
    try:
        async for chunk in tap.tap(handle.stdout):
            write_stdout(chunk)
        errors = b"".join([chunk async for chunk in handle.stderr]) if handle.stderr is not None else b""
        code = await handle.wait()
    finally:
        await handle.kill()  # ended already on success: this only closes it
    if code != 0:
        raise CliError(f"{where}{source}: {errors.decode(errors='replace').strip() or f'cat exit {code}'}")
    if sha256 is not None and tap.hexdigest() != sha256:
        raise checksum_mismatch(f"{where}{source}", sha256, tap.hexdigest())


def _prefix(ssh_config: SSHConfig | None) -> str:
    """``user@host:`` before a remote path in messages, nothing before a local one."""
    return "" if ssh_config is None else f"{describe_target(ssh_config)}:"
