"""Every exception optio-host raises, defined once.

The tree, with the builtin each one extends so callers can catch what they
already know::

    Exception
    ├── HostCommandError            a command exited non-zero (``check=True``)
    │   └── CommandTimeout          ...and TimeoutError: killed after ``timeout``
    ├── SessionFailed               a log-protocol session ended in failure
    └── DownloadFailed              the download task could not deliver the file
    OSError
    ├── CommandNotStarted           the host could not start a command (``.path``)
    │   ├── ProgramNotFound         ...and FileNotFoundError: no such program
    │   ├── ProgramNotExecutable    ...and PermissionError: it exists, cannot run (126)
    │   ├── CwdNotFound             ...and FileNotFoundError: the cwd does not exist
    │   ├── CwdNotADirectory        ...and NotADirectoryError: the cwd is a file
    │   └── CwdNotAccessible        ...and PermissionError: the cwd cannot be entered
    ├── UnsafeTaskdir               ...PermissionError: a taskdir another user could swap
    └── ConnectionError
        └── HostConnectionError     the host cannot be reached or the link dropped
            ├── HostKeyError        the host's key was refused (``.reason``)
            │   ├── HostKeyUnknown      not in known_hosts (strict)
            │   ├── HostKeyChanged      differs from the recorded one: possible interception
            │   └── HostKeyRevoked      marked ``@revoked`` in known_hosts
            ├── AuthenticationFailed    the host refused our credentials
            ├── KeyFileError        the private key file is unusable (``.path``, ``.problem``)
            └── ChannelRefused      the server refused a channel (``.code``, ``.retryable``)
    RuntimeError
    └── HostNotConnected            a host method was used before ``connect()``

Missing files are ``FileNotFoundError`` and checksum mismatches ``ValueError``
on every host; SFTP errors become the builtin ``OSError`` of the same meaning.
asyncssh's own exceptions never escape: ``host/_ssh_errors.py`` maps them all.

Why ``HostConnectionError`` stays an ``OSError`` (``ConnectionError``): a lost
or refused connection *is* an I/O failure, callers' existing ``except
ConnectionError``/``except OSError`` around network code keep working, and the
SPEC makes ``HostKeyError`` a ``ConnectionError``. The cost, that a broad
``except OSError`` meant for file trouble also catches a lost link, is paid
where it matters: file-level failures have their own subclasses
(``FileNotFoundError``, ``CwdNotFound``...), so code that must tell them apart
catches ``HostConnectionError`` first, or the specific file error.

``CommandTimeout.exit_code`` is the status the killed process reported (``-9``
for SIGKILL); the CLI turns a timeout into exit code 124, like ``timeout(1)``.
"""

from __future__ import annotations

import errno
import re
import shlex
from collections.abc import Sequence

__all__ = [
    "AuthenticationFailed",
    "ChannelRefused",
    "CommandNotStarted",
    "CommandTimeout",
    "CwdNotADirectory",
    "CwdNotAccessible",
    "CwdNotFound",
    "DownloadFailed",
    "HostCommandError",
    "HostConnectionError",
    "HostKeyChanged",
    "HostKeyError",
    "HostKeyRevoked",
    "HostKeyUnknown",
    "HostNotConnected",
    "KeyFileError",
    "ProgramNotExecutable",
    "ProgramNotFound",
    "SessionFailed",
    "UnsafeTaskdir",
    "command_not_started",
    "format_command",
    "redact_credentials",
    "redact_url",
]

#: How much of stderr ``str(HostCommandError)`` shows (a published text).
_STDERR_PREVIEW = 200
# "[scheme://]userinfo@": up to the last "@" before the path, query or fragment begins.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?([^/?#]*)@")


# A query parameter whose value is a credential: a token, a key, a signed URL's signature.
_SECRET_PARAM = re.compile(
    r"([?&;](?:[^=&;#]*[_.-])?(?:token|key|apikey|secret|password|passwd|pass|auth|sig|signature|"
    r"credential|session)=)([^&;#]+)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` shown as ``***@`` and the value of a query parameter
    that carries a credential (``token=``, ``X-Amz-Signature=``, ``api_key=``...) as ``***``."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", url, count=1))


def redact_credentials(url: str, text: str) -> str:
    """``text`` (e.g. a tool's error output) with the credentials of ``url`` shown as ``***``."""
    # (A value of a few characters would garble the text everywhere it recurs, and guards little.)
    secrets = [match.group(2) for match in _SECRET_PARAM.finditer(url) if len(match.group(2)) >= 4]
    userinfo = _USERINFO.match(url)
    if userinfo and userinfo.group(2):
        secrets.append(userinfo.group(2))
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def format_command(command: str | Sequence[str]) -> str:
    """Render a command for messages: strings as given, argv shell-quoted."""
    if isinstance(command, str):
        return command
    return shlex.join(command)


class HostCommandError(Exception):
    """A command on the host exited with a non-zero status."""

    def __init__(
        self,
        command: str | Sequence[str],
        exit_code: int,
        stdout: str,
        stderr: str,
    ) -> None:
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(command, exit_code, stdout, stderr)

    def __str__(self) -> str:
        # A published text that consumers match on: keep it, add detail only after it.
        head = f"command failed (exit {self.exit_code}): {self.command!r}"
        return f"{head}\nstderr: {self.stderr[:_STDERR_PREVIEW]}"


class CommandTimeout(HostCommandError, TimeoutError):
    """A command ran past its ``timeout``; its whole process tree was killed.

    ``stdout``/``stderr`` hold the output produced before the kill and
    ``exit_code`` is the status the killed process reported (``-9``: SIGKILL). The
    CLI does not pass that on: ``optio-host run --timeout`` exits 124, as ``timeout(1)`` does.
    """

    def __init__(
        self,
        command: str | Sequence[str],
        timeout: float,
        stdout: str,
        stderr: str,
        exit_code: int = -9,
    ) -> None:
        self.timeout = timeout
        super().__init__(command, exit_code, stdout, stderr)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\ntimed out after {self.timeout:g}s; the command and its children were killed"


