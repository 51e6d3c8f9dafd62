"""The one error boundary of the SSH side: asyncssh's exceptions become ``optio_host.errors``.

Every call into asyncssh that can fail runs under ``translate_errors`` (or,
for the handshake, ``connect_error``); ``map_error`` is the table, with a
fallback for any ``asyncssh.Error`` a later asyncssh adds. SFTP status codes
become the builtin ``OSError`` of the same meaning (a missing file is
``FileNotFoundError`` on every host); a broken transport is
``HostConnectionError``. Client key files are loaded here too, so that a
bad one is a ``KeyFileError`` naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import asyncssh

from optio_host.errors import (
    AuthenticationFailed,
    ChannelRefused,
    CommandTimeout,
    HostCommandError,
    HostConnectionError,
    HostKeyError,
    KeyFileError,
)
from optio_host.host._ssh_config import describe
from optio_host.types import SSHConfig

__all__ = [
    "HandshakeDropped",
    "TRANSPORT_ERRORS",
    "connect_error",
    "load_client_keys",
    "map_error",
    "translate_errors",
]

#: OSErrors of a broken SSH transport (as opposed to file trouble, which keeps its own type).
TRANSPORT_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)

_RETRYABLE_OPEN_CODES = {
    asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
    asyncssh.OPEN_CONNECT_FAILED,
    asyncssh.OPEN_RESOURCE_SHORTAGE,
}

#: SFTP errors and the OSError (type, errno) each becomes.
_SFTP_ERRORS: Sequence[tuple[type[asyncssh.SFTPError], type[OSError], int]] = (
    (asyncssh.SFTPNoSuchFile, FileNotFoundError, errno.ENOENT),
    (asyncssh.SFTPNoSuchPath, FileNotFoundError, errno.ENOENT),
    (asyncssh.SFTPPermissionDenied, PermissionError, errno.EACCES),
    (asyncssh.SFTPWriteProtect, PermissionError, errno.EROFS),
    (asyncssh.SFTPCannotDelete, PermissionError, errno.EPERM),
    (asyncssh.SFTPFileAlreadyExists, FileExistsError, errno.EEXIST),
    (asyncssh.SFTPNotADirectory, NotADirectoryError, errno.ENOTDIR),
    (asyncssh.SFTPFileIsADirectory, IsADirectoryError, errno.EISDIR),
    (asyncssh.SFTPDirNotEmpty, OSError, errno.ENOTEMPTY),
    (asyncssh.SFTPNoSpaceOnFilesystem, OSError, errno.ENOSPC),
    (asyncssh.SFTPQuotaExceeded, OSError, errno.EDQUOT),
    (asyncssh.SFTPLinkLoop, OSError, errno.ELOOP),
    (asyncssh.SFTPInvalidFilename, OSError, errno.EINVAL),
    (asyncssh.SFTPOpUnsupported, OSError, errno.EOPNOTSUPP),
)


class HandshakeDropped(HostConnectionError):
    """The server closed the connection before authentication finished (retried: MaxStartups)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or "") or str(exc) or type(exc).__name__


def _sftp_error(exc: asyncssh.SFTPError, where: str, what: str) -> OSError:
    if isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)):
        return HostConnectionError(f"lost the connection to {where} during {what}")
    for kind, builtin, code in _SFTP_ERRORS:
        if isinstance(exc, kind):
            return builtin(code, f"{os.strerror(code)} on {where} ({_reason(exc)})", what)
    return OSError(errno.EIO, f"{_reason(exc)} (on {where})", what)


def _process_error(exc: asyncssh.ProcessError) -> HostCommandError:
    command = exc.command or exc.subsystem or ""
    stdout, stderr = (
        part.decode(errors="replace") if isinstance(part, bytes) else str(part or "")
        for part in (exc.stdout, exc.stderr)
    )
    code = exc.returncode if exc.returncode is not None else -1
    if isinstance(exc, asyncssh.TimeoutError):
        return CommandTimeout(command, 0.0, stdout, stderr, code)
    return HostCommandError(command, code, stdout, stderr)


