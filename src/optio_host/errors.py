"""Every exception optio-host raises, defined once.

The tree, with the builtin each one extends so callers can catch what they
already know::

    Exception
    ├── HostCommandError            a command exited non-zero (``check=True``)
    │   └── CommandTimeout          ...and TimeoutError: killed after ``timeout``
    ├── SessionFailed               a log-protocol session ended in failure
    └── DownloadFailed              the download task could not deliver the file
    ConnectionError
    └── HostConnectionError         the host cannot be reached or the link dropped
        ├── HostKeyError            the host's key was refused
        └── AuthenticationFailed    the host refused our credentials
    RuntimeError
    └── HostNotConnected            a host method was used before ``connect()``

Missing files are ``FileNotFoundError`` and checksum mismatches ``ValueError``
on every host.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

__all__ = [
    "AuthenticationFailed",
    "CommandTimeout",
    "DownloadFailed",
    "HostCommandError",
    "HostConnectionError",
    "HostKeyError",
    "HostNotConnected",
    "SessionFailed",
    "format_command",
    "redact_credentials",
    "redact_url",
]

#: How much of stderr ``str(HostCommandError)`` shows (a published text).
_STDERR_PREVIEW = 200
# "[scheme://]userinfo@": up to the last "@" before the path, query or fragment begins.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?([^/?#]*)@")


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` shown as ``***@``, for messages."""
    return _USERINFO.sub(r"\1***@", url, count=1)


def redact_credentials(url: str, text: str) -> str:
    """``text`` (e.g. a tool's error output) with the credentials of ``url`` shown as ``***``."""
    userinfo = _USERINFO.match(url)
    return text.replace(userinfo.group(2), "***") if userinfo and userinfo.group(2) else text


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
    ``exit_code`` is the status the killed process reported.
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
    """The host presented a key we do not trust (unknown, or changed)."""

    def __init__(self, message: str, *, host: str, port: int, fingerprint: str | None) -> None:
        self.host = host
        self.port = port
        self.fingerprint = fingerprint
        super().__init__(message)


class AuthenticationFailed(HostConnectionError):
    """The host refused every credential we offered."""


class HostNotConnected(RuntimeError):
    """A host method that needs a connection was called before ``connect()``."""
