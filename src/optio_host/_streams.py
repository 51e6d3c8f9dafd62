"""Chunked byte streams: bridges between blocking code in a thread and asyncio.

Blocking work (tar, gzip, local file I/O) runs in a dedicated thread; these
bridges move its bytes to and from async iterators with a small bounded
buffer, so memory stays flat whatever the data size, and the thread stops
promptly when the async side goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

__all__ = [
    "CHUNK_SIZE",
    "BlockingReader",
    "ProgressCallback",
    "ProgressThrottle",
    "StreamClosed",
    "Sha256Tap",
    "aclose_iterator",
    "iter_from_thread",
    "iter_local_file",
    "local_file_sha256",
    "run_in_thread",
    "sha256_of_chunks",
]

#: Transfer chunk size: large enough for throughput, small enough to keep memory flat.
CHUNK_SIZE = 256 * 1024

ProgressCallback = Callable[[float | None, str | None], Any]

T = TypeVar("T")


class StreamClosed(Exception):
    """Raised inside a producer thread when its consumer has gone away."""


async def run_in_thread(func: Callable[[], T], *, on_cancel: Callable[[], None]) -> T:
    """Run ``func`` in a new thread; on cancellation call ``on_cancel`` and wait for it to end.

    Waiting for the thread even when cancelled guarantees nothing keeps
    writing after this coroutine has returned (cancel-safe cleanup).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        try:
            result = func()
        except BaseException as exc:
            try:
                loop.call_soon_threadsafe(settle, None, exc)
            except RuntimeError:
                pass  # the loop is gone; nobody is waiting
        else:
            try:
                loop.call_soon_threadsafe(settle, result, None)
            except RuntimeError:
                pass

    threading.Thread(target=body, name="optio-host-io", daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        on_cancel()
        try:
            await asyncio.shield(done)
        except BaseException:
            pass
        raise


async def iter_from_thread(
    produce: Callable[[Callable[[bytes], None]], None],
    *,
    max_pending: int = 8,
) -> AsyncIterator[bytes]:
    """Yield what ``produce(emit)`` emits from a worker thread, with back-pressure.

    At most ``max_pending`` chunks wait between the thread and the consumer.
    When the consumer stops early, ``emit`` raises ``StreamClosed`` in the thread.
    """
    feed = _ThreadFeed(asyncio.get_running_loop(), max_pending)
    threading.Thread(target=feed.run, args=(produce,), name="optio-host-producer", daemon=True).start()
    try:
        while True:
            kind, value = await feed.queue.get()
            if kind == "data":
                feed.slots.release()
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        feed.stopped.set()
        feed.slots.release()


class _ThreadFeed:
    """The thread's side of ``iter_from_thread``: ``emit`` waits for a free slot, then posts."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_pending: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.slots = threading.Semaphore(max_pending)
        self.stopped = threading.Event()

    def post(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError as exc:  # loop closed under us
            raise StreamClosed from exc

    def emit(self, data: bytes) -> None:
        if not data:
            return
        self.slots.acquire()
        if self.stopped.is_set():
            raise StreamClosed
        self.post("data", bytes(data))

    def run(self, produce: Callable[[Callable[[bytes], None]], None]) -> None:
        try:
            produce(self.emit)
        except StreamClosed:
            return  # the consumer went away; nobody reads further
        except BaseException as exc:
            with contextlib.suppress(StreamClosed):
                self.post("error", exc)
            return
        with contextlib.suppress(StreamClosed):
            self.post("end", None)


class BlockingReader(io.RawIOBase):
    """A blocking, file-like view of an async byte iterator, for use in a worker thread."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._chunks = chunks
        self._loop = loop
        self._pending: memoryview = memoryview(b"")
        self._eof = False
        self._closed_by_owner = threading.Event()
        self._current: Any = None
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def abort(self) -> None:
        """Make the reading thread fail at its next (or current) read."""
        with self._lock:
            self._closed_by_owner.set()
            if self._current is not None:
                self._current.cancel()

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            if self._eof:
                return 0
            with self._lock:
                if self._closed_by_owner.is_set():
                    raise StreamClosed
                fut = asyncio.run_coroutine_threadsafe(_next_chunk(self._chunks), self._loop)
                self._current = fut
            try:
                chunk = fut.result()
            except BaseException as exc:
                if self._closed_by_owner.is_set():
                    raise StreamClosed from exc
                raise
            finally:
                with self._lock:
                    self._current = None
            if chunk is None:
                self._eof = True
                return 0
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise TypeError(f"a byte stream yielded {type(chunk).__name__}, expected bytes")
            self._pending = memoryview(chunk).cast("B")
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None


async def iter_local_file(path: str | os.PathLike[str]) -> AsyncIterator[bytes]:
    """Read a local file in ``CHUNK_SIZE`` chunks."""
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk


async def aclose_iterator(chunks: AsyncIterator[Any]) -> None:
    """Close an async iterator now if it can be closed (an async generator's ``finally`` runs).

    Left to the garbage collector, a generator's clean-up (a host-side tail, an
    inotify watch) runs only some loop iterations later.
    """
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def local_file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file on this machine, read in a thread (``OSError`` as ``open`` raises it)."""

    def digest() -> str:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    return await asyncio.to_thread(digest)


async def sha256_of_chunks(chunks: AsyncIterator[bytes]) -> str:
    """Hex SHA-256 of everything ``chunks`` yields."""
    digest = hashlib.sha256()
    async for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


class ProgressThrottle:
    """The one rule for progress reports: at most one per ``step`` percent points, never
    decreasing, and 100 % always told (a bar needs no more, and multi-GiB files stay cheap)."""

    def __init__(self, step: float = 1.0) -> None:
        self._step = step
        self.last: float | None = None

    def admit(self, percent: float) -> float | None:
        """``percent`` (clamped to 0-100) if it is to be reported now, else ``None``."""
        percent = min(100.0, max(0.0, percent))
        last = self.last
        if last is None or percent >= last + self._step or (percent >= 100.0 > last):
            self.last = percent
            return percent
        return None


class Sha256Tap:
    """Pass chunks through while hashing them and counting bytes, reporting progress."""

    def __init__(
        self,
        total: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self._hash = hashlib.sha256()
        self.count = 0
        self._total = total
        self._progress = progress
        self._throttle = ProgressThrottle()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    async def tap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.update(chunk)
            yield chunk

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.count += len(chunk)
        self._report()

    def _report(self) -> None:
        if self._progress is None or not self._total:
            return
        shown = self._throttle.admit(100.0 * self.count / self._total)
        if shown is not None:
            self._progress(round(shown, 1), None)
