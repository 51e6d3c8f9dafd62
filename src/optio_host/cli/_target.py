"""Which host a command works on: ``--ssh USER@HOST[:PORT]``, ``-p PORT``, ``-i KEY``, host-key options.

Also ``-q/--quiet``, which every subcommand takes with them. The same options may
come before the subcommand (``optio-host --ssh box run -- uname``):
``hoist_host_options`` moves them after it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import click

from optio_host.cli._display import set_quiet
from optio_host.quoting import is_env_name
from optio_host.types import HOST_KEY_POLICY_ENV, SSHConfig

__all__ = ["describe_target", "env_option", "hoist_host_options", "host_options", "parse_ssh_target"]


def parse_ssh_target(value: str) -> tuple[str, str, int]:
    """``(user, host, port)`` from ``[USER@]HOST[:PORT]``; ``user`` is ``""`` when absent.

    IPv6 addresses go in brackets when a port follows (``user@[::1]:2222``). A bare
    host name may be an alias from ``~/.ssh/config``; port 22 then leaves room for
    the alias's own ``Port``.
    """
    user, _, rest = value.rpartition("@")
    port_text = ""
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"{value!r}: an IPv6 address in brackets must look like [ADDR] or [ADDR]:PORT")
        port_text = after[1:]
        if after and not port_text:
            raise ValueError(f"{value!r}: missing port number after ':'")
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
        if not port_text:
            raise ValueError(f"{value!r}: missing port number after ':'")
    else:
        host = rest  # a name, or an IPv6 address without a port
    if not host or any(char.isspace() for char in value) or host.startswith("-"):
        raise ValueError(f"{value!r} is not USER@HOST[:PORT] or a host alias")
    if "@" in value and not user:
        raise ValueError(f"{value!r}: empty user name before '@'")
    port = 22
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{value!r}: port must be a number from 1 to 65535")
        port = int(port_text)
    return user, host, port


def describe_target(config: SSHConfig | None) -> str:
    """A short name of the host for messages: ``user@host[:port]``, or ``this machine``."""
    if config is None:
        return "this machine"
    user = f"{config.user}@" if config.user else ""
    port = f":{config.port}" if config.port != 22 else ""
    return f"{user}{config.host}{port}"


def _ssh_config(
    ssh: str | None, port: int | None, identity: str | None, known_hosts: str | None, accept_new: bool
) -> SSHConfig | None:
    if ssh is None:
        given = [name for name, value in (("-i", identity), ("--known-hosts", known_hosts)) if value]
        if port is not None:
            given.insert(0, "-p")
        if accept_new:
            given.append("--accept-new")
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply to a remote host: add --ssh USER@HOST")
        return None
    try:
        user, host, parsed_port = parse_ssh_target(ssh)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--ssh'") from None
    if port is not None:
        if parsed_port != 22 and parsed_port != port:
            raise click.UsageError(f"two ports: --ssh {ssh} and -p {port}; give one")
        parsed_port = port
    return SSHConfig(
        host=host,
        user=user,
        key_path=os.path.expanduser(identity) if identity else "",
        port=parsed_port,
        # None leaves the choice to OPTIO_HOST_KEY_POLICY (else strict), as SSHConfig documents.
        host_key_policy="accept-new" if accept_new else None,
        known_hosts=os.path.expanduser(known_hosts) if known_hosts else None,
    )


def host_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the host options and ``-q``; the command receives ``ssh_config`` instead of them."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        ssh: str | None,
        port: int | None,
        identity: str | None,
        known_hosts: str | None,
        accept_new: bool,
        quiet: bool,
        **kwargs: Any,
    ) -> Any:
        set_quiet(quiet)
        return func(*args, ssh_config=_ssh_config(ssh, port, identity, known_hosts, accept_new), **kwargs)

    options = [
        click.option(
            "--ssh",
            metavar="USER@HOST[:PORT]",
            help="Work on this host over SSH (a ~/.ssh/config alias works too). Default: this machine.",
        ),
        click.option(
            "-p",
            "--port",
            type=click.IntRange(1, 65535),
            metavar="PORT",
            help="SSH port (like ssh -p); the same as USER@HOST:PORT.",
        ),
        click.option(
            "-i",
            "--identity",
            metavar="KEY",
            # Not checked here: connecting checks it (KeyFileError), one message and exit 255 for
            # every bad key file (missing, a folder, unreadable, a public key, encrypted).
            help="Private key file. Default: keys from ~/.ssh/config or the ssh-agent.",
        ),
        click.option(
            "--known-hosts",
            metavar="FILE",
            type=click.Path(dir_okay=False),
            help="Trusted host keys. Default: ~/.ssh/known_hosts.",
        ),
        click.option(
            "--accept-new",
            is_flag=True,
            help=f"Trust and record a host key seen for the first time (a changed key is still "
            f"refused). Or set {HOST_KEY_POLICY_ENV}=accept-new.",
        ),
        click.option(
            "-q", "--quiet", is_flag=True, help="No progress and no summary lines; errors still go to stderr."
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _parse_env(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not equals or not is_env_name(name):
            raise click.BadParameter(f"{item!r} is not NAME=VALUE with NAME like [A-Za-z_][A-Za-z0-9_]*")
        env[name] = value
    return env


env_option = click.option(
    "--env",
    "env",
    metavar="NAME=VALUE",
    multiple=True,
    callback=_parse_env,
    help="Set an environment variable for the command (repeatable).",
)


#: The host options as they may appear before a subcommand: name -> whether a value follows.
_HOISTABLE = {
    "--ssh": True,
    "-p": True,
    "--port": True,
    "-i": True,
    "--identity": True,
    "--known-hosts": True,
    "--accept-new": False,
    "-q": False,
    "--quiet": False,
}


def hoist_host_options(argv: list[str], subcommands: set[str]) -> list[str]:
    """Move host options given before the subcommand to just after it (ssh habit: options first).

    ``--ssh box run -- uname`` becomes ``run --ssh box -- uname``. Anything else
    before the subcommand (``--help``, ``--version``, an unknown option) stays put.
    """
    moved: list[str] = []
    kept: list[str] = []
    index = 0
    while index < len(argv) and argv[index] not in subcommands and argv[index] != "--":
        arg = argv[index]
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        takes_value = _HOISTABLE.get(name)
        if takes_value is None:
            kept.append(arg)
        elif takes_value and "=" not in arg and index + 1 < len(argv):
            moved += [arg, argv[index + 1]]
            index += 1
        else:
            moved.append(arg)
        index += 1
    if index == len(argv) or argv[index] == "--" or not moved:
        return argv  # no subcommand to move them to: let click explain
    return [*kept, argv[index], *moved, *argv[index + 1 :]]