class SessionFailed(Exception):
    """A log-protocol session ended without success (ERROR line, early exit, lost tail)."""


class DownloadFailed(Exception):
    """The download task could not put the file at its target."""

    def __init__(
        self,
        *,
        url: str,
        target: str,
        exit_code: int | None,
        stderr_tail: str,
    ) -> None:
        self.url = url
        self.target = target
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        # args feed repr(), which progress messages show: never the URL's credentials.
        super().__init__(redact_url(url), target, exit_code, redact_credentials(url, stderr_tail))

    def __str__(self) -> str:
        head = f"download failed (exit {self.exit_code}): {redact_url(self.url)} -> {self.target}"
        # All of the tail (at most ~1 KiB): its start is what 0.1.x showed, the rest is detail after it
        # (a checksum mismatch names both digests).
        return f"{head}\nstderr: {redact_credentials(self.url, self.stderr_tail)}"


class HostConnectionError(ConnectionError):
    """The host could not be reached, or the connection to it was lost."""


class HostKeyError(HostConnectionError):
    """The host presented a key we do not trust.

    ``reason`` tells why, one of ``"unknown"``, ``"changed"`` (another key is
    recorded for this host: possible interception) or ``"revoked"``; each has its
    own subclass. ``fingerprint`` is the offered key's ``SHA256:`` fingerprint.
    """

    reason = "refused"

    def __init__(self, message: str, *, host: str, port: int, fingerprint: str | None) -> None:
        self.host = host
        self.port = port
        self.fingerprint = fingerprint
        super().__init__(message)


class HostKeyUnknown(HostKeyError):
    """The key is not in known_hosts (and the policy does not record new keys)."""

    reason = "unknown"


class HostKeyChanged(HostKeyError):
    """known_hosts records another key for this host: the connection may be intercepted."""

    reason = "changed"


class HostKeyRevoked(HostKeyError):
    """known_hosts marks the key (or the CA that signed it) ``@revoked``."""

    reason = "revoked"


class AuthenticationFailed(HostConnectionError):
    """The host refused every credential we offered."""


class KeyFileError(HostConnectionError):
    """The private key file given (``path``) cannot be used.

    ``problem`` is one of ``"missing"``, ``"unreadable"``, ``"public-key"`` (a
    ``.pub`` file was given), ``"encrypted"`` (needs a passphrase: use ssh-agent)
    or ``"invalid"``.
    """

    def __init__(self, message: str, *, path: str | None, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(message)


class ChannelRefused(HostConnectionError):
    """The server refused to open a channel; ``retryable`` when it lacked room for it."""

    def __init__(self, message: str, *, code: int, retryable: bool) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(message)


class HostNotConnected(RuntimeError):
    """A host method that needs a connection was called before ``connect()``."""


class CommandNotStarted(OSError):
    """The host could not start a command; ``path`` is the program or folder at fault.

    Each subclass also extends the builtin it resembles, so ``except
    FileNotFoundError`` and ``except PermissionError`` keep working.
    """

    code = errno.EIO

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path
        self.filename = path
        self.errno = self.code

    def __str__(self) -> str:
        return str(self.args[0])


class ProgramNotFound(CommandNotStarted, FileNotFoundError):
    """The program does not exist on the host (not on ``PATH``, or no such file)."""

    code = errno.ENOENT


class ProgramNotExecutable(CommandNotStarted, PermissionError):
    """The program exists but cannot be run (not executable, a folder...): exit 126 in a shell."""

    code = errno.EACCES


class CwdNotFound(CommandNotStarted, FileNotFoundError):
    """The working directory does not exist."""

    code = errno.ENOENT


class CwdNotADirectory(CommandNotStarted, NotADirectoryError):
    """The working directory is not a folder."""

    code = errno.ENOTDIR


class CwdNotAccessible(CommandNotStarted, PermissionError):
    """The working directory exists but cannot be entered (no search permission)."""

    code = errno.EACCES


#: Why a command did not start, by the code the remote wrapper prints (``OPTIO:<code>``) and
#: LocalHost derives from the launch's ``OSError``: the exception and the start of its message.
NOT_STARTED: dict[str, tuple[type[CommandNotStarted], str]] = {
    "ECWD": (CwdNotFound, "working directory does not exist"),
    "ECWDNOTDIR": (CwdNotADirectory, "working directory is not a directory"),
    "ECWDACCES": (CwdNotAccessible, "working directory cannot be entered (no permission)"),
    "ENOENT": (ProgramNotFound, "program not found"),
    "EACCES": (ProgramNotExecutable, "program cannot be run (not an executable file)"),
}


#: Added when the missing cwd is the host's own workdir: the usual cause is a forgotten setup.
WORKDIR_SETUP_HINT = " (the workdir is made by setup_workdir(): call it first)"


def command_not_started(code: str, path: str, where: str, *, hint: str = "") -> CommandNotStarted:
    """The exception for launch failure ``code`` (a key of ``NOT_STARTED``) on host ``where``."""
    kind, text = NOT_STARTED[code]
    return kind(f"{text} on {where}: {path}{hint}", path)


class UnsafeTaskdir(PermissionError):
    """A taskdir (or a folder above it) is a link or belongs to another user, so it could be swapped.

    ``path`` is the folder at fault.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path
        self.filename = path
        self.errno = errno.EPERM

    def __str__(self) -> str:
        return str(self.args[0])
