"""``Deliverable``: a file a worker handed over, opened and checked on the host, streamed on demand.

The session opens a deliverable before handing it to ``on_deliverable_file``.
On a host that has ``open_regular_file`` (``LocalHost``, ``RemoteHost``) the
open comes first and the check is made on what was opened: a regular file
whose real path is under the real ``deliverables/`` folder. So the bytes
handed over are those of the file checked, even if the worker swaps the name
for a link or a FIFO meanwhile. Any other host (a consumer's own fake with
only the 0.1.2 methods) is asked for ``fetch_bytes_from_host(path)``, after a
``realpath`` check when it has one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from optio_host._localfs import write_atomic
from optio_host._streams import CHUNK_SIZE, aclose_iterator
from optio_host.host.base import sized_chunks
from optio_host.protocol.parser import relativize_deliverable_path, validate_deliverable_path
from optio_host.worker import path_inside

__all__ = ["Deliverable", "DeliverableHandler", "local_target", "open_deliverable"]

#: The largest deliverable given to a text callback (``on_deliverable``): it is held in memory.
TEXT_LIMIT = 256 * 1024 * 1024

_Opener = Callable[[], Awaitable[tuple[int, AsyncIterator[bytes]]]]
_T = TypeVar("_T")
#: How the session runs a host operation (again after a reconnect, on a host that can).
Retrying = Callable[[Callable[[], Awaitable[_T]]], Awaitable[_T]]


class Deliverable:
    """A deliverable file: its path under ``deliverables/``, its size, and its bytes on demand.

    The first read (``save``, ``chunks`` or ``read_bytes``) streams the file
    the session opened and checked; a later read opens and checks it again.
    Memory stays flat whatever the size, except in ``read_bytes``. No read goes past the
    size seen when the file was opened: one that grows meanwhile raises ``OSError``.
    """

    def __init__(
        self, relative_path: str, path: str, size: int, opened: AsyncIterator[bytes], opener: _Opener
    ) -> None:
        #: The path relative to ``<workdir>/deliverables/``, as announced.
        self.relative_path = relative_path
        #: The absolute path on the host.
        self.path = path
        #: Size in bytes when it was opened.
        self.size = size
        self._opened: AsyncIterator[bytes] | None = opened
        self._opener = opener

    def __repr__(self) -> str:
        return f"Deliverable({self.relative_path!r}, size={self.size})"

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes, in chunks: at most ``size``; ``OSError`` if it changed size while being read."""
        stream, self._opened = self._opened, None
        size = self.size
        if stream is None:
            size, stream = await self._opener()
        # Never past the size seen at open, whatever the host's stream does (a consumer's own host).
        checked = sized_chunks(stream, size, f"deliverable {self.relative_path}")
        try:
            async for chunk in checked:
                yield chunk
        finally:
            await aclose_iterator(checked)

    async def read_bytes(self) -> bytes:
        """The whole file in memory (at most ``size`` bytes: a file that grows is refused)."""
        data = bytearray()
        async for chunk in self.chunks():
            data += chunk
        return bytes(data)

    async def save(self, local_path: str | os.PathLike[str]) -> str:
        """Stream the file to ``local_path`` on this machine, atomically; return its hex SHA-256.

        Written to a temporary name beside ``local_path`` and renamed once
        complete; on any failure or cancellation ``local_path`` is left as it was.
        """
        digest = hashlib.sha256()
        target = os.path.abspath(os.fspath(local_path))
        await write_atomic(target, _hashed(self.chunks(), digest))
        return digest.hexdigest()

    async def save_into(self, folder: str | os.PathLike[str]) -> str:
        """``save`` to ``folder/relative_path`` on this machine (folders made); returns the SHA-256.

        ``ValueError`` if that path, or a symlink already inside ``folder``,
        would lead outside ``folder``: a worker's names never write elsewhere.
        """
        return await self.save(local_target(folder, self.relative_path))

    async def aclose(self) -> None:
        """Release the opened file if no read used it (the session does this after the callback)."""
        stream, self._opened = self._opened, None
        if stream is not None:
            await aclose_iterator(stream)


