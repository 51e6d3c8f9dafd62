"""SSH plumbing for ``RemoteHost``: connecting, host keys, session slots, error translation.

Only this module and ``remote.py`` import asyncssh.

Session slots: OpenSSH allows ``MaxSessions`` (default 10) session channels
per connection (exec and subsystem channels; port forwards do not count). The
pool hands out slots so that no operation opens a channel the server would
refuse; when every slot of every connection is taken it opens another
connection (up to ``MAX_LINKS``), and beyond that callers wait. A refused open
("open failed", which sshd can still answer while it frees a slot we already
saw closed) is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

from optio_host.errors import (
    AuthenticationFailed,
    HostConnectionError,
    HostKeyError,
    HostNotConnected,
)
from optio_host.types import HOST_KEY_POLICY_ENV, SSHConfig, effective_host_key_policy

__all__ = ["MAX_LINKS", "Link", "SessionPool", "describe", "translate_errors"]

_T = TypeVar("_T")

#: At most this many SSH connections per host (sshd's MaxStartups limits parallel handshakes,
#: so they are opened one at a time).
MAX_LINKS = 4
#: Handshakes in progress to one destination, across all hosts of this event loop: kept below
#: OpenSSH's MaxStartups (default 10:30:100 starts dropping new connections past 10).
MAX_HANDSHAKES = 8
#: Retries of a connection the server dropped during the handshake (MaxStartups under load).
_HANDSHAKE_RETRIES = (0.2, 0.5, 1.0)
#: Slots per connection kept back: one for the SFTP channel, one for control commands (kill).
_RESERVED_SLOTS = 2
#: How long a refused channel open is retried before giving up.
_OPEN_RETRY_BUDGET = 60.0
#: How often an operation that found its connection dead is sent again on a fresh one.
_DEAD_LINK_RETRIES = 2
#: Pauses before each attempt to reconnect after a connection was lost.
_RECONNECT_DELAYS = (0.0, 0.5, 1.0, 2.0)
_RETRYABLE_OPEN_CODES = {
    asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
    asyncssh.OPEN_CONNECT_FAILED,
    asyncssh.OPEN_RESOURCE_SHORTAGE,
}
#: Ciphers tried first unless the user's ssh config names its own: AES-GCM runs at about
#: twice chacha20's speed where the CPU has AES instructions.
_PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
#: Receive window per channel (asyncssh's default is 2 MiB). Downloads are capped at window / RTT:
#: 2 MiB gave 17 MiB/s at 50 ms; 8 MiB lets one stream pass 100+ MiB/s there. (Memory: a slow
#: reader may hold about two windows per stream.)
_WINDOW = 8 * 1024 * 1024


def describe(config: SSHConfig) -> str:
    """``user@host:port`` for messages."""
    user = f"{config.user}@" if config.user else ""
    return f"{user}{config.host}:{config.port}"


def _known_hosts_path(config: SSHConfig) -> str:
    return os.path.expanduser(config.known_hosts or "~/.ssh/known_hosts")


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _Client(asyncssh.SSHClient):
    """Sees the host key the server offers, so refusals can name its fingerprint."""

    def __init__(self, policy: str, known_hosts: str, on_lost: Any) -> None:
        self._policy = policy
        self._known_hosts = known_hosts
        self._on_lost = on_lost
        self.offered_key: asyncssh.SSHKey | None = None
        self.key_changed = False

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        # Called only for keys that are not already trusted.
        self.offered_key = key
        if self._policy != "accept-new":
            return False
        if os.path.exists(self._known_hosts):
            known = asyncssh.read_known_hosts(self._known_hosts)
            if known.match(host, addr, port)[0]:
                self.key_changed = True  # the host is known with another key: refuse
                return False
        folder = os.path.dirname(self._known_hosts)
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        line = key.export_public_key("openssh").decode().split()
        with open(self._known_hosts, "a") as handle:
            handle.write(f"{_host_pattern(host, port)} {line[0]} {line[1]}\n")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


def _user_config_sets_ciphers() -> bool:
    path = os.path.expanduser("~/.ssh/config")
    try:
        with open(path) as handle:
            return any(line.strip().lower().startswith("ciphers") for line in handle)
    except OSError:
        return False


def _connect_options(config: SSHConfig, known_hosts: str, policy: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "connect_timeout": config.connect_timeout,
        "keepalive_interval": config.keepalive_interval or None,
        "keepalive_count_max": 2,  # dead after 3 silent intervals: ~30 s by default
    }
    if config.user:
        options["username"] = config.user
    if config.port != 22:
        options["port"] = config.port  # 22 leaves room for a Port from ~/.ssh/config
    if config.key_path:
        options["client_keys"] = [os.path.expanduser(config.key_path)]
    if config.proxy_jump:
        options["tunnel"] = config.proxy_jump
    if policy == "off":
        options["known_hosts"] = None
    elif os.path.exists(known_hosts):
        options["known_hosts"] = known_hosts
    else:
        options["known_hosts"] = b""  # nothing trusted yet (strict refuses, accept-new records)
    if not _user_config_sets_ciphers():
        options["encryption_algs"] = [
            alg for alg in _PREFERRED_CIPHERS if alg.encode() in asyncssh.encryption.get_encryption_algs()
        ]
    return options


def _host_key_error(config: SSHConfig, client: _Client, known_hosts: str) -> HostKeyError:
    key = client.offered_key
    fingerprint = key.get_fingerprint("sha256") if key is not None else None
    shown = fingerprint or "unknown fingerprint"
    kind = key.get_algorithm() if key is not None else "host"
    pattern = _host_pattern(config.host, config.port)
    if client.key_changed:
        message = (
            f"host key for {config.host} port {config.port} has CHANGED: it now offers "
            f"{kind} key {shown}, which does not match {known_hosts}. This can mean someone "
            f"is intercepting the connection. If the change is expected, remove the old entry "
            f"(ssh-keygen -R '{pattern}' -f {known_hosts}) and connect again."
        )
    else:
        message = (
            f"host key for {config.host} port {config.port} is not trusted: {kind} key {shown} "
            f"is not in {known_hosts}. If you trust this host, add its key to known_hosts "
            f"(ssh-keyscan -p {config.port} {config.host} >> {known_hosts}), or let the first "
            f'connection record it with SSHConfig(host_key_policy="accept-new") or '
            f"{HOST_KEY_POLICY_ENV}=accept-new."
        )
    return HostKeyError(message, host=config.host, port=config.port, fingerprint=fingerprint)


_handshakes: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int], asyncio.Semaphore]
] = weakref.WeakKeyDictionary()


def _handshake_gate(config: SSHConfig) -> asyncio.Semaphore:
    gates = _handshakes.setdefault(asyncio.get_running_loop(), {})
    return gates.setdefault((config.host, config.port), asyncio.Semaphore(MAX_HANDSHAKES))


class _DroppedHandshake(Exception):
    """The server closed the connection before authentication finished."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def open_connection(config: SSHConfig, on_lost: Any) -> asyncssh.SSHClientConnection:
    """One authenticated SSH connection, errors translated to optio-host's.

    At most ``MAX_HANDSHAKES`` run at once per destination, and a connection
    the server drops mid-handshake (its MaxStartups throttling) is retried.
    """
    async with _handshake_gate(config):
        for delay in _HANDSHAKE_RETRIES:
            try:
                return await _open_connection(config, on_lost)
            except _DroppedHandshake:
                await asyncio.sleep(delay)
        try:
            return await _open_connection(config, on_lost)
        except _DroppedHandshake as exc:
            raise HostConnectionError(
                f"{describe(config)} kept closing the connection during the handshake ({exc.reason}); "
                "is it overloaded (MaxStartups) or restarting?"
            ) from None


