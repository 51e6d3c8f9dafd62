"""Files to and from a host, written once over a backend's primitives: uploads with checksums
and skip-if-unchanged, checked and whole-file reads, globbing, line tailing."""

from __future__ import annotations

import asyncio
import io
import os
import posixpath
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from optio_host._lines import iter_lines
from optio_host._localfs import write_atomic
from optio_host._streams import (
    CHUNK_SIZE,
    ProgressCallback,
    Sha256Tap,
    aclose_iterator,
    iter_local_file,
    local_file_sha256,
    sha256_of_chunks,
)
from optio_host.host._core import HostCore
from optio_host.host.interface import FileSource
from optio_host.worker import path_inside

__all__ = ["ReleasingIterator", "Transfers", "checksum_mismatch", "normalize_sha256", "sized_chunks"]

#: ``fetch_bytes_from_host`` reserves memory for at most this much before reading.
_PRESIZE_LIMIT = 64 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAGIC = re.compile(r"[*?\[]")


@dataclass
class _Source:
    open: Callable[[], AsyncIterator[bytes]]
    size: int | None
    mode: int | None
    local_path: str | None

    async def sha256(self) -> str:
        if self.local_path is not None:
            return await local_file_sha256(self.local_path)
        return await sha256_of_chunks(self.open())


def _source(source: FileSource) -> _Source:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).cast("B")

        async def slices() -> AsyncIterator[bytes]:
            for start in range(0, len(data), CHUNK_SIZE):
                yield bytes(data[start : start + CHUNK_SIZE])

        return _Source(slices, len(data), None, None)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        info = os.stat(path)  # FileNotFoundError names the missing local file
        if not os.path.isfile(path):
            raise IsADirectoryError(f"upload source {path} is not a regular file")
        return _Source(lambda: iter_local_file(path), info.st_size, info.st_mode & 0o777, path)
    if hasattr(source, "__anext__"):
        used = False

        def once() -> AsyncIterator[bytes]:
            nonlocal used
            if used:
                raise RuntimeError("an async-iterator upload source can be read only once")
            used = True
            return source

        return _Source(once, None, None, None)
    raise TypeError(
        "upload source must be a local path, bytes, or an async iterator of bytes, "
        f"not {type(source).__name__}"
    )


def normalize_sha256(value: str) -> str:
    """A SHA-256 hex digest in lower case; ``ValueError`` unless it is 64 hex digits."""
    digest = value.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"expected_sha256 must be 64 hex digits, got {value!r}")
    return digest


def checksum_mismatch(path: str, expected: str, actual: str) -> ValueError:
    """The error for content whose SHA-256 differs from the one promised."""
    return ValueError(f"SHA-256 mismatch for {path}: expected {expected}, got {actual}")


