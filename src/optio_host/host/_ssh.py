"""SSH plumbing for ``RemoteHost``: connecting and session slots.

Host keys live in ``_hostkeys.py``, ``~/.ssh/config`` in ``_ssh_config.py`` and
the translation of asyncssh's exceptions in ``_ssh_errors.py``.

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
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

from optio_host.errors import (
    AuthenticationFailed,
    ChannelRefused,
    HostConnectionError,
    HostKeyError,
    HostNotConnected,
    KeyFileError,
)
from optio_host.host._hostkeys import HostKeyCheck
from optio_host.host._ssh_config import describe, resolve
from optio_host.host._ssh_errors import HandshakeDropped, connect_error, load_client_keys, translate_errors
from optio_host.types import SSHConfig

__all__ = ["MAX_LINKS", "Link", "SessionPool", "describe", "translate_errors"]  # the last two re-exported

_T = TypeVar("_T")
_log = logging.getLogger("optio_host.ssh")

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
#: A wait for a session slot this long is logged, with what holds the slots.
SLOT_WAIT_WARNING = 30.0
#: How long a refused channel open is retried before giving up.
_OPEN_RETRY_BUDGET = 60.0
#: How often an operation that found its connection dead is sent again on a fresh one.
_DEAD_LINK_RETRIES = 2
#: Pauses before each attempt to reconnect after a connection was lost.
_RECONNECT_DELAYS = (0.0, 0.5, 1.0, 2.0)
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


class _Client(asyncssh.SSHClient):
    """Hands asyncssh's questions about keys it does not trust to the host-key check."""

    def __init__(self, check: HostKeyCheck, on_lost: Any) -> None:
        self._check = check
        self._on_lost = on_lost

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return self._check.accepts(host, port, key)

    def validate_host_ca_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return self._check.accepts(host, port, key, is_ca=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


def _user_config_lines() -> list[str]:
    """The lines of ``~/.ssh/config``, stripped and in lower case (none if it cannot be read),
    to tell which settings the user chose there."""
    path = os.path.expanduser("~/.ssh/config")
    try:
        with open(path) as handle:
            return [line.strip().lower() for line in handle]
    except OSError:
        return []


def _connect_options(config: SSHConfig, check: HostKeyCheck, user_config: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "connect_timeout": config.connect_timeout,
        "keepalive_interval": config.keepalive_interval or None,
        "keepalive_count_max": 2,  # dead after 3 silent intervals: ~30 s by default
        "known_hosts": check.match,  # every policy: "off" still refuses @revoked keys
    }
    if config.user:
        options["username"] = config.user
    if config.port != 22:
        options["port"] = config.port  # 22 leaves room for a Port from ~/.ssh/config
    if config.key_path:
        options["client_keys"] = load_client_keys(os.path.expanduser(config.key_path))
    if config.proxy_jump:
        options["tunnel"] = config.proxy_jump
    if not any(line.startswith("ciphers") for line in user_config):
        options["encryption_algs"] = [
            alg for alg in _PREFERRED_CIPHERS if alg.encode() in asyncssh.encryption.get_encryption_algs()
        ]
    return options


_handshakes: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int], asyncio.Semaphore]
] = weakref.WeakKeyDictionary()


def _handshake_gate(config: SSHConfig) -> asyncio.Semaphore:
    gates = _handshakes.setdefault(asyncio.get_running_loop(), {})
    return gates.setdefault((config.host, config.port), asyncio.Semaphore(MAX_HANDSHAKES))


async def open_connection(config: SSHConfig, on_lost: Any) -> asyncssh.SSHClientConnection:
    """One authenticated SSH connection, errors translated to optio-host's.

    At most ``MAX_HANDSHAKES`` run at once per destination, and a connection
    the server drops mid-handshake (its MaxStartups throttling) is retried.
    """
    async with _handshake_gate(config):
        for delay in _HANDSHAKE_RETRIES:
            try:
                return await _open_connection(config, on_lost)
            except HandshakeDropped:
                await asyncio.sleep(delay)
        try:
            return await _open_connection(config, on_lost)
        except HandshakeDropped as exc:
            raise HostConnectionError(
                f"{describe(config)} kept closing the connection during the handshake ({exc.reason}); "
                "is it overloaded (MaxStartups) or restarting?"
            ) from None


async def _addresses(host: str, port: int, config: SSHConfig) -> list[str]:
    """The addresses ``host`` resolves to here (known_hosts may name a host by address); none
    through a jump host, or if it does not resolve (connecting then says why)."""
    if config.proxy_jump:
        return []
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(str(item[4][0]) for item in found))


