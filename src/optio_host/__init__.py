"""optio-host: run an optio task's work on this machine or on a remote one, the same way.

``make_host(ssh=None)`` gives a ``LocalHost``, ``make_host(ssh=SSHConfig(...))`` a
``RemoteHost``; both implement ``Host``. On top sits the log protocol
(``optio_host.protocol``), the ``HookContext`` handed to task hooks, and a
ready-made download task.

The names below are imported on first use (PEP 562), so ``import optio_host.worker``
on a worker host pulls in neither asyncssh nor optio-core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optio_host.context import HookContext, HookContextProtocol
    from optio_host.download import create_download_task
    from optio_host.errors import (
        AuthenticationFailed,
        CommandNotStarted,
        CommandTimeout,
        CwdNotAccessible,
        CwdNotADirectory,
        CwdNotFound,
        DownloadFailed,
        HostCommandError,
        HostConnectionError,
        HostKeyChanged,
        HostKeyError,
        HostKeyRevoked,
        HostKeyUnknown,
        HostNotConnected,
        KeyFileError,
        ProgramNotExecutable,
        ProgramNotFound,
        SessionFailed,
        UnsafeTaskdir,
    )
    from optio_host.host import Host, LocalHost, ProcessHandle, RemoteHost, make_host
    from optio_host.process import RunResult
    from optio_host.types import SSHConfig

#: Where each public name is defined (the same object is returned from here).
_SOURCES = {
    "AuthenticationFailed": "optio_host.errors",
    "CommandNotStarted": "optio_host.errors",
    "CwdNotAccessible": "optio_host.errors",
    "CwdNotADirectory": "optio_host.errors",
    "CwdNotFound": "optio_host.errors",
    "HostKeyChanged": "optio_host.errors",
    "HostKeyRevoked": "optio_host.errors",
    "HostKeyUnknown": "optio_host.errors",
    "KeyFileError": "optio_host.errors",
    "ProgramNotExecutable": "optio_host.errors",
    "ProgramNotFound": "optio_host.errors",
    "UnsafeTaskdir": "optio_host.errors",
    "CommandTimeout": "optio_host.errors",
    "DownloadFailed": "optio_host.errors",
    "HookContext": "optio_host.context",
    "HookContextProtocol": "optio_host.context",
    "Host": "optio_host.host",
    "HostCommandError": "optio_host.errors",
    "HostConnectionError": "optio_host.errors",
    "HostKeyError": "optio_host.errors",
    "HostNotConnected": "optio_host.errors",
    "LocalHost": "optio_host.host",
    "ProcessHandle": "optio_host.process",
    "RemoteHost": "optio_host.host",
    "RunResult": "optio_host.process",
    "SSHConfig": "optio_host.types",
    "SessionFailed": "optio_host.errors",
    "create_download_task": "optio_host.download",
    "make_host": "optio_host.host",
}
# Subpackages reachable as attributes after a bare ``import optio_host``, as when they were eager.
_SUBMODULES = {"archive", "context", "download", "errors", "host", "paths", "process", "protocol", "types"}

__all__ = [
    "AuthenticationFailed",
    "CommandNotStarted",
    "CommandTimeout",
    "CwdNotADirectory",
    "CwdNotAccessible",
    "CwdNotFound",
    "DownloadFailed",
    "HookContext",
    "HookContextProtocol",
    "Host",
    "HostCommandError",
    "HostConnectionError",
    "HostKeyChanged",
    "HostKeyError",
    "HostKeyRevoked",
    "HostKeyUnknown",
    "HostNotConnected",
    "KeyFileError",
    "LocalHost",
    "ProcessHandle",
    "ProgramNotExecutable",
    "ProgramNotFound",
    "RemoteHost",
    "RunResult",
    "SSHConfig",
    "SessionFailed",
    "UnsafeTaskdir",
    "create_download_task",
    "make_host",
]


def __getattr__(name: str) -> Any:
    if name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
