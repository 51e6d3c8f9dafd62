"""Striping: one ordered byte stream (an upload, a restore's archive) written to a file on a host over
several SSH channels at once.

One channel carries at most a window per round trip, and for data we send the window is sshd's
(OpenSSH: 2 MiB, so about 40 MiB/s at 50 ms). The stream is cut into segments in order; each goes
to the next lane (a channel running ``PUT_LANE``, which writes it at its offset), and the writer
moves on without waiting for it to be sent, so several windows are in flight. Only the first lane
waits for a session slot: the others take slots free at the time or none, and join as their
channels open, so striping never waits for a slot that other commands hold. Each lane acknowledges
its frames in order, and an acknowledgement for anything else fails the write. Unsent data is at
most one segment per lane. Striping pays only on a long link (``SLOW_LAUNCH``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

from optio_host.process import ProcessHandle

__all__ = ["LANES", "SEGMENT", "SLOW_LAUNCH", "StripedWriter", "chain_head", "segments", "take_head"]

#: Bytes per segment: large enough that per-segment work (a header, two small processes on the
#: host) is noise, small enough that ``LANES`` unsent segments stay a modest amount of memory.
SEGMENT = 4 * 1024 * 1024
#: Channels per upload: 4 x sshd's 2 MiB window covers about 160 MiB/s at 50 ms.
LANES = 4
#: Stripe only when starting a command took this long (about three round trips, so a round trip
#: of 10 ms or more, where one window per round trip caps a stream near 200 MiB/s). On a short
#: link one channel is faster: each lane costs the host two small processes per segment.
SLOW_LAUNCH = 0.03


async def segments(chunks: AsyncIterator[bytes], size: int = SEGMENT) -> AsyncIterator[list[bytes]]:
    """``chunks`` regrouped into lists of exactly ``size`` bytes (the last one may be shorter)."""
    group: list[bytes] = []
    filled = 0
    async for chunk in chunks:
        view = memoryview(chunk)
        while view:
            piece = view[: size - filled]
            group.append(bytes(piece))
            filled += len(piece)
            view = view[len(piece) :]
            if filled == size:
                yield group
                group, filled = [], 0
    if group:
        yield group


async def take_head(
    chunks: AsyncIterator[bytes], limit: int
) -> tuple[list[bytes], AsyncIterator[bytes] | None]:
    """The first chunks of ``chunks``, up to at least ``limit`` bytes, and the rest (``None``
    when the stream ended before ``limit``)."""
    head: list[bytes] = []
    held = 0
    async for chunk in chunks:
        head.append(chunk)
        held += len(chunk)
        if held >= limit:
            return head, chunks
    return head, None


async def chain_head(head: list[bytes], rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    """``take_head``'s two parts as one stream again."""
    for chunk in head:
        yield chunk
    if rest is not None:
        async for chunk in rest:
            yield chunk


class _Lane:
    def __init__(self, handle: ProcessHandle, on_written: Callable[[int, int], None] | None) -> None:
        if handle.stdin is None:  # pragma: no cover - launched with stdin=True
            raise RuntimeError("a lane needs its process's stdin")
        self.handle = handle
        self.stdin = handle.stdin
        self.output = bytearray()
        #: Frames sent and not acknowledged yet, in order (a lane writes them in order).
        self.unacknowledged: deque[tuple[int, int]] = deque()
        self._on_written = on_written
        self.reader = asyncio.ensure_future(self._collect())

    async def _collect(self) -> None:
        """Acknowledgements ("ok <offset> <length>", one per frame written, in order) go to
        ``on_written``; anything else is kept (the start of it) to explain a failure."""
        partial = b""
        async for piece in self.handle.stdout:
            *lines, partial = (partial + piece).split(b"\n")
            for line in lines:
                if line.startswith(b"ok "):
                    self._acknowledged(line)
                else:
                    self.output.extend((line + b"\n")[: 4096 - len(self.output)])
        self.output.extend(partial[: 4096 - len(self.output)])

    def _acknowledged(self, line: bytes) -> None:
        # Only the next frame this lane was sent may be acknowledged: anything else (a lane out
        # of step, or output from elsewhere) would let the host claim bytes it never received.
        expected = self.unacknowledged[0] if self.unacknowledged else None
        if expected is None or line != b"ok %d %d" % expected:
            raise OSError(f"a striped write's lane acknowledged {line[:80]!r}, expecting {expected}")
        self.unacknowledged.popleft()
        if self._on_written is not None:
            self._on_written(*expected)


class StripedWriter:
    """Owns the lanes of one striped write: ``async with`` kills any lane left running."""

    def __init__(
        self,
        launch: Callable[[bool], Awaitable[ProcessHandle]],
        *,
        lanes: int = LANES,
        on_written: Callable[[int, int], None] | None = None,
    ) -> None:
        self._launch = launch
        self._on_written = on_written
        self._wanted = lanes
        self._lanes: list[_Lane] = []
        self._pending: list[asyncio.Future[ProcessHandle]] = []
        self._turn = 0
        self._finished = False
        #: Bytes handed to the lanes so far (the offset of the next segment).
        self.written = 0

    async def __aenter__(self) -> StripedWriter:
        # The first lane waits for a slot like any command; the others take only spare ones.
        self._lanes.append(_Lane(await self._launch(False), self._on_written))
        self._pending = [asyncio.ensure_future(self._launch(True)) for _ in range(self._wanted - 1)]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self._close())

    async def send(self, segment: list[bytes]) -> None:
        """Queue ``segment`` for writing after the ones before it (at offset ``written``); waits
        only for the chosen lane's backlog."""
        self._adopt()
        lane = self._lanes[self._turn % len(self._lanes)]
        self._turn += 1
        await lane.stdin.drain()
        offset, length = self.written, sum(map(len, segment))
        lane.unacknowledged.append((offset, length))
        lane.stdin.write(f"{offset} {length}\n".encode())
        for piece in segment:
            lane.stdin.write(piece)
        self.written += length

    async def finish(self) -> list[tuple[int, str]]:
        """Send EOF on every lane and wait for each; its exit code and the start of its output."""
        for future in self._pending:
            future.cancel()
        self._adopt()
        for lane in self._lanes:
            lane.stdin.close()
        results = []
        for lane in self._lanes:
            await lane.reader
            results.append((await lane.handle.wait(), lane.output.decode(errors="replace").strip()))
        self._finished = True
        return results

    def _adopt(self) -> None:
        """Lanes whose channels have opened since join; a lane that could not open is not needed."""
        for future in [f for f in self._pending if f.done()]:
            self._pending.remove(future)
            if not future.cancelled() and future.exception() is None:
                self._lanes.append(_Lane(future.result(), self._on_written))

    async def _close(self) -> None:
        for future in self._pending:
            future.cancel()
        for future in self._pending:
            with contextlib.suppress(BaseException):
                await (await future).kill()
        for lane in self._lanes:
            lane.reader.cancel()
            if not self._finished:
                await lane.handle.kill()