class Transfers(HostCore):
    """Uploads, downloads, globbing and tailing, on top of ``HostCore``'s primitives."""

    async def write_text(self, relpath: str, content: str) -> None:
        if not relpath or relpath.startswith("/"):
            raise ValueError(f"write_text needs a path relative to the workdir, got {relpath!r}")
        target = posixpath.normpath(posixpath.join(self.workdir, relpath))
        if not path_inside(target, self.workdir):
            raise ValueError(f"write_text path {relpath!r} leaves the workdir")
        await self.put_file_to_host(content.encode("utf-8"), target)

    async def put_file_to_host(
        self,
        source: FileSource,
        absolute_target: str,
        *,
        expected_sha256: str | None = None,
        skip_if_unchanged: bool = False,
        progress_cb: ProgressCallback | None = None,
    ) -> bool:
        target = self._resolve(absolute_target, what="upload target")
        src = _source(source)
        expected = normalize_sha256(expected_sha256) if expected_sha256 is not None else None
        if skip_if_unchanged:
            if expected is None and src.local_path is None and src.size is None:
                raise ValueError(
                    "skip_if_unchanged with an async-iterator source needs expected_sha256 "
                    "(the stream cannot be read twice to hash it first)"
                )
            wanted = expected or await src.sha256()
            if await self.file_sha256(target) == wanted:
                if progress_cb is not None:
                    progress_cb(None, "already up to date")
                return False
        tap = Sha256Tap(src.size, progress_cb) if expected else _CountTap(src.size, progress_cb)

        def verify() -> None:
            if expected is not None and tap.hexdigest() != expected:
                raise checksum_mismatch(target, expected, tap.hexdigest())
            if src.size is not None and tap.count != src.size:
                raise OSError(
                    f"upload of {target} read {tap.count} bytes but the source has {src.size}; "
                    "it changed while being copied"
                )

        await self._write_file_atomic(target, tap.tap(src.open()), mode=src.mode, before_commit=verify)
        return True

    async def open_regular_file(self, path: str, *, under: str) -> tuple[int, AsyncIterator[bytes]]:
        """Open ``path`` on the host, then verify what was opened; return its size and bytes.

        The opened file must be a regular file whose real path (every link
        resolved, as the host sees it) lies under the folder ``under`` (itself
        a real path). So the bytes handed over are those of the file checked,
        whatever is swapped in meanwhile. A FIFO or device is refused without
        being read and without blocking. Missing: ``FileNotFoundError``;
        refused: ``PermissionError`` (outside) or ``OSError`` (not a regular file).
        Close the iterator (``aclose``) when done with it early.
        """
        folder = posixpath.normpath(self._resolve(under, what="folder"))
        target = self._resolve(path)
        size, chunks = await self._open_checked(target, folder)
        return size, sized_chunks(chunks, size, target)

    async def fetch_bytes_from_host(
        self, absolute_path: str, *, progress_cb: ProgressCallback | None = None
    ) -> bytes:
        path = self._resolve(absolute_path)
        size, raw = await self._read_file(path)
        chunks = sized_chunks(raw, size, path)
        tap = _CountTap(size, progress_cb)
        # A pre-sized BytesIO hands its buffer out without a copy, so peak memory is about the
        # file size, not twice it. Only up to a bound: the size is what the worker claims (a
        # sparse file says 8 GiB and holds nothing), so beyond it memory grows with what is read.
        buffer = io.BytesIO()
        if size:
            buffer.seek(min(size, _PRESIZE_LIMIT) - 1)
            buffer.write(b"\0")
            buffer.seek(0)
        try:
            async for chunk in tap.tap(chunks):
                buffer.write(chunk)
        finally:
            await aclose_iterator(chunks)
        return buffer.getvalue()

    async def fetch_file_from_host(
        self,
        absolute_path: str,
        local_path: str | os.PathLike[str],
        *,
        progress_cb: ProgressCallback | None = None,
    ) -> None:
        path = self._resolve(absolute_path)
        size, raw = await self._read_file(path)
        chunks = sized_chunks(raw, size, path)
        tap = _CountTap(size, progress_cb)
        target = os.path.abspath(os.fspath(local_path))
        try:
            await write_atomic(target, tap.tap(chunks))
        finally:
            await aclose_iterator(chunks)

    async def glob(self, pattern: str) -> list[str]:
        if not pattern:
            raise ValueError("glob pattern must not be empty")
        root = "/" if pattern.startswith("/") else self.workdir
        segments = [segment for segment in pattern.split("/") if segment]
        dirs_only = pattern.endswith("/")
        candidates = [root]
        needs_check = False
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if not _MAGIC.search(segment):
                candidates = [posixpath.join(path, segment) for path in candidates]
                needs_check = True
                continue
            matched: list[str] = []
            for folder in candidates:
                entries = await self._list_dir(folder)
                for name, is_dir in entries or ():
                    if (not last or dirs_only) and not is_dir:
                        continue
                    if name.startswith(".") and not segment.startswith("."):
                        continue
                    if fnmatchcase(name, segment):
                        matched.append(posixpath.join(folder, name))
            candidates = matched
            needs_check = False
        if needs_check or dirs_only:
            found = []
            for path in candidates:
                if dirs_only:
                    if await self._list_dir(path) is not None:
                        found.append(path)
                elif await self._exists(path):
                    found.append(path)
            candidates = found
        return sorted(set(candidates))

    # ---------------------------------------------------------------- following files

    async def tail_file(self, absolute_path: str) -> AsyncIterator[str]:
        # Lines over the backend's tail_bytes, so both hosts split them the same way.
        chunks = self.tail_bytes(self._resolve(absolute_path))
        try:
            async for line in iter_lines(chunks):
                yield line
        finally:
            await aclose_iterator(chunks)  # end the tail (its watch, its host process) now


class ReleasingIterator(AsyncIterator[bytes]):
    """Chunks from ``chunks``; ``aclose()`` also runs ``release`` (once), even if never iterated.

    (An async generator closed before its first step never runs its ``finally``, so a
    file opened for it would stay open.)
    """

    def __init__(self, chunks: AsyncIterator[bytes], release: Callable[[], Awaitable[None]]) -> None:
        self._chunks = chunks
        self._release: Callable[[], Awaitable[None]] | None = release

    def __aiter__(self) -> ReleasingIterator:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop reading and release the file (a remote reader process, a descriptor)."""
        release, self._release = self._release, None
        try:
            await aclose_iterator(self._chunks)
        finally:
            if release is not None:
                await asyncio.shield(release())


def sized_chunks(chunks: AsyncIterator[bytes], size: int, path: str) -> ReleasingIterator:
    """``chunks`` of a file whose ``size`` was read at open (fstat); never more than ``size`` bytes.

    A file that turns out longer (or shorter) raises ``OSError`` "changed size while being
    read" as soon as that shows, so memory and disk stay bounded by ``size`` whatever a worker
    appends meanwhile. Closing the result closes ``chunks`` (stops the read on the host).
    """

    async def checked() -> AsyncIterator[bytes]:
        count = 0
        async for chunk in chunks:
            count += len(chunk)
            if count > size:
                raise OSError(
                    f"{path} changed size while being read (more than the {size} bytes it had when opened)"
                )
            yield chunk
        if count != size:
            raise OSError(f"{path} changed size while being read ({count} of {size} bytes)")

    return ReleasingIterator(checked(), lambda: aclose_iterator(chunks))


class _CountTap(Sha256Tap):
    """A ``Sha256Tap`` that only counts (hashing costs time on multi-GiB transfers)."""

    def update(self, chunk: bytes) -> None:
        self.count += len(chunk)
        self._report()