async def _open_connection(config: SSHConfig, on_lost: Any) -> asyncssh.SSHClientConnection:
    policy = effective_host_key_policy(config)
    known_hosts = _known_hosts_path(config)
    client = _Client(policy, known_hosts, on_lost)
    options = _connect_options(config, known_hosts, policy)
    try:
        conn = await asyncssh.connect(config.host, client_factory=lambda: client, **options)
    except asyncssh.HostKeyNotVerifiable:
        raise _host_key_error(config, client, known_hosts) from None
    except asyncssh.PermissionDenied as exc:
        key = f" with key {config.key_path}" if config.key_path else ""
        raise AuthenticationFailed(
            f"{describe(config)} refused authentication{key}: {exc.reason}. Check the user name "
            "and that the public key is in the account's authorized_keys."
        ) from None
    except TimeoutError:
        raise HostConnectionError(
            f"could not connect to {describe(config)} within {config.connect_timeout:g}s"
        ) from None
    except (asyncssh.ConnectionLost, ConnectionResetError) as exc:
        raise _DroppedHandshake(str(exc) or type(exc).__name__) from exc
    except (OSError, asyncssh.Error) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise HostConnectionError(f"could not connect to {describe(config)}: {reason}") from exc
    return conn


@contextlib.contextmanager
def translate_errors(config: SSHConfig, what: str) -> Iterator[None]:
    """Turn asyncssh's exceptions into the ones LocalHost raises for the same situation."""
    try:
        yield
    except asyncssh.SFTPNoSuchFile as exc:
        raise FileNotFoundError(errno.ENOENT, f"no such file on {describe(config)}", what) from exc
    except asyncssh.SFTPPermissionDenied as exc:
        raise PermissionError(errno.EACCES, f"permission denied on {describe(config)}", what) from exc
    except asyncssh.SFTPFailure as exc:
        raise OSError(f"{what}: {exc.reason} (on {describe(config)})") from exc
    except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError, ConnectionResetError) as exc:
        raise HostConnectionError(f"lost the connection to {describe(config)} during {what}") from exc
    except asyncssh.ChannelOpenError as exc:
        raise HostConnectionError(f"{describe(config)} refused a channel for {what}: {exc.reason}") from exc


