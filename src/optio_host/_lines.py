"""Splitting a byte stream into lines while tracking byte offsets, optionally cutting long lines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Final, NamedTuple

__all__ = ["DEFAULT_LINE_LIMIT", "FEED_PIECE", "Line", "LineSplitter", "decode_line", "iter_lines", "pieces"]

#: Where a line written by a worker is cut by default (the session driver, the CLI's display).
DEFAULT_LINE_LIMIT: Final = 1024 * 1024
#: Feed worker bytes in pieces of at most this size: a chunk of bare newlines (a remote read
#: may be 8 MiB) would otherwise become millions of ``Line`` objects at once (~80 bytes each).
FEED_PIECE: Final = 4 * 1024


def pieces(data: bytes) -> Iterator[bytes]:
    """``data`` in slices of at most ``FEED_PIECE`` bytes."""
    for start in range(0, len(data), FEED_PIECE):
        yield data[start : start + FEED_PIECE]


def decode_line(raw: bytes) -> str:
    """A line's text: UTF-8 with invalid bytes replaced, without its ``\\r\\n`` or ``\\n``."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


class Line(NamedTuple):
    """One complete line handed out by a ``LineSplitter``."""

    #: The line without its newline (its first ``limit`` bytes if it was cut).
    raw: bytes
    #: Byte offset just past the line's newline.
    end: int
    #: Bytes of the line dropped past the limit (0: ``raw`` is the whole line).
    cut: int = 0


class LineSplitter:
    """Feed bytes in any split; get back complete lines and where each one ends.

    ``offset`` is the byte offset just past the last complete line handed out,
    so a reader can resume at exactly that point and see no line twice.
    Each byte is scanned once, so lines of any length cost linear time. With a
    ``limit``, at most that many bytes of a line are kept (memory stays bounded
    whatever the writer does); the rest is counted in ``Line.cut`` and dropped.
    """

    def __init__(self, offset: int = 0, *, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 byte, got {limit}")
        self.offset = offset
        self._limit = limit
        self._buffer = bytearray()  # the current line's (kept) bytes: never holds a newline
        self._cut = 0

    @property
    def pending(self) -> int:
        """Bytes received after the last complete line (kept or cut)."""
        return len(self._buffer) + self._cut

    def feed(self, data: bytes) -> list[Line]:
        """Add ``data``; return every line it completed, in order."""
        lines: list[Line] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._keep(data, start, len(data))
                return lines
            if self.pending == 0 and (self._limit is None or end - start <= self._limit):
                raw = data[start:end]  # a whole line inside this chunk: one copy
            else:
                self._keep(data, start, end)
                raw = bytes(self._buffer)
                self._buffer.clear()
            self.offset += len(raw) + self._cut + 1
            lines.append(Line(raw, self.offset, self._cut))
            self._cut = 0
            start = end + 1

    def _keep(self, data: bytes, start: int, end: int) -> None:
        """Add ``data[start:end]`` (no newline in it) to the current line, up to the limit."""
        if self._limit is not None:
            room = max(self._limit - len(self._buffer), 0)
            if end - start > room:
                self._cut += end - start - room
                end = start + room
        if end > start:
            self._buffer += memoryview(data)[start:end]


async def iter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Decoded lines of a chunk stream, whole (a trailing line without newline is dropped)."""
    splitter = LineSplitter()
    async for chunk in chunks:
        for piece in pieces(chunk):
            for line in splitter.feed(piece):
                yield decode_line(line.raw)
