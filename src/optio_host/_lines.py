"""Splitting a byte stream into lines while tracking byte offsets."""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["LineSplitter", "decode_line", "iter_lines"]


def decode_line(raw: bytes) -> str:
    """A line's text: UTF-8 with invalid bytes replaced, without its ``\\r\\n`` or ``\\n``."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


class LineSplitter:
    """Feed bytes in any split; get back complete lines and where each one ends.

    ``offset`` is the byte offset just past the last complete line handed out,
    so a reader can resume at exactly that point and see no line twice.
    Lines of any length are handled without quadratic rescanning.
    """

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self._buffer = bytearray()
        self._scanned = 0

    @property
    def pending(self) -> int:
        """Bytes received after the last complete line."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """Add ``data``; return ``(line_without_newline, end_offset)`` for each completed line."""
        self._buffer += data
        lines: list[tuple[bytes, int]] = []
        start = 0
        search = self._scanned
        while True:
            end = self._buffer.find(b"\n", search)
            if end < 0:
                break
            self.offset += end + 1 - start
            lines.append((bytes(self._buffer[start:end]), self.offset))
            start = search = end + 1
        if start:
            del self._buffer[:start]
        self._scanned = len(self._buffer)
        return lines


async def iter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Decoded lines of a chunk stream (a trailing line without newline is dropped)."""
    splitter = LineSplitter()
    async for chunk in chunks:
        for raw, _ in splitter.feed(chunk):
            yield decode_line(raw)
