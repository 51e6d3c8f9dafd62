"""The part of every host that a backend fills in: identity, lifecycle and the primitives
(start and end a process, stream a file in and out, list a folder). Built on by ``_transfers``
and ``base``."""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Self

from optio_host.errors import HostConnectionError, HostNotConnected
from optio_host.host.interface import Command
from optio_host.process import ProcessHandle

__all__ = ["HostCore"]

_log = logging.getLogger("optio_host")


class HostCore(ABC):
    """A host's identity (taskdir, workdir), its lifecycle, and the primitives a backend implements."""

    def __init__(self, taskdir: str | os.PathLike[str] | None) -> None:
        self._taskdir: str | None = None
        self._owns_taskdir = taskdir is None
        if taskdir is not None:
            self._taskdir = self._normalize_taskdir(os.fspath(taskdir))
        self._home: str | None = None
        #: A private taskdir a lost connection kept ``disconnect()`` from removing.
        self.left_behind_taskdir: str | None = None

    # ---------------------------------------------------------------- identity

    def _normalize_taskdir(self, taskdir: str) -> str:
        if not taskdir:
            raise ValueError("taskdir must not be empty")
        if not taskdir.startswith("/"):
            raise ValueError(f"taskdir must be an absolute path, got {taskdir!r}")
        return posixpath.normpath(taskdir)

    @property
    def taskdir(self) -> str:
        """The task's folder on the host (absolute)."""
        if self._taskdir is None:
            raise HostNotConnected(
                f"{type(self).__name__} was created without a taskdir; "
                "a private one is made at connect() - connect first"
            )
        return self._taskdir

    @property
    def workdir(self) -> str:
        """``taskdir + "/workdir"``: where commands run and relative paths point."""
        return self.taskdir + "/workdir"

    def _resolve(self, path: str | os.PathLike[str], *, what: str = "path") -> str:
        text = os.fspath(path)
        if not isinstance(text, str) or not text:
            raise ValueError(f"{what} must be a non-empty path")
        if "\0" in text:
            raise ValueError(f"{what} contains a NUL character: {text!r}")
        if text.startswith("/"):
            return text
        return posixpath.join(self.workdir, text)

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        """Open the host (SSH connection for a remote one); make a private taskdir if none was given."""
        await self._open()
        if self._taskdir is None:
            try:
                await self._remove_left_behind()
                self._taskdir = await self._make_private_taskdir()
                await self.setup_workdir()
            except BaseException:
                await asyncio.shield(self._close())
                raise

    async def disconnect(self) -> None:
        """Stop tails and tunnels, remove a private taskdir, close. Safe to call twice.

        A private taskdir that cannot be removed (the connection was lost) is logged with
        its location as a warning, and removed at this host's next ``connect()``.
        """
        try:
            if self._owns_taskdir and self._taskdir is not None:
                left: str | None = self._taskdir
                try:
                    if self._is_open():
                        await self.cleanup_taskdir(True)
                        left = None
                except HostConnectionError:
                    pass
                finally:
                    self._taskdir = None
                    if left is not None:
                        self.left_behind_taskdir = left
                        _log.warning(
                            "%r: could not remove the private taskdir %s (the connection was lost); "
                            "it is removed at the next connect(), else remove it by hand",
                            self,
                            left,
                        )
        finally:
            await self._close()

    def keep_taskdir(self) -> None:
        """Leave a private taskdir (made at ``connect()``) in place at ``disconnect()``."""
        self._owns_taskdir = False

    async def _remove_left_behind(self) -> None:
        left, self.left_behind_taskdir = self.left_behind_taskdir, None
        if left is None:
            return
        self._taskdir = left
        try:
            await self.cleanup_taskdir(True)
        except Exception:
            self.left_behind_taskdir = left  # still there: keep pointing at it
        finally:
            self._taskdir = None

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    def _is_open(self) -> bool: ...

    @abstractmethod
    async def _make_private_taskdir(self) -> str: ...

    @abstractmethod
    async def setup_workdir(self) -> None:
        """Create taskdir and workdir (mode 0700) if missing; never deletes anything."""

    @abstractmethod
    async def cleanup_taskdir(self, aggressive: bool = False) -> None:
        """Remove the whole taskdir (``aggressive``: also read-only parts, ignoring errors)."""

    @abstractmethod
    async def establish_tunnel(self, remote_port: int, *, bind_addr: str = "127.0.0.1") -> int:
        """A local port that reaches ``127.0.0.1:remote_port`` on the host."""

    @abstractmethod
    async def resolve_host_home(self) -> str:
        """The host user's home directory (absolute)."""

    # ---------------------------------------------------------------- processes

    @abstractmethod
    async def launch_subprocess(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        merge_stderr: bool = True,
        stdin: bool = False,
        env_remove: Sequence[str] | None = None,
    ) -> ProcessHandle:
        """Start ``command`` in ``cwd`` (default: workdir) in its own process group.

        A string runs under ``/bin/sh -c``; a sequence is an argv passed
        verbatim. Inherited variables whose names match an ``env_remove``
        fnmatch pattern (e.g. ``"*_TOKEN"``) are dropped, then ``env`` is
        added. Returns while the process runs.
        """

    @abstractmethod
    async def terminate_subprocess(self, handle: ProcessHandle, *, aggressive: bool = False) -> None:
        """End the process and every process it started.

        ``aggressive=False``: SIGTERM, up to 5 s grace, then SIGKILL.
        ``True``: SIGKILL at once. A process that already ended is left alone.
        """

    # ---------------------------------------------------------------- files

    @abstractmethod
    async def _write_file_atomic(
        self,
        target: str,
        chunks: AsyncIterator[bytes],
        *,
        mode: int | None,
        before_commit: Callable[[], None],
    ) -> None:
        """Write to an unpredictable temporary name beside ``target``, then rename.

        ``before_commit`` runs after the last chunk and may raise to abandon the write.
        """

    @abstractmethod
    async def _read_file(self, path: str) -> tuple[int, AsyncIterator[bytes]]:
        """Size and chunks of a file; ``FileNotFoundError`` if it is missing."""

    @abstractmethod
    async def _open_checked(self, path: str, folder: str) -> tuple[int, AsyncIterator[bytes]]:
        """``_read_file`` of what ``path`` opens, verified to be a regular file under ``folder``."""

    @abstractmethod
    async def file_sha256(self, path: str) -> str | None:
        """Hex SHA-256 of a file, computed on the host; ``None`` if there is no such file."""

    @abstractmethod
    async def _list_dir(self, path: str) -> list[tuple[str, bool]] | None:
        """``(name, is_dir)`` of a folder's entries; ``None`` if it is not a folder."""

    @abstractmethod
    async def _exists(self, path: str) -> bool:
        """Whether anything (even a dangling link) is at ``path``."""

    @abstractmethod
    async def remove_file(self, path: str) -> None:
        """Delete a file; a missing file is not an error."""

    @abstractmethod
    async def realpath(self, path: str) -> str:
        """The path with every symlink resolved on the host; ``FileNotFoundError`` if missing."""

    @abstractmethod
    async def file_size(self, path: str) -> int | None:
        """Size in bytes, or ``None`` if there is no such file."""

    @abstractmethod
    def archive_workdir(self, exclude: Sequence[str] | None = None) -> AsyncIterator[bytes]:
        """A gzip'd tar stream of the workdir's contents (see ``optio_host.archive``)."""

    @abstractmethod
    async def restore_workdir(self, stream: AsyncIterator[bytes]) -> None:
        """Empty the workdir, then unpack an archive from ``archive_workdir`` into it."""
