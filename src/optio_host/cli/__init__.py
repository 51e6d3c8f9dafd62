"""The ``optio-host`` command: run commands, move files, forward ports and run sessions on a host.

Every subcommand works on this machine by default and on a remote host with
``--ssh USER@HOST[:PORT]`` (``-p PORT``, ``-i KEY``, ``--known-hosts FILE``,
``--accept-new``, ``-q``). Options go after the subcommand (the host options may
also come before it), a command after ``--``::

    optio-host run --ssh me@box -- uname -a
    optio-host --ssh me@box run -- uname -a
    optio-host demo

Exit codes: the command's own for ``run`` (124 on timeout), 0/1 otherwise,
2 for usage errors (a folder without ``-r`` too), 3 when ``session`` saw DONE
but skipped a deliverable, 124 when ``session --timeout`` ran out, 130 after
Ctrl-C, 255 when the host cannot be reached (like ssh) or the ``-i`` key file
cannot be used. Errors are one line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from optio_host.cli._run import run
from optio_host.cli._runner import EXIT_USAGE, set_time_limit
from optio_host.cli._session import demo, session
from optio_host.cli._target import hoist_host_options
from optio_host.cli._transfer import get, put
from optio_host.cli._tunnel import tunnel

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="optio-host", prog_name="optio-host")
def cli() -> None:
    """Run work on this machine or over SSH: commands, files, port forwards, log-protocol sessions.

    The host options (--ssh, -p, -i, --known-hosts, --accept-new, -q) go after
    the subcommand, or before it: `optio-host --ssh me@box run -- uname`.
    """


def _limit_session(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    set_time_limit(value)


# Wired here, not in _session.py: the limit applies to the whole run (uploads, worker, fetches).
session.params.insert(
    0,
    click.Option(
        ["--timeout"],
        type=click.FloatRange(min=0, min_open=True),
        metavar="S",
        expose_value=False,
        callback=_limit_session,
        help="Stop the session after S seconds (the worker and its children too) and exit 124.",
    ),
)

for _command in (run, put, get, session, tunnel, demo):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the command line and exit with its code."""
    args = hoist_host_options(list(argv) if argv is not None else sys.argv[1:], set(cli.commands))
    try:
        code = cli.main(args=args, prog_name="optio-host", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "optio-host"
        message = " ".join(exc.format_message().split())
        print(f"{where}: {message} (see '{where} --help')", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        print(f"optio-host: {' '.join(exc.format_message().split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