@dataclass(eq=False)
class Link:
    """One SSH connection of the pool and the session slots in use on it."""

    conn: asyncssh.SSHClientConnection
    busy: int = 0
    alive: bool = True
    #: Learnt from the first command: the login shell is /bin/sh, so commands need no extra exec.
    login_shell_is_sh: bool = False
    sftp: asyncssh.SFTPClient | None = None
    sftp_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SessionPool:
    """Hands out session slots over up to ``MAX_LINKS`` connections to one host."""

    def __init__(self, config: SSHConfig) -> None:
        self._config = config
        self._links: list[Link] = []
        self._changed = asyncio.Event()
        self._opening = False
        self._closed = False
        self._cap = max(1, config.max_sessions - _RESERVED_SLOTS)
        self._connected_once = False
        #: The last failed reconnect and when: callers that were waiting for it share its outcome.
        self._failure: tuple[HostConnectionError, float] | None = None
        #: Called after a lost connection was replaced (the owner's clean-up of what it left behind).
        self.on_reconnect: Callable[[], None] | None = None

    @property
    def primary(self) -> Link:
        """The first live connection (for SFTP and port forwards)."""
        for link in self._links:
            if link.alive:
                return link
        raise HostConnectionError(f"no open connection to {describe(self._config)}")

    def has_live_link(self) -> bool:
        return any(link.alive for link in self._links)

    async def start(self) -> None:
        """Open the first connection (so connection errors surface at ``connect()``)."""
        self._closed = False
        if not self.has_live_link():
            await self._add_link()

    async def _add_link(self) -> Link:
        link_box: list[Link] = []

        def lost() -> None:
            for link in link_box:
                link.alive = False
            self._changed.set()

        conn = await open_connection(self._config, lost)
        link = Link(conn)
        link_box.append(link)
        self._links.append(link)
        self._connected_once = True
        self._failure = None
        self._changed.set()
        return link

    async def _reconnect(self) -> Link:
        """Open a connection again after the last one was lost: a few attempts with backoff."""
        last: HostConnectionError | None = None
        for delay in _RECONNECT_DELAYS:
            if delay:
                await asyncio.sleep(delay)
            try:
                link = await self._add_link()
            except (HostKeyError, AuthenticationFailed):
                raise  # retrying cannot fix these
            except HostConnectionError as exc:
                last = exc
                continue
            if self.on_reconnect is not None:
                self.on_reconnect()
            return link
        raise HostConnectionError(
            f"lost the connection to {describe(self._config)} and could not reconnect "
            f"({len(_RECONNECT_DELAYS)} attempts over {sum(_RECONNECT_DELAYS):g}s): {last}"
        ) from last

    async def acquire(self, *, control: bool = False) -> Link:
        """A connection with a free session slot (``control``: may use the reserved one)."""
        cap = self._cap + 1 if control else self._cap
        started = time.monotonic()
        while True:
            if self._closed:
                raise HostNotConnected(f"the connection to {describe(self._config)} is closed")
            self._links = [link for link in self._links if link.alive or link.busy]
            free = [link for link in self._links if link.alive and link.busy < cap]
            if free:
                link = min(free, key=lambda candidate: candidate.busy)
                link.busy += 1
                return link
            live = sum(1 for link in self._links if link.alive)
            if live == 0 and self._failure is not None and self._failure[1] >= started:
                raise self._failure[0]  # the reconnect we were waiting for failed
            if not self._opening and live < MAX_LINKS:
                self._opening = True
                try:
                    if live == 0 and self._connected_once:
                        link = await self._reconnect()
                    else:
                        link = await self._add_link()
                except HostConnectionError as exc:
                    if live == 0:
                        self._failure = (exc, time.monotonic())
                        self._changed.set()
                        raise  # nothing to wait for: the host is unreachable
                    # More connections refused (MaxStartups, limits): share the ones we have.
                    self._opening = False
                    await self._wait_for_change(1.0)
                    continue
                finally:
                    self._opening = False
                link.busy += 1
                return link
            await self._wait_for_change(5.0)

    async def _wait_for_change(self, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    def release(self, link: Link) -> None:
        link.busy -= 1
        self._changed.set()

    @contextlib.asynccontextmanager
    async def slot(self, *, control: bool = False) -> AsyncIterator[Link]:
        link = await self.acquire(control=control)
        try:
            yield link
        finally:
            self.release(link)

    async def start_process(
        self, command_for: Callable[[Link], str], what: str, *, control: bool = False
    ) -> tuple[Link, asyncssh.SSHClientProcess[bytes]]:
        """Take a slot and start a command in it; the caller releases the slot when it ends.

        A connection found dead while opening the channel (nothing ran yet) is dropped
        and the command started on a fresh one, so a server restart between calls
        goes unnoticed.
        """
        for attempt in range(_DEAD_LINK_RETRIES + 1):
            link = await self.acquire(control=control)
            try:
                return link, await self._open_session(link, command_for(link), what)
            except HostConnectionError:
                self.release(link)
                if not self._is_dead(link) or attempt == _DEAD_LINK_RETRIES:
                    raise
            except BaseException:
                self.release(link)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _is_dead(self, link: Link) -> bool:
        if link.alive and link.conn.is_closed():
            link.alive = False
            self._changed.set()
        return not link.alive

    async def _open_session(self, link: Link, command: str, what: str) -> asyncssh.SSHClientProcess[bytes]:
        """Start ``command`` on ``link``, retrying while the server refuses for lack of slots."""
        delay = 0.005
        deadline = time.monotonic() + _OPEN_RETRY_BUDGET
        while True:
            with translate_errors(self._config, what):
                try:
                    return await link.conn.create_process(command, encoding=None, window=_WINDOW)
                except asyncssh.ChannelOpenError as exc:
                    if exc.code not in _RETRYABLE_OPEN_CODES or self._is_dead(link):
                        raise
                    if time.monotonic() + delay > deadline:
                        raise HostConnectionError(
                            f"{describe(self._config)} kept refusing new sessions for "
                            f"{_OPEN_RETRY_BUDGET:g}s ({exc.reason}); if its MaxSessions is "
                            f"below {self._config.max_sessions}, lower SSHConfig.max_sessions"
                        ) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def sftp_call(self, what: str, operation: Callable[[asyncssh.SFTPClient], Awaitable[_T]]) -> _T:
        """Run one SFTP request on the primary connection (reconnecting first if it was lost).

        Errors are translated (a missing file is ``FileNotFoundError``); a request that
        failed because the connection turned out dead is sent again on a fresh one.
        """
        for attempt in range(_DEAD_LINK_RETRIES + 1):
            link = await self._primary_link()
            try:
                with translate_errors(self._config, what):
                    return await operation(await self._sftp_on(link))
            except HostConnectionError:
                if not self._is_dead(link) or attempt == _DEAD_LINK_RETRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _primary_link(self) -> Link:
        if not self.has_live_link():
            self.release(await self.acquire())  # reconnects, with the usual retries
        return self.primary

    async def _sftp_on(self, link: Link) -> asyncssh.SFTPClient:
        if link.sftp is not None:
            return link.sftp
        async with link.sftp_lock:
            if link.sftp is None:
                link.sftp = await link.conn.start_sftp_client()
            return link.sftp

    async def close(self) -> None:
        self._closed = True
        links, self._links = self._links, []
        for link in links:
            link.alive = False
            if link.sftp is not None:
                link.sftp.exit()
            link.conn.close()
        for link in links:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await link.conn.wait_closed()
        self._changed.set()
