"""``optio-host tunnel``: keep a port forward to the host open until interrupted."""

from __future__ import annotations

import asyncio
import sys

import click

from optio_host.cli._runner import Interrupt, Interrupted, run_async
from optio_host.cli._target import describe_target, host_options
from optio_host.host import make_host
from optio_host.host.interface import Host
from optio_host.types import SSHConfig

__all__ = ["tunnel"]

#: How often the connection is checked, so a dead link ends the command instead of hanging.
CHECK_INTERVAL = 5.0


@click.command()
@host_options
@click.option(
    "--bind", default="127.0.0.1", show_default=True, metavar="ADDR", help="Local address to listen on."
)
@click.argument("remote_port", type=click.IntRange(1, 65535))
def tunnel(ssh_config: SSHConfig | None, bind: str, remote_port: int) -> int:
    """Forward a local port to REMOTE_PORT on the host's 127.0.0.1 until Ctrl-C.

    Prints the local port on stdout (alone on its line), then waits. Exits 0
    when interrupted, 255 if the connection drops. Without --ssh the port is
    already local and is printed as is.
    """
    return run_async(lambda interrupt: _tunnel(interrupt, ssh_config, bind, remote_port))


async def _keep_alive(host: Host, remote: bool) -> None:
    while True:
        await asyncio.sleep(CHECK_INTERVAL)
        if remote:
            await host.file_size("/")  # raises HostConnectionError once the link is gone


async def _tunnel(interrupt: Interrupt, ssh_config: SSHConfig | None, bind: str, remote_port: int) -> int:
    where = describe_target(ssh_config)
    async with make_host(ssh=ssh_config) as host:
        port = await host.establish_tunnel(remote_port, bind_addr=bind)
        print(port, flush=True)
        if ssh_config is not None:
            message = f"forwarding {bind}:{port} to 127.0.0.1:{remote_port} on {where}; Ctrl-C to stop"
        else:
            message = f"port {port} is on {where} already: nothing to forward; Ctrl-C to stop"
        print(message, file=sys.stderr, flush=True)
        try:
            await interrupt.race(_keep_alive(host, ssh_config is not None))
        except Interrupted:
            return 0  # the expected way to end a tunnel
    return 0