async def _open_connection(config: SSHConfig, on_lost: Any) -> asyncssh.SSHClientConnection:
    endpoint = resolve(config)
    check = HostKeyCheck(config, endpoint)
    user_config = _user_config_lines()
    options = _connect_options(config, check, user_config)  # a bad key file fails here, before dialling
    if not any(line.startswith("hostkeyalgorithms") for line in user_config):
        algorithms = check.preferred_algorithms(await _addresses(endpoint.host, endpoint.port, config))
        if algorithms is not None:
            options["server_host_key_algs"] = algorithms
    where = describe(config)
    try:
        conn = await asyncssh.connect(config.host, client_factory=lambda: _Client(check, on_lost), **options)
    except Exception as exc:
        mapped = connect_error(
            exc, where, key_path=config.key_path, timeout=config.connect_timeout, host_key_error=check.error
        )
        if mapped is exc:
            raise
        raise mapped from (None if isinstance(mapped, HostKeyError) else exc)
    try:
        check.check_connected(conn.get_server_host_key())
    except HostKeyError:
        conn.close()
        raise
    return conn


class NoSpareSlot(Exception):
    """No session slot is free right now (for work that is only worth doing without waiting)."""


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
        #: What holds the slots (the owner's open commands), for the warning about a long wait.
        self.describe_holders: Callable[[], list[str]] | None = None
        self._warned = False

    @property
    def primary(self) -> Link:
        """The first live connection (for SFTP and port forwards)."""
        for link in self._links:
            if link.alive:
                return link
        raise HostConnectionError(f"no open connection to {describe(self._config)}")

    @property
    def slots_in_use(self) -> int:
        """Session slots taken across the pool's connections (released when a channel closes)."""
        return sum(link.busy for link in self._links)

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
            except (HostKeyError, AuthenticationFailed, KeyFileError):
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

    async def acquire(self, *, control: bool = False, spare: bool = False) -> Link:
        """A connection with a free session slot (``control``: may use the reserved one;
        ``spare``: one free now on a live connection, else ``NoSpareSlot`` at once)."""
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
            if spare:
                raise NoSpareSlot(f"no session slot free on {describe(self._config)} now")
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
            self._warn_if_starved(started)
            await self._wait_for_change(5.0)

    def _warn_if_starved(self, started: float) -> None:
        """Waiting is right while live commands hold every slot; say who holds them, once a
        wait gets long, so a leak (a channel nobody closes) is visible rather than a silent hang."""
        waited = time.monotonic() - started
        if waited >= SLOT_WAIT_WARNING and not self._warned:
            self._warned = True
            holders = self.describe_holders() if self.describe_holders is not None else []
            _log.warning(
                "waited %.0fs for an SSH session slot on %s: all %d are held by %s",
                waited,
                describe(self._config),
                self.slots_in_use,
                holders or "commands still running",
            )

    async def _wait_for_change(self, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    def release(self, link: Link) -> None:
        link.busy -= 1
        self._changed.set()

    async def start_process(
        self, command_for: Callable[[Link], str], what: str, *, control: bool = False, spare: bool = False
    ) -> tuple[Link, asyncssh.SSHClientProcess[bytes]]:
        """Take a slot and start a command in it; the caller releases the slot when it ends.

        A connection found dead while opening the channel (nothing ran yet) is dropped
        and the command started on a fresh one, so a server restart between calls
        goes unnoticed.
        """
        for attempt in range(_DEAD_LINK_RETRIES + 1):
            link = await self.acquire(control=control, spare=spare)
            try:
                return link, await self._open_session(link, command_for(link), what, retry=not spare)
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

    async def _open_session(
        self, link: Link, command: str, what: str, *, retry: bool = True
    ) -> asyncssh.SSHClientProcess[bytes]:
        """Start ``command`` on ``link``, retrying while the server refuses for lack of slots
        (without ``retry``: ``NoSpareSlot`` at the first refusal)."""
        delay = 0.005
        deadline = time.monotonic() + _OPEN_RETRY_BUDGET
        while True:
            try:
                with translate_errors(self._config, what):
                    return await link.conn.create_process(command, encoding=None, window=_WINDOW)
            except ChannelRefused as exc:
                if not exc.retryable or self._is_dead(link):
                    raise
                if not retry:
                    raise NoSpareSlot(f"{describe(self._config)} refused one more session ({exc})") from exc
                if time.monotonic() + delay > deadline:
                    raise HostConnectionError(
                        f"{describe(self._config)} kept refusing new sessions for "
                        f"{_OPEN_RETRY_BUDGET:g}s ({exc}); if its MaxSessions is "
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
