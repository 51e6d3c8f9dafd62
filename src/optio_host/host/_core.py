"""The part of every host that a backend fills in: identity, lifecycle and the primitives
(start and end a process, stream a file in and out, list a folder). Built on by ``_transfers``
and ``base``. ``HostCore`` subclasses the ``Host`` protocol explicitly: the contract's
docstrings live there, once, and every host inherits them."""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

from optio_host.errors import HostConnectionError, HostNotConnected
from optio_host.host.interface import Host

__all__ = ["HostCore"]

_log = logging.getLogger("optio_host")


class HostCore(Host, ABC):
    """A host's identity (taskdir, workdir), its lifecycle, and the primitives a backend implements.

    A backend also implements the ``Host`` members this chain leaves open: ``setup_workdir``,
    ``cleanup_taskdir``, ``establish_tunnel``, ``resolve_host_home``, ``launch_subprocess``,
    ``terminate_subprocess``, ``remove_file``, ``realpath``, ``file_size``, ``file_sha256``,
    ``archive_workdir``, ``restore_workdir`` and ``tail_bytes``. mypy treats them as abstract
    (an explicit subclass of a protocol must implement its empty members), and
    ``tests/test_interface_docs.py`` checks that both hosts do.
    """

    def __init__(self, taskdir: str | os.PathLike[str] | None) -> None:
        self._taskdir: str | None = None
        self._owns_taskdir = taskdir is None
        if taskdir is not None:
            self._taskdir = self._normalize_taskdir(os.fspath(taskdir))
        self._home: str | None = None
        self.left_behind_taskdir: str | None = None
        """A private taskdir a lost connection kept ``disconnect()`` from removing (else ``None``);
        the next ``connect()`` removes it."""

    # ---------------------------------------------------------------- identity

    def _normalize_taskdir(self, taskdir: str) -> str:
        if not taskdir:
            raise ValueError("taskdir must not be empty")
        if not taskdir.startswith("/"):
            raise ValueError(f"taskdir must be an absolute path, got {taskdir!r}")
        return posixpath.normpath(taskdir)

    @property
    def taskdir(self) -> str:
        if self._taskdir is None:
            raise HostNotConnected(
                f"{type(self).__name__} was created without a taskdir; "
                "a private one is made at connect() - connect first"
            )
        return self._taskdir

    @property
    def workdir(self) -> str:
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

    # ---------------------------------------------------------------- files (the primitives of Transfers)

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
    async def _list_dir(self, path: str) -> list[tuple[str, bool]] | None:
        """``(name, is_dir)`` of a folder's entries; ``None`` if it is not a folder."""

    @abstractmethod
    async def _exists(self, path: str) -> bool:
        """Whether anything (even a dangling link) is at ``path``."""
