"""optio-host: run an optio task's work on this machine or on a remote one, the same way.

``make_host(ssh=None)`` gives a ``LocalHost``, ``make_host(ssh=SSHConfig(...))`` a
``RemoteHost``; both implement ``Host``. On top sits the log protocol
(``optio_host.protocol``), the ``HookContext`` handed to task hooks, and a
ready-made download task.
"""

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
