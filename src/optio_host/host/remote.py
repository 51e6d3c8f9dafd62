"""``RemoteHost``: the host is reached over SSH (asyncssh), through one pool of connections.

A facade over one module per concern: the connection (``_ssh``: pool, keepalive, reconnect;
``_hostkeys``, ``_ssh_config``, ``_ssh_errors``), its lifecycle and taskdir (``_remote_core``),
processes (``_remote_processes``), files (``_remote_files``) and archives (``_remote_archive``).
Tailing a file lives here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from optio_host.archive import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS
from optio_host.errors import (
    HostConnectionError,
)
from optio_host.host import _remote_archive
from optio_host.host import _scripts as scripts
from optio_host.host._remote_files import RemoteFiles
from optio_host.host._ssh import describe
from optio_host.host._tailing import untailable
from optio_host.quoting import script_argv

__all__ = ["RemoteHost"]


#: How the tail snippet (``scripts.TAIL``) reports a refused path on stderr.
_UNTAILABLE = b"optio-untailable:"


class RemoteHost(RemoteFiles):
    """Runs everything on a host reached over SSH.

    One pool of SSH connections (normally one) carries commands, SFTP and
    port forwards. Without a ``taskdir`` a private one is made on the host at
    ``connect()`` and removed at ``disconnect()``. Its ``Host`` methods are
    documented on ``Host``; what it adds is the SSH connection and its channels.
    """

    # ---------------------------------------------------------------- archives

    def archive_workdir(self, exclude: Sequence[str] | None = None) -> AsyncIterator[bytes]:
        # The ARCHIVE script runs on the host; its output streams back (_remote_archive).
        return _remote_archive.archive_workdir(self, exclude)

    async def restore_workdir(
        self,
        stream: AsyncIterator[bytes],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_members: int = DEFAULT_MAX_MEMBERS,
    ) -> None:
        # Checked here as it streams past, unpacked by the host's tar into a staging folder,
        # verified, then swapped in whole (_remote_archive).
        await _remote_archive.restore_workdir(self, stream, max_bytes=max_bytes, max_members=max_members)

    # ---------------------------------------------------------------- tailing

    async def tail_bytes(self, absolute_path: str, *, offset: int = 0) -> AsyncIterator[bytes]:
        # Followed by scripts.TAIL on the host, which reports a path it refuses (_tailing's rule)
        # on stderr as "optio-untailable:<kind>".
        path = self._resolve(absolute_path)
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        handle = await self.launch_subprocess(
            script_argv(scripts.TAIL, path, str(offset + 1)),
            cwd="/",
            merge_stderr=False,
            stdin=True,
        )
        process = handle.pid_like
        self._tails.add(process)
        try:
            async for chunk in handle.stdout:
                yield chunk
            if self._pool is not None and not self._is_open():
                raise HostConnectionError(
                    f"lost the connection to {describe(self.ssh_config)} while following {path}"
                )
            if self._pool is not None and handle.stderr is not None:
                report = b"".join([chunk async for chunk in handle.stderr])  # one short line at most
                if report.startswith(_UNTAILABLE):
                    raise untailable(path, report[len(_UNTAILABLE) :].decode(errors="replace").strip())
        finally:
            self._tails.discard(process)
            # Closing stdin ends the remote tail (its watchdog sees EOF); over a dead connection
            # the watchdog never hears of it, so the tail is killed once we are connected again.
            if not self._kill_later_if_cut_off(process):
                process.close()
