"""``optio-host run``: one command on the host, output streamed, its exit code returned."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import BinaryIO

import click

from optio_host.cli._paths import host_path
from optio_host.cli._runner import EXIT_TIMEOUT, CliError, Interrupt, run_async
from optio_host.cli._stdio import stdin_chunks, stdin_to_forward
from optio_host.cli._target import describe_target, env_option, host_options
from optio_host.errors import CommandTimeout, ProgramNotExecutable, ProgramNotFound
from optio_host.host import make_host
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


def _write_to(sink: BinaryIO) -> Callable[[bytes], None]:
    def write(chunk: bytes) -> None:
        sink.write(chunk)
        sink.flush()

    return write


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
        where = describe_target(ssh_config)
        directory = await host_path(host, cwd if cwd is not None else ".", local=ssh_config is None)
        if (await host.run(["test", "-d", directory], cwd="/")).exit_code != 0:
            raise CliError(f"{cwd or directory}: no such folder on {where}")
        try:
            result = await interrupt.race(
                host.run(
                    argv,
                    cwd=directory,
                    env=env,
                    input=stdin_chunks() if forward_stdin else None,
                    timeout=timeout,
                    on_stdout=_write_to(sys.stdout.buffer),
                    on_stderr=_write_to(sys.stderr.buffer),
                )
            )
        except ProgramNotFound:
            raise CliError(f"{argv[0]}: command not found on {where}", 127) from None
        except ProgramNotExecutable:
            raise CliError(f"{argv[0]}: permission denied (not executable?)", 126) from None
        except CommandTimeout:
            raise CliError(
                f"timed out after {timeout:g} s; the command and its children were killed", EXIT_TIMEOUT
            ) from None
    # A command killed by a signal reports -N; shells report that as 128+N.
    code = result.exit_code
    return 128 - code if code < 0 else code