def map_error(exc: BaseException, where: str, what: str) -> BaseException:
    """The ``optio_host.errors`` exception for ``exc`` (raised ``during what``, talking to ``where``).

    Exceptions that are not asyncssh's nor a broken transport's come back unchanged.
    """
    if isinstance(exc, asyncssh.SFTPError):
        return _sftp_error(exc, where, what)
    if isinstance(exc, asyncssh.ProcessError):
        return _process_error(exc)
    if isinstance(exc, asyncssh.ChannelOpenError):
        return ChannelRefused(
            f"{where} refused a channel for {what}: {_reason(exc)}",
            code=exc.code,
            retryable=exc.code in _RETRYABLE_OPEN_CODES,
        )
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HostKeyError(
            f"{where} offered a host key that is not trusted: {_reason(exc)}",
            host=where,
            port=0,
            fingerprint=None,
        )
    if isinstance(exc, (asyncssh.PermissionDenied, asyncssh.PasswordChangeRequired)):
        return AuthenticationFailed(f"{where} refused authentication: {_reason(exc)}")
    if isinstance(exc, (asyncssh.KeyImportError, asyncssh.KeyEncryptionError)):
        return KeyFileError(
            f"a private key for {where} cannot be used ({_reason(exc)}): check the IdentityFile "
            "lines of ~/.ssh/config, or give a key file with -i / SSHConfig.key_path",
            path=None,
            problem="invalid",
        )
    if isinstance(exc, asyncssh.ConfigParseError):
        return HostConnectionError(f"~/.ssh/config could not be read for {where}: {_reason(exc)}")
    if isinstance(exc, (asyncssh.ConnectionLost, *TRANSPORT_ERRORS)):
        return HostConnectionError(f"lost the connection to {where} during {what}")
    if isinstance(exc, asyncssh.ChannelListenError):
        return HostConnectionError(f"{where} could not listen for {what}: {_reason(exc)}")
    if isinstance(exc, asyncssh.Error):  # DisconnectError and any kind a later asyncssh adds
        return HostConnectionError(f"{where} ended the connection during {what}: {_reason(exc)}")
    if type(exc).__module__.split(".")[0] == "asyncssh":  # the rest: none carry meaning for us
        return HostConnectionError(f"unexpected {type(exc).__name__} from {where} during {what}: {exc}")
    return exc


@contextlib.contextmanager
def translate_errors(
    config: SSHConfig | None, what: str, *, keep: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Re-raise asyncssh's (and the transport's) exceptions as ``optio_host.errors`` ones.

    Exceptions of the ``keep`` types pass unchanged, and so does everything not asyncssh's.
    """
    try:
        yield
    except keep:
        raise
    except Exception as exc:
        if map_error(exc, "", what) is exc:
            raise
        raise map_error(exc, "the host" if config is None else describe(config), what) from exc


def connect_error(
    exc: BaseException,
    where: str,
    *,
    key_path: str,
    timeout: float,
    host_key_error: Callable[[], HostKeyError],
) -> BaseException:
    """The error for a failed handshake: refused key, credentials, time-out, or anything else."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return host_key_error()
    if isinstance(exc, asyncssh.PermissionDenied):
        key = f" with key {key_path}" if key_path else ""
        return AuthenticationFailed(
            f"{where} refused authentication{key}: {_reason(exc)}. Check the user name "
            "and that the public key is in the account's authorized_keys."
        )
    if isinstance(exc, TimeoutError) and not isinstance(exc, asyncssh.Error):
        return HostConnectionError(f"could not connect to {where} within {timeout:g}s")
    if isinstance(exc, (asyncssh.ConnectionLost, ConnectionResetError)):
        return HandshakeDropped(_reason(exc))
    if isinstance(exc, HostConnectionError):
        return exc  # already ours
    mapped = map_error(exc, where, "the handshake")
    if mapped is exc and isinstance(exc, OSError):  # refused, unreachable, unknown name...
        return HostConnectionError(f"could not connect to {where}: {exc.strerror or exc}")
    if type(mapped) is HostConnectionError:  # the plain kind: say that connecting failed, and why
        return HostConnectionError(f"could not connect to {where}: {_reason(exc)}")
    return mapped


def _key_problem(path: str, data: bytes) -> tuple[str, str]:
    """Why ``data`` (read from ``path``) is not a usable private key: ``(problem, advice)``."""
    try:
        asyncssh.import_private_key(data, passphrase="\0optio-host-probe")
    except asyncssh.KeyEncryptionError:
        return "encrypted", (
            f"it is encrypted with a passphrase; load it into the agent (ssh-add {path}) and leave "
            "key_path empty (no -i), or use a key without a passphrase"
        )
    except Exception:
        pass
    with contextlib.suppress(Exception):
        asyncssh.import_public_key(data)  # (an OpenSSH private key also holds its public half)
        private = path[:-4] if path.endswith(".pub") else "the file without .pub"
        return "public-key", f"it is a public key; give the private key ({private})"
    return "invalid", "it is not a private key asyncssh can read (OpenSSH, PEM or PKCS#8)"


def load_client_keys(path: str) -> Any:
    """The key pairs in the private key file ``path`` (and its ``-cert.pub``), or ``KeyFileError``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise KeyFileError(
            f"private key file {path} does not exist; check -i / SSHConfig.key_path",
            path=path,
            problem="missing",
        ) from None
    except IsADirectoryError:
        raise KeyFileError(
            f"private key file {path} is a folder; give the key file itself (e.g. {path}/id_ed25519) "
            "with -i / SSHConfig.key_path",
            path=path,
            problem="unreadable",
        ) from None
    except OSError as exc:
        raise KeyFileError(
            f"private key file {path} cannot be read ({exc.strerror}); check its permissions",
            path=path,
            problem="unreadable",
        ) from None
    try:
        return asyncssh.load_keypairs([path])
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError):
        problem, advice = _key_problem(path, data)
        raise KeyFileError(
            f"private key file {path} cannot be used: {advice}", path=path, problem=problem
        ) from None
    except OSError as exc:
        raise KeyFileError(f"private key file {path}: {exc}", path=path, problem="unreadable") from None
