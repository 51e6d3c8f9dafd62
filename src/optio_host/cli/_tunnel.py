"""``optio-host tunnel``: keep a port forward to the host open until interrupted."""

from __future__ import annotations

import asyncio
import sys

import click

from optio_host.cli._display import is_quiet
from optio_host.cli._runner import Interrupt, Interrupted, run_async
from optio_host.cli._target import describe_target, host_options
from optio_host.host import make_host
from optio_host.host.interface import Host
from optio_host.host.remote import RemoteHost
from optio_host.types import SSHConfig

__all__ = ["tunnel"]

#: How often the connection is checked, so a dead link ends the command instead of hanging.
CHECK_INTERVAL = 5.0


@click.command()
@host_options
@click.option(
    "--bind", default="127.0.0.1", show_default=True, metavar="ADDR", help="Local address to listen on."
)
@click.option(
    "--local-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Listen on this local port (like ssh -L PORT:...). Default: a free one, printed.",
)
@click.argument("remote_port", type=click.IntRange(1, 65535))
def tunnel(ssh_config: SSHConfig | None, bind: str, local_port: int | None, remote_port: int) -> int:
    """Forward a local port to REMOTE_PORT on the host's 127.0.0.1 until Ctrl-C.

    Prints the local port on stdout (alone on its line), then waits. Exits 0
    when interrupted, 255 if the connection drops. Without --ssh the port is
    already local and is printed as is.
    """
    if ssh_config is None and local_port not in (None, remote_port):
        raise click.UsageError("without --ssh the port is already local: --local-port would forward nothing")
    return run_async(lambda interrupt: _tunnel(interrupt, ssh_config, bind, local_port or 0, remote_port))


async def _keep_alive(host: Host, remote: bool) -> None:
    while True:
        await asyncio.sleep(CHECK_INTERVAL)
        if remote:
            await host.file_size("/")  # raises HostConnectionError once the link is gone


async def _tunnel(
    interrupt: Interrupt, ssh_config: SSHConfig | None, bind: str, local_port: int, remote_port: int
) -> int:
    where = describe_target(ssh_config)
    async with make_host(ssh=ssh_config) as host:
        if isinstance(host, RemoteHost):
            port = await host.establish_tunnel(remote_port, bind_addr=bind, local_port=local_port)
        else:
            port = await host.establish_tunnel(remote_port, bind_addr=bind)
        print(port, flush=True)
        if ssh_config is not None:
            message = f"forwarding {bind}:{port} to 127.0.0.1:{remote_port} on {where}; Ctrl-C to stop"
        else:
            message = f"port {port} is on {where} already: nothing to forward; Ctrl-C to stop"
        if not is_quiet():
            print(message, file=sys.stderr, flush=True)
        try:
            await interrupt.race(_keep_alive(host, ssh_config is not None))
        except Interrupted:
            return 0  # the expected way to end a tunnel
    return 0
