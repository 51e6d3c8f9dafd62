"""What ``~/.ssh/config`` says about an ``SSHConfig``: the real host and port, known_hosts, policy.

asyncssh applies the config itself when it connects; this module reads the
same file the same way (asyncssh's own parser) so that messages can name the
host and port actually dialled, and so that ``UserKnownHostsFile`` and
``StrictHostKeyChecking`` (which asyncssh does not act on) feed our host-key
policy.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from asyncssh.config import SSHClientConfig
from asyncssh.config import SSHConfig as _ParsedConfig

from optio_host.types import SSHConfig, effective_host_key_policy

__all__ = ["Endpoint", "describe", "resolve"]

_DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class _ClientConfig(SSHClientConfig):
    """asyncssh's client config parser, also keeping ``StrictHostKeyChecking``."""

    _handlers = {  # noqa: RUF012 - extends the parent's table, never mutated
        **SSHClientConfig._handlers,
        "stricthostkeychecking": ("StrictHostKeyChecking", _ParsedConfig._set_string),
    }


@dataclass(frozen=True)
class Endpoint:
    """Where an ``SSHConfig`` leads once ``~/.ssh/config`` is applied."""

    host: str
    port: int
    user: str
    #: Files read for trusted keys; new keys are recorded in the first.
    known_hosts: tuple[str, ...]
    policy: str

    @property
    def record_to(self) -> str:
        return self.known_hosts[0]


def _parsed(config: SSHConfig) -> _ClientConfig | None:
    path = Path("~", ".ssh", "config").expanduser()
    if not os.access(path, os.R_OK):
        return None
    try:
        parsed = _ClientConfig.load(
            None,
            [path],
            False,
            False,
            False,
            getpass.getuser(),
            config.user or (),
            config.host,
            config.port if config.port != 22 else (),
        )
    except Exception:  # an unreadable config: asyncssh reports it when connecting
        return None
    return parsed if isinstance(parsed, _ClientConfig) else None


def _address(config: SSHConfig, parsed: _ClientConfig | None) -> tuple[str, int, str]:
    if parsed is None:
        return config.host, config.port, config.user
    host = str(parsed.get("Hostname", config.host))
    port = parsed.get("Port", 22) if config.port == 22 else config.port
    user = config.user or str(parsed.get("User", "") or "")
    return host, int(port) if isinstance(port, int) else config.port, user


def resolve(config: SSHConfig) -> Endpoint:
    """Apply ``~/.ssh/config`` (HostName, Port, User, UserKnownHostsFile, StrictHostKeyChecking)."""
    parsed = _parsed(config)

    def get(option: str, default: object) -> object:
        return parsed.get(option, default) if parsed is not None else default

    host, port, user = _address(config, parsed)
    if config.known_hosts:
        files: tuple[str, ...] = (config.known_hosts,)
    else:
        listed = get("UserKnownHostsFile", None)
        files = tuple(str(item) for item in listed) if isinstance(listed, list) and listed else ()
        files = files or (_DEFAULT_KNOWN_HOSTS,)
    strict = get("StrictHostKeyChecking", None)
    policy = effective_host_key_policy(config, str(strict) if strict else None)
    return Endpoint(host, port, user, tuple(os.path.expanduser(item) for item in files), policy)


def describe(config: SSHConfig) -> str:
    """``user@host:port`` for messages; an alias also names where it leads: ``box (10.0.0.5:2222)``."""
    host, port, user = _address(config, _parsed(config))
    prefix = f"{user}@" if user else ""
    if (host, port) == (config.host, config.port):
        return f"{prefix}{config.host}:{config.port}"
    where = f"[{host}]" if ":" in host else host
    return f"{prefix}{config.host} ({where}:{port})"
