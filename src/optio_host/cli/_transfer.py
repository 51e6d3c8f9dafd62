"""``optio-host put`` and ``optio-host get``: copy one file, with a progress bar and an optional checksum."""

from __future__ import annotations

import os
import posixpath
import re
import time

import click

from optio_host._streams import local_file_sha256
from optio_host.cli._display import human_rate, transfer_progress
from optio_host.cli._paths import host_path
from optio_host.cli._runner import CliError, Interrupt, run_async
from optio_host.cli._target import describe_target, host_options
from optio_host.host import make_host
from optio_host.host.base import checksum_mismatch
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


@click.command()
@host_options
@sha256_option
@click.argument("local", type=click.Path(dir_okay=False))
@click.argument("remote")
def put(ssh_config: SSHConfig | None, sha256: str | None, local: str, remote: str) -> int:
    """Copy the file LOCAL to REMOTE on the host.

    REMOTE may be a folder (or end with /): the file keeps its name. A relative
    REMOTE is relative to the remote home folder (this folder without --ssh).
    The target appears complete or not at all.
    """
    return run_async(lambda interrupt: _put(interrupt, ssh_config, sha256, local, remote))


@click.command()
@host_options
@sha256_option
@click.argument("remote")
@click.argument("local", type=click.Path())
def get(ssh_config: SSHConfig | None, sha256: str | None, remote: str, local: str) -> int:
    """Copy the file REMOTE on the host to LOCAL here.

    LOCAL may be a folder (or end with /): the file keeps its name. The local
    file appears complete (and verified, with --sha256) or not at all.
    """
    return run_async(lambda interrupt: _get(interrupt, ssh_config, sha256, remote, local))


async def _put(
    interrupt: Interrupt, ssh_config: SSHConfig | None, sha256: str | None, local: str, remote: str
) -> int:
    where = _prefix(ssh_config)
    size = os.path.getsize(local)
    async with make_host(ssh=ssh_config) as host:
        target = await host_path(host, remote, local=ssh_config is None)
        if remote.endswith("/") or (await host.run(["test", "-d", target], cwd="/")).exit_code == 0:
            target = posixpath.join(target, os.path.basename(local))
        started = time.monotonic()
        with transfer_progress(f"put {os.path.basename(local)}", size) as progress_cb:
            await interrupt.race(
                host.put_file_to_host(local, target, expected_sha256=sha256, progress_cb=progress_cb)
            )
    elapsed = time.monotonic() - started
    print(f"{local} -> {where}{target} ({human_rate(size, elapsed)})", flush=True)
    return 0


async def _get(
    interrupt: Interrupt, ssh_config: SSHConfig | None, sha256: str | None, remote: str, local: str
) -> int:
    where = _prefix(ssh_config)
    async with make_host(ssh=ssh_config) as host:
        source = await host_path(host, remote, local=ssh_config is None)
        size = await host.file_size(source)
        if size is None:
            raise CliError(f"{source}: no such file on {describe_target(ssh_config)}")
        target = os.path.abspath(local)
        if local.endswith("/") or os.path.isdir(target):
            target = os.path.join(target, posixpath.basename(source))
        started = time.monotonic()
        with transfer_progress(f"get {posixpath.basename(source)}", size) as progress_cb:
            # With a checksum, land in a temporary name and rename only once verified.
            landing = target if sha256 is None else temp_name_for(target)
            try:
                await interrupt.race(host.fetch_file_from_host(source, landing, progress_cb=progress_cb))
                if sha256 is not None:
                    actual = await local_file_sha256(landing)
                    if actual != sha256:
                        raise checksum_mismatch(f"{where}{source}", sha256, actual)
                    os.replace(landing, target)
            finally:
                if landing != target and os.path.exists(landing):
                    os.unlink(landing)
    elapsed = time.monotonic() - started
    print(f"{where}{source} -> {target} ({human_rate(size, elapsed)})", flush=True)
    return 0


def _prefix(ssh_config: SSHConfig | None) -> str:
    """``user@host:`` before a remote path in messages, nothing before a local one."""
    return "" if ssh_config is None else f"{describe_target(ssh_config)}:"