def local_target(folder: str | os.PathLike[str], relative: str) -> str:
    """The local path for ``relative`` under ``folder`` (parents made); ``ValueError`` if it leads out.

    Lexically (``..``, an absolute path) and through symlinks already inside
    ``folder``; a symlink at the target itself is removed (the file replaces it).
    """
    root = os.path.abspath(os.fspath(folder))
    target = os.path.normpath(os.path.join(root, relative))
    if os.path.isabs(relative) or target == root or not path_inside(target, root):
        raise ValueError(f"refusing to write {relative!r} outside {root}")
    # Checked before creating folders, as makedirs would follow a link.
    if not path_inside(os.path.realpath(os.path.dirname(target)), os.path.realpath(root)):
        raise ValueError(f"refusing to write {relative!r}: a symlink leads outside {root}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(target):
        os.unlink(target)
    return target


async def _hashed(chunks: AsyncIterator[bytes], digest: Any) -> AsyncIterator[bytes]:
    """``chunks`` as they are, hashed into ``digest`` in a thread while the next one is written."""
    pending: asyncio.Future[None] | None = None
    try:
        async for chunk in chunks:
            if pending is not None:
                await pending  # in order: one update at a time
            pending = asyncio.ensure_future(asyncio.to_thread(digest.update, chunk))
            yield chunk
        if pending is not None:
            await pending
            pending = None
    finally:
        if pending is not None:
            await asyncio.wait([pending])  # no thread may outlive the save
        await aclose_iterator(chunks)


async def open_deliverable(host: Any, relative_path: str, path: str, folder: str) -> Deliverable:
    """Open the deliverable at ``path`` on ``host``, checked to be a regular file under ``folder``.

    ``folder`` is the real path of ``deliverables/``. Raises
    ``FileNotFoundError`` when it is missing and ``OSError`` (``PermissionError``
    when it leads outside ``folder``) when it is refused.
    """
    if hasattr(host, "open_regular_file"):

        async def opener() -> tuple[int, AsyncIterator[bytes]]:
            size, chunks = await host.open_regular_file(path, under=folder)
            return int(size), chunks

    else:

        async def opener() -> tuple[int, AsyncIterator[bytes]]:
            return await _fetch_whole(host, path, folder)

    size, opened = await opener()
    return Deliverable(relative_path, path, size, opened, opener)


async def _fetch_whole(host: Any, path: str, folder: str) -> tuple[int, AsyncIterator[bytes]]:
    """For a host with only the 0.1.2 methods: check with ``realpath`` if it has one, then fetch."""
    if hasattr(host, "realpath"):
        real = posixpath.normpath(await host.realpath(path))
        if real == posixpath.normpath(folder) or not path_inside(real, folder):
            raise PermissionError(f"{path} resolves to {real}, outside {folder}/; refused")
    data = await host.fetch_bytes_from_host(path)  # one positional argument, as 0.1.2 fakes expect

    async def chunks() -> AsyncIterator[bytes]:
        view = memoryview(data)
        for start in range(0, len(view), CHUNK_SIZE):
            yield bytes(view[start : start + CHUNK_SIZE])

    return len(data), chunks()


class DeliverableHandler:
    """The session's deliverable half: announce, open and check, hand over, report each skip.

    Every text reported here is one a consumer observes (SPEC: exact texts).
    """

    def __init__(
        self,
        host: Any,
        ctx: Any,
        hook_ctx: Any,
        on_text: Callable[[Any, str, str], Awaitable[None]] | None,
        on_file: Callable[[Any, Deliverable], Awaitable[None]] | None,
        on_skipped: Callable[[str, str], None] | None,
    ) -> None:
        self._host = host
        self._ctx = ctx
        self._hook_ctx = hook_ctx
        self._on_text = on_text
        self._on_file = on_file
        self._on_skipped = on_skipped
        #: The real path of ``deliverables/`` on the host (set by the session's prepare step).
        self.folder = ""

    @property
    def fetches(self) -> bool:
        """Whether deliverables are opened at all (only when a callback wants them)."""
        return self._on_text is not None or self._on_file is not None

    def announce(self, path: str, workdir: str) -> tuple[str, str] | None:
        """Check a ``DELIVERABLE:`` path lexically; ``(relative, absolute)`` to fetch, or None."""
        try:
            absolute = validate_deliverable_path(path, workdir)
        except ValueError:
            self._skip(path, f"invalid deliverable path {path!r}, skipping")
            return None
        try:
            relative = relativize_deliverable_path(absolute, workdir)
        except ValueError:
            self._skip(path, f"deliverable {path!r}: not under deliverables/, skipping (malfunction)")
            return None
        self._ctx.report_progress(None, f"Deliverable: {relative}")
        return relative, absolute

    async def hand_over(self, relative: str, path: str, retrying: Retrying[Any]) -> None:
        """Open and check the deliverable, then give it to the callback; never raises for it."""
        try:
            deliverable: Deliverable = await retrying(
                lambda: open_deliverable(self._host, relative, path, self.folder)
            )
        except Exception as exc:
            self._skip_unreadable(relative, exc)
            return
        try:
            if self._on_file is not None:
                await self._call(relative, self._on_file(self._hook_ctx, deliverable))
            elif self._on_text is not None:
                await self._hand_over_text(deliverable, retrying)
        finally:
            await deliverable.aclose()

    def _skip_unreadable(self, relative: str, exc: Exception) -> None:
        """The published texts for a deliverable that could not be opened or read."""
        if isinstance(exc, FileNotFoundError):
            self._skip(relative, f"Deliverable {relative}: not found")
        else:
            self._skip(relative, f"Deliverable {relative}: fetch failed: {exc!r}, skipping")

    async def _hand_over_text(self, deliverable: Deliverable, retrying: Retrying[Any]) -> None:
        relative = deliverable.relative_path
        try:
            if deliverable.size > TEXT_LIMIT:
                raise ValueError(
                    f"{deliverable.path} has {deliverable.size} bytes, more than the {TEXT_LIMIT} a text "
                    "deliverable may have (read into memory); take it with on_deliverable_file"
                )
            data: bytes = await retrying(deliverable.read_bytes)
        except Exception as exc:
            self._skip_unreadable(relative, exc)
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._skip(relative, f"Deliverable {relative}: not valid UTF-8, skipping callback")
            return
        if self._on_text is not None:
            await self._call(relative, self._on_text(self._hook_ctx, relative, text))

    async def _call(self, relative: str, call: Awaitable[None]) -> None:
        try:
            await call
        except Exception as exc:
            self._skip(relative, f"on_deliverable callback raised: {exc!r}")

    def _skip(self, path: str, message: str) -> None:
        self._ctx.report_progress(None, message)
        if self._on_skipped is not None:
            self._on_skipped(path, message)
