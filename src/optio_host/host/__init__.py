"""Hosts: where a task's work runs. ``make_host`` picks the right one."""

from __future__ import annotations

import os

from optio_host.errors import HostCommandError
from optio_host.host.interface import Host
from optio_host.host.local import LocalHost
from optio_host.host.remote import RemoteHost
from optio_host.process import ProcessHandle, RunResult, proc_wait
from optio_host.types import SSHConfig

__all__ = [
    "Host",
    "HostCommandError",
    "LocalHost",
    "ProcessHandle",
    "RemoteHost",
    "RunResult",
    "make_host",
    "proc_wait",
]


def make_host(
    *,
    ssh: SSHConfig | None = None,
    taskdir: str | os.PathLike[str] | None = None,
) -> LocalHost | RemoteHost:
    """``LocalHost(taskdir)`` when ``ssh`` is ``None``, else ``RemoteHost(ssh, taskdir)``.

    Without ``taskdir`` a private one is made at ``connect()`` and removed at
    ``disconnect()``; use the host as ``async with make_host(...) as host:``.
    """
    if ssh is None:
        return LocalHost(taskdir)
    if not isinstance(ssh, SSHConfig):
        raise TypeError(f"ssh must be an SSHConfig or None, not {type(ssh).__name__}")
    return RemoteHost(ssh, None if taskdir is None else os.fspath(taskdir))
