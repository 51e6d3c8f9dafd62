"""``optio-host run``: one command on the host, output streamed, its exit code returned."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import click

from optio_host.cli._paths import host_path
from optio_host.cli._runner import EXIT_TIMEOUT, CliError, Interrupt, run_async
from optio_host.cli._stdio import stdin_chunks, stdin_to_forward
from optio_host.cli._target import describe_target, env_option, host_options
from optio_host.host import make_host
from optio_host.process import ProcessHandle
from optio_host.types import SSHConfig

__all__ = ["run"]


# Everything after CMD belongs to it, options included (``--`` is then optional).
@click.command(context_settings={"allow_interspersed_args": False})
@host_options
@click.option(
    "--cwd",
    metavar="DIR",
    help="Run in DIR. Default, as with ssh: the home folder on a remote host, the current folder here.",
)
@env_option
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S", help="Kill after S seconds."
)
@click.option("-n", "--no-stdin", is_flag=True, help="Do not forward stdin (like ssh -n).")
@click.argument("command", nargs=-1, required=True, metavar="-- CMD [ARG...]")
def run(
    ssh_config: SSHConfig | None,
    cwd: str | None,
    env: dict[str, str],
    timeout: float | None,
    no_stdin: bool,
    command: tuple[str, ...],
) -> int:
    """Run CMD with its arguments (passed verbatim, no shell) and exit with its exit code.

    Output is streamed as it comes, stderr to stderr. Standard input is
    forwarded to the command when it is a pipe or a file (not a terminal;
    -n not at all). Use `sh -c '...'` for shell syntax.
    """
    forward = not no_stdin and stdin_to_forward()
    return run_async(lambda interrupt: _run(interrupt, ssh_config, list(command), cwd, env, timeout, forward))


async def _pump(chunks: AsyncIterator[bytes] | None, sink: BinaryIO) -> None:
    if chunks is None:
        return
    async for chunk in chunks:
        sink.write(chunk)
        sink.flush()


async def _feed(handle: ProcessHandle) -> None:
    """Copy our stdin to the command's, then close it (the command sees end of file)."""
    writer: Any = handle.stdin
    try:
        async for chunk in stdin_chunks():
            writer.write(chunk)
            await writer.drain()
    except (BrokenPipeError, ConnectionError, OSError):
        return  # the command stopped reading (or ended): nothing more to give it
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _run(
    interrupt: Interrupt,
    ssh_config: SSHConfig | None,
    argv: list[str],
    cwd: str | None,
    env: dict[str, str],
    timeout: float | None,
    forward_stdin: bool,
) -> int:
    async with make_host(ssh=ssh_config) as host:
        directory = await host_path(host, cwd if cwd is not None else ".", local=ssh_config is None)
        if (await host.run(["test", "-d", directory], cwd="/")).exit_code != 0:
            raise CliError(f"{cwd or directory}: no such folder on {describe_target(ssh_config)}")
        try:
            handle = await host.launch_subprocess(
                argv, cwd=directory, env=env, merge_stderr=False, stdin=forward_stdin
            )
        except FileNotFoundError:
            raise CliError(f"{argv[0]}: command not found on {describe_target(ssh_config)}", 127) from None
        except PermissionError:
            raise CliError(f"{argv[0]}: permission denied (not executable?)", 126) from None

        async def complete() -> int:
            feeder = asyncio.ensure_future(_feed(handle)) if forward_stdin else None
            try:
                await asyncio.gather(
                    _pump(handle.stdout, sys.stdout.buffer), _pump(handle.stderr, sys.stderr.buffer)
                )
                return await handle.wait()
            finally:
                if feeder is not None:
                    feeder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeder

        try:
            code = await interrupt.race(asyncio.wait_for(complete(), timeout))
        except TimeoutError:
            await asyncio.shield(host.terminate_subprocess(handle, aggressive=True))
            raise CliError(
                f"timed out after {timeout:g} s; the command and its children were killed", EXIT_TIMEOUT
            ) from None
        finally:
            if handle.returncode is None:
                await asyncio.shield(host.terminate_subprocess(handle))
    # A command killed by a signal reports -N; shells report that as 128+N.
    return 128 - code if code < 0 else code
