"""``RemoteHost``'s connection side: its state, the SSH pool's lifecycle, the private taskdir, tunnels."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from abc import abstractmethod
from typing import Any

import asyncssh

from optio_host.errors import (
    HostNotConnected,
    UnsafeTaskdir,
)
from optio_host.host import _scripts as scripts
from optio_host.host._ssh import Link, SessionPool, describe, translate_errors
from optio_host.host.base import BaseHost
from optio_host.quoting import script_argv
from optio_host.types import SSHConfig

__all__ = ["CLEANUP_WAIT", "RemoteCore"]

#: How long ``disconnect()`` lets a clean-up after a lost connection (kills, temp files) finish.
CLEANUP_WAIT = 5.0
#: Why ``PRIVATE_DIRS`` refused a folder (its ``OPTIO:<code>:<path>`` line).
_UNSAFE = {
    "ELINK": "is a symbolic link",
    "EOWNER": "belongs to another user",
    "EMODE": "is writable by other users and lacks the sticky bit",
}


class RemoteCore(BaseHost):
    """The connection side of ``RemoteHost``: its state, the pool's lifecycle, the taskdir.

    The concerns built on it each live in their own module: processes
    (``_remote_processes``), files (``_remote_files``), archives (``_remote_archive``).
    """

    def __init__(self, ssh_config: SSHConfig, taskdir: str | None = None) -> None:
        if not isinstance(ssh_config, SSHConfig):
            raise TypeError(f"ssh_config must be an SSHConfig, not {type(ssh_config).__name__}")
        super().__init__(taskdir)
        self.ssh_config = ssh_config
        self._pool: SessionPool | None = None
        self._groups: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        #: Processes whose output reached its end: nothing of theirs holds it any more.
        self._drained: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Every command whose channel is still open (it holds a session slot), and what it runs.
        self._open_channels: dict[asyncssh.SSHClientProcess[bytes], str] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._tails: set[Any] = set()
        self._listeners: list[asyncssh.SSHListener] = []
        #: Temporary upload files that could not be removed (the link was down): retried later.
        self._orphans: set[str] = set()
        #: The connection each process runs on, and when it started.
        self._process_links: weakref.WeakKeyDictionary[Any, tuple[Link, float]] = weakref.WeakKeyDictionary()
        #: Process groups to kill once the host answers again (their connection died under them).
        self._pending_kills: dict[int, float] = {}
        self._cleanup: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RemoteHost({describe(self.ssh_config)}, taskdir={self._taskdir!r})"

    # ---------------------------------------------------------------- lifecycle

    @property
    def _connected_pool(self) -> SessionPool:
        if self._pool is None:
            raise HostNotConnected(
                f"RemoteHost({describe(self.ssh_config)}) is not connected: "
                "call connect() or use it as 'async with host:'"
            )
        return self._pool

    @property
    def connection(self) -> asyncssh.SSHClientConnection:
        """The live SSH connection (the pool's primary one): an escape hatch for asyncssh calls.

        Raises ``HostNotConnected`` before ``connect()``. After a reconnect it is the new
        connection, so fetch it again rather than keeping it.
        """
        return self._connected_pool.primary.conn

    @property
    def _conn(self) -> asyncssh.SSHClientConnection | None:
        """Read-only alias of ``connection``, as later published versions name it (``None`` if closed)."""
        if self._pool is None or not self._pool.has_live_link():
            return None
        return self._pool.primary.conn

    async def _open(self) -> None:
        if self._pool is None:
            self._pool = SessionPool(self.ssh_config)
            self._pool.on_reconnect = self._schedule_cleanup
            self._pool.describe_holders = self.open_channels
        await self._pool.start()

    def _is_open(self) -> bool:
        return self._pool is not None and self._pool.has_live_link()

    async def _close(self) -> None:
        cleanup = self._cleanup
        if cleanup is not None and not cleanup.done():
            # A clean-up after a lost connection gets a few seconds to finish.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_WAIT):
                    await asyncio.shield(cleanup)
        pool, self._pool = self._pool, None
        for tail in list(self._tails):
            with contextlib.suppress(Exception):
                tail.close()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        if pool is not None:
            await pool.close()
        for task in list(self._watchers):
            task.cancel()

    async def _make_private_taskdir(self) -> str:
        result = await self._sh('exec mktemp -d "${TMPDIR:-/tmp}/optio-host-XXXXXXXXXX"')
        return result.strip()

    async def _sh(self, script: str, *args: str, check: bool = True) -> str:
        """Run an internal script (arguments as ``$1``...) from ``/``; return its stdout."""
        result = await self.run(script_argv(script, *args), cwd="/", check=check)
        return result.stdout

    async def setup_workdir(self) -> None:
        # On a shared host (/tmp/<consumer>/<id>) another user may have made the folder first:
        # PRIVATE_DIRS checks each folder on the way (link, owner, mode) and reports the one at fault.
        result = await self.run(script_argv(scripts.PRIVATE_DIRS, self.taskdir, self.workdir), cwd="/")
        if result.exit_code == 0:
            return
        what, _, path = result.stdout.strip().removeprefix("OPTIO:").partition(":")
        where = describe(self.ssh_config)
        if result.exit_code == 3 and what in _UNSAFE:
            raise UnsafeTaskdir(
                f"refusing taskdir {self.taskdir} on {where}: {path} {_UNSAFE[what]}, so another user "
                "could replace it. Remove it, or use a taskdir in a folder of your own (for "
                "task_dir(): set <CONSUMER>_REMOTE_TASK_ROOT).",
                path,
            )
        raise OSError(f"cannot create {self.workdir} on {where}: {(result.stderr or result.stdout).strip()}")

    async def cleanup_taskdir(self, aggressive: bool = False) -> None:
        taskdir = self.taskdir
        if taskdir == "/":
            raise ValueError("refusing to remove '/' as a taskdir")
        if aggressive:
            await self._sh('chmod -R u+rwX -- "$1" 2>/dev/null; rm -rf -- "$1"', taskdir, check=False)
        else:
            await self._sh('rm -rf -- "$1"', taskdir)

    async def establish_tunnel(
        self, remote_port: int, *, bind_addr: str = "127.0.0.1", local_port: int = 0
    ) -> int:
        # ``local_port`` (RemoteHost only; 0: a free one) is the port to listen on here.
        if not isinstance(remote_port, int) or not 0 < remote_port < 65536:
            raise ValueError(f"remote_port must be 1-65535, got {remote_port!r}")
        link = self._connected_pool.primary
        with translate_errors(self.ssh_config, f"forwarding to port {remote_port}"):
            listener = await link.conn.forward_local_port(bind_addr, local_port, "127.0.0.1", remote_port)
        self._listeners.append(listener)
        return int(listener.get_port())

    async def resolve_host_home(self) -> str:
        if self._home is None:
            self._home = (await self._sh('printf %s "$HOME"')) or "/"
        return self._home

    # ---------------------------------------------------------------- provided by the concerns above

    @abstractmethod
    def _schedule_cleanup(self) -> None:
        """Kill what lost connections left running and remove their temp files, in the background."""

    @abstractmethod
    def open_channels(self) -> list[str]:
        """The commands whose channels are still open."""

    @abstractmethod
    async def _remove_orphans(self) -> None:
        """Remove temporary files a lost connection kept us from removing."""
