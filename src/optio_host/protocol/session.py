"""The log-protocol session driver: follow ``optio.log``, report progress, fetch deliverables.

``run_log_protocol_session`` prepares the workdir, runs the task's ``body``
and, concurrently, follows ``<workdir>/optio.log`` line by line (see
``optio_host.protocol.parser``). Four cooperating tasks share one outcome,
first result wins:

- the *tail* reads the log from a byte offset, dispatches every complete line
  exactly once, and queues deliverables (a full queue pauses the tail, so
  nothing is dropped);
- the *fetcher* fetches queued deliverables one at a time, in order, and hands
  them to ``on_deliverable``; it ends the session successfully once it has
  handled everything queued before ``DONE``;
- the *body* runs the task's own work; returning before ``DONE`` was seen
  fails the session, once the tail has read what the log held at that moment;
- the *watch* ends the session quietly when ``ctx.should_continue()`` turns false.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, TypeVar

from optio_host._lines import DEFAULT_LINE_LIMIT, LineSplitter, decode_line, pieces
from optio_host._streams import aclose_iterator
from optio_host.context import HookContext
from optio_host.errors import HostConnectionError, SessionFailed
from optio_host.host.interface import Host
from optio_host.protocol.deliverable import Deliverable, DeliverableHandler
from optio_host.protocol.parser import (
    DELIVERABLES_DIR,
    LOG_NAME,
    DeliverableEvent,
    DoneEvent,
    ErrorEvent,
    LogEvent,
    StatusEvent,
    UnknownLine,
    parse_log_line,
)
from optio_host.quoting import join

__all__ = [
    "DELIVERABLE_QUEUE_BOUND",
    "DeliverableCallback",
    "DeliverableFileCallback",
    "HookCallback",
    "SessionFailed",
    "_SessionFailed",
    "fetch_deliverable_text",
    "run_log_protocol_session",
]

#: The name 0.1.x consumers catch; the same class as ``optio_host.errors.SessionFailed``.
_SessionFailed = SessionFailed


class WorkerReportedError(SessionFailed):
    """The worker wrote an ``ERROR`` line; ``str()`` is its message (or ``agent reported ERROR``)."""


class EndedWithoutDone(SessionFailed):
    """The body returned, or the log's tail ended, before the worker wrote ``DONE``."""


#: Deliverables waiting to be fetched; when full, reading the log pauses until one is handled.
DELIVERABLE_QUEUE_BOUND: Final = 64

#: ``on_deliverable(hook_ctx, relative_path, text)``.
DeliverableCallback = Callable[[HookContext, str, str], Awaitable[None]]

#: ``on_deliverable_file(hook_ctx, deliverable)``: the file itself, any bytes, any size.
DeliverableFileCallback = Callable[[HookContext, Deliverable], Awaitable[None]]

#: ``on_deliverable_skipped(path, message)``: ``path`` as the worker wrote it (or relative
#: under ``deliverables/`` once announced), ``message`` the text reported as progress.
SkipCallback = Callable[[str, str], None]

#: ``before_execute(hook_ctx)`` / ``after_execute(hook_ctx)``.
HookCallback = Callable[[HookContext], Awaitable[None]]

#: The task's work: ``body(host, hook_ctx)``.
SessionBody = Callable[[Host, HookContext], Awaitable[object]]

_T = TypeVar("_T")

#: How often ``ctx.should_continue()`` is polled when the context has no cancellation event.
CANCEL_POLL_INTERVAL: Final = 0.1
#: Log lines dispatched between two yields to the event loop (empty lines await nothing).
LINES_PER_YIELD: Final = 64

#: After ``body`` returns without ``DONE``: how long the tail may take to read what the log holds.
CATCH_UP_TIMEOUT: Final = 5.0

#: Default budget for getting a lost connection back before the session fails.
RECONNECT_TIMEOUT: Final = 180.0
#: Pause between attempts to reach the host again.
_RECONNECT_PAUSE: Final = 1.0


async def fetch_deliverable_text(host: Host, absolute_path: str) -> str:
    """The deliverable's contents decoded as UTF-8 (``UnicodeDecodeError`` if it is not)."""
    data = await host.fetch_bytes_from_host(absolute_path)
    return data.decode("utf-8")


async def run_log_protocol_session(
    host: Host,
    ctx: Any,
    *,
    body: SessionBody,
    on_deliverable: DeliverableCallback | None = None,
    before_execute: HookCallback | None = None,
    after_execute: HookCallback | None = None,
    on_deliverable_file: DeliverableFileCallback | None = None,
    on_deliverable_skipped: SkipCallback | None = None,
    reconnect_timeout: float = RECONNECT_TIMEOUT,
    max_line_bytes: int = DEFAULT_LINE_LIMIT,
) -> None:
    """Run ``body(host, hook_ctx)`` while following ``<workdir>/optio.log``; return on ``DONE``.

    Prepares the workdir (``deliverables/``, an empty ``optio.log``), awaits
    ``before_execute(hook_ctx)``, then runs the session; it returns once every
    deliverable queued before ``DONE`` was handled (the body is then cancelled)
    or when ``ctx.should_continue()`` turns false. ``SessionFailed``: an
    ``ERROR`` line, ``body`` returning before ``DONE``, the log ending early or
    replaced by a non-regular file, or no connection for ``reconnect_timeout``
    seconds; ``body``'s own exception propagates as is. ``after_execute(hook_ctx)``
    always runs last; its failure is raised only if the session had not failed.
    Deliverables go to ``on_deliverable(hook_ctx, relative_path, text)`` (UTF-8)
    or ``on_deliverable_file(hook_ctx, deliverable)`` (any bytes; both: ``ValueError``;
    neither: announced, not fetched); ``on_deliverable_skipped(path, message)``
    hears of each one not handed over. A log line over ``max_line_bytes`` is cut.
    The details (cancellation at ``DONE``, reconnects, plain hosts) are in the
    docs, "The protocol", section "The session driver".
    """
    if on_deliverable is not None and on_deliverable_file is not None:
        raise ValueError("pass on_deliverable (text) or on_deliverable_file (files), not both")
    hook_ctx = HookContext(ctx, host)
    failure: BaseException | None = None
    try:
        handler = DeliverableHandler(
            host, ctx, hook_ctx, on_deliverable, on_deliverable_file, on_deliverable_skipped
        )
        session = _Session(host, ctx, hook_ctx, handler, reconnect_timeout)
        session.limit_lines(max_line_bytes)
        await session.prepare()
        if before_execute is not None:
            await before_execute(hook_ctx)
        await session.run(body)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if after_execute is not None:
            try:
                await after_execute(hook_ctx)
            except Exception as exc:
                if failure is None:
                    raise
                ctx.report_progress(None, f"after_execute callback raised: {exc!r}")


class _Done:
    """The marker queued after the last deliverable once ``DONE`` is read."""


_DONE: Final = _Done()


class _Session:
    def __init__(
        self,
        host: Host,
        ctx: Any,
        hook_ctx: HookContext,
        handler: DeliverableHandler,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
    ) -> None:
        self._host = host
        self._ctx = ctx
        self._hook_ctx = hook_ctx
        self._handler = handler
        self._workdir = host.workdir
        self._log_path = posixpath.join(self._workdir, LOG_NAME)
        self._deliverables = posixpath.join(self._workdir, DELIVERABLES_DIR)
        self._links = _Reconnector(host, ctx, self._log_path, reconnect_timeout)
        self._queue: asyncio.Queue[tuple[str, str] | _Done] = asyncio.Queue(DELIVERABLE_QUEUE_BOUND)
        self._bytes_tail = hasattr(host, "tail_bytes")  # else 0.1.2's tail_file (lines)
        self._max_line = DEFAULT_LINE_LIMIT
        self._splitter = LineSplitter()
        self._received = 0  # bytes read from the log, partial line included
        # Offset just past the last line fully dispatched: where a restarted tail resumes, so
        # every line is dispatched exactly once.
        self._dispatched = 0
        self._lines = 0  # lines dispatched
        self._progress = asyncio.Event()  # set whenever the tail moved on
        self._dispatching = False  # the tail is handling a line (maybe waiting for queue room)
        self._done_seen = False
        self._finished = asyncio.Event()
        self._error: BaseException | None = None

    # ---------------------------------------------------------------- setup

    def limit_lines(self, max_line_bytes: int) -> None:
        """Cut log lines past ``max_line_bytes`` (``ValueError`` unless at least 1)."""
        if not isinstance(max_line_bytes, int) or max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be a positive int, got {max_line_bytes!r}")
        self._max_line = max_line_bytes

    async def prepare(self) -> None:
        await self._host.setup_workdir()
        made = await self._host.run_command(join(["mkdir", "-p", "--", self._deliverables]))
        if made.exit_code != 0:
            raise SessionFailed(
                f"could not create {self._deliverables} on the host "
                f"(exit code {made.exit_code}): {made.stderr.strip()}"
            )
        await self._host.write_text(LOG_NAME, "")
        # Deliverables are judged by where they really are on the host. The reference is the
        # workdir's real path (it may sit under a symlinked /tmp) plus "deliverables": a
        # deliverables/ the worker swaps for a link then leads nowhere it accepts.
        folder = self._deliverables
        if hasattr(self._host, "realpath"):
            real_workdir = await self._host.realpath(self._workdir)
            folder = posixpath.join(real_workdir, DELIVERABLES_DIR)
        self._handler.folder = folder

    # ---------------------------------------------------------------- the session

    async def run(self, body: SessionBody) -> None:
        if not self._ctx.should_continue():
            return
        tasks = [
            asyncio.create_task(self._guard(self._tail), name="optio-session-tail"),
            asyncio.create_task(self._guard(self._fetch), name="optio-session-fetch"),
            asyncio.create_task(self._guard(lambda: self._run_body(body)), name="optio-session-body"),
            asyncio.create_task(self._guard(self._watch), name="optio-session-watch"),
        ]
        try:
            await self._finished.wait()
        finally:
            for task in tasks:
                task.cancel()
            # Wait even if we are cancelled meanwhile: no task may outlive the session.
            await _wait_uncancellable(tasks)
        if self._error is not None:
            raise self._error

    def _finish(self, error: BaseException | None = None) -> None:
        if not self._finished.is_set():
            self._error = error
            self._finished.set()

    async def _guard(self, work: Callable[[], Awaitable[None]]) -> None:
        # Takes a callable, not a coroutine: a task cancelled before its first step then
        # leaves no never-awaited coroutine behind.
        try:
            await work()
        except Exception as exc:
            self._finish(exc)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling() == 0:
                # Raised by the work itself (say, the body awaited something that was cancelled),
                # not a cancel of ours: without this the session would wait forever.
                self._finish(SessionFailed("a session task was cancelled from inside"))
                return
            raise

    # ---------------------------------------------------------------- the tail

    async def _tail(self) -> None:
        # After a lost connection, resume just past the last line fully dispatched. (The
        # splitter's offset may already be past lines of the current chunk still waiting to be
        # dispatched, so restarting there could lose them.)
        while True:
            try:
                if self._bytes_tail:
                    await self._follow(self._dispatched)
                else:
                    await self._follow_lines()
            except HostConnectionError as exc:
                await self._links.reconnect(exc, "following the log")
                continue
            except OSError as exc:  # say, the worker replaced its log with a symlink or a FIFO
                raise SessionFailed(f"cannot follow the worker's log: {exc}") from exc
            break
        if not self._done_seen:
            raise EndedWithoutDone(
                f"the tail of {self._log_path} ended before the worker wrote DONE or ERROR"
            )

    async def _follow(self, offset: int) -> None:
        """Read the log from ``offset`` until ``DONE``; return early only if the tail ends."""
        self._splitter = LineSplitter(offset, limit=self._max_line)
        self._received = offset
        chunks = self._host.tail_bytes(self._log_path, offset=offset)
        try:
            async for chunk in chunks:
                for piece in pieces(chunk):
                    self._received += len(piece)
                    for line in self._splitter.feed(piece):
                        await self._line(
                            decode_line(line.raw), cut=line.cut, end=line.end, kept=len(line.raw)
                        )
                        self._dispatched = line.end
                        self._progress.set()
                        if self._done_seen:
                            return
                    await asyncio.sleep(0)
                self._progress.set()
        finally:
            await aclose_iterator(chunks)  # stop the host-side tail now

    async def _follow_lines(self) -> None:
        """``_follow`` for a host with only 0.1.2's ``tail_file`` (no resuming after a lost link)."""
        lines = self._host.tail_file(self._log_path)
        try:
            async for line in lines:
                await self._line(line[: self._max_line])
                self._progress.set()
                if self._done_seen:
                    return
        finally:
            await aclose_iterator(lines)

    async def _line(self, text: str, *, cut: int = 0, end: int = 0, kept: int = 0) -> None:
        self._dispatching = True
        try:
            if cut:
                # Before the line's own event: an ERROR or DONE line ends the session.
                self._ctx.report_progress(
                    None,
                    f"A line of {LOG_NAME} ending at byte {end} was cut at {kept} bytes: "
                    f"the other {cut} bytes were dropped",
                )
            await self._dispatch(parse_log_line(text))
        finally:
            self._dispatching = False
            self._lines += 1
        if self._lines % LINES_PER_YIELD == 0:
            await asyncio.sleep(0)  # thousands of empty lines need not await anything

    async def _dispatch(self, event: LogEvent) -> None:
        if isinstance(event, StatusEvent):
            self._ctx.report_progress(event.percent, event.message)
        elif isinstance(event, DeliverableEvent):
            item = self._handler.announce(event.path, self._workdir)
            if item is not None and self._handler.fetches:
                await self._queue.put(item)
        elif isinstance(event, DoneEvent):
            self._done_seen = True
            if event.summary:
                self._ctx.report_progress(None, event.summary)
            self._progress.set()
            await self._queue.put(_DONE)
        elif isinstance(event, ErrorEvent):
            raise WorkerReportedError(event.message or "agent reported ERROR")
        elif isinstance(event, UnknownLine) and event.text:
            self._ctx.report_progress(None, event.text)

    # ---------------------------------------------------------------- the fetcher

    async def _fetch(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Done):
                self._finish()
                return
            relative, path = item
            what = f"fetching deliverable {relative}"
            await self._handler.hand_over(relative, path, partial(self._links.retrying, what))

    # ---------------------------------------------------------------- the body

    async def _run_body(self, body: SessionBody) -> None:
        await body(self._host, self._hook_ctx)
        if self._done_seen:
            return
        # The worker may have written DONE just before the body returned: judge only after the
        # tail has read everything the log holds now.
        rest = await self._catch_up()
        if not self._done_seen and rest:
            # A last line without its newline (``printf DONE``): the body is over, so the line is
            # complete. The tail is idle here (everything before it was dispatched).
            await self._dispatch(parse_log_line(decode_line(rest[: self._max_line])))
        if self._done_seen:
            return
        raise EndedWithoutDone(
            f"body returned before DONE was observed: the worker did not write DONE (or ERROR) "
            f"to {self._log_path}"
        )

    async def _catch_up(self) -> bytes:
        """Wait until the tail has read and dispatched the whole log as it is now.

        Returns a last line that has no newline yet (``b""`` if none, or when the
        tail did not catch up). Gives up when the log is gone, or when the tail
        sat idle for ``CATCH_UP_TIMEOUT`` without reaching the end. Time the tail
        spends dispatching (say, waiting for room in a full deliverable queue
        behind a slow callback) does not count: that is progress, not a stall.
        """
        if self._bytes_tail and hasattr(self._host, "file_size"):
            size = await self._links.retrying(
                "checking the log", lambda: self._host.file_size(self._log_path)
            )
            if size is None or not await self._wait_for(
                lambda: self._received >= size and self._dispatched == self._splitter.offset
            ):
                return b""
            if not self._splitter.pending:
                return b""
            return self._splitter.feed(b"\n")[0][0]
        try:
            log = await self._host.fetch_bytes_from_host(self._log_path)
        except FileNotFoundError:
            return b""
        complete = log.count(b"\n")
        if not await self._wait_for(lambda: self._lines >= complete):
            return b""
        return log[log.rfind(b"\n") + 1 :]

    async def _wait_for(self, caught_up: Callable[[], bool]) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_TIMEOUT
        while not self._done_seen:
            self._progress.clear()
            if caught_up():
                return True
            if self._dispatching:
                deadline = loop.time() + CATCH_UP_TIMEOUT
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._progress.wait()
        return True

    # ---------------------------------------------------------------- cancellation

    async def _watch(self) -> None:
        flag = getattr(self._ctx, "cancellation_flag", None)
        while self._ctx.should_continue():
            if isinstance(flag, asyncio.Event):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CANCEL_POLL_INTERVAL):
                        await flag.wait()
            else:
                await asyncio.sleep(CANCEL_POLL_INTERVAL)
        self._finish()


class _Reconnector:
    """Rides out a lost connection: waits until the host answers again, within a time budget."""

    def __init__(self, host: Host, ctx: Any, log_path: str, reconnect_timeout: float) -> None:
        self._host = host
        self._ctx = ctx
        self._log_path = log_path
        self._reconnect_timeout = reconnect_timeout

    async def retrying(self, what: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation()``, run again after reconnecting whenever the connection was lost."""
        while True:
            try:
                return await operation()
            except HostConnectionError as exc:
                await self.reconnect(exc, what)

    async def reconnect(self, cause: HostConnectionError, what: str) -> None:
        """Return once the host answers again; ``SessionFailed`` after ``reconnect_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reconnect_timeout
        self._ctx.report_progress(None, f"Lost the connection to the host while {what}; reconnecting")
        while True:
            try:
                # Any operation reconnects; this one is cheap and tells us the host answers. It
                # may not outlast the budget (one reconnect cycle can take 4 connect timeouts).
                async with asyncio.timeout_at(deadline):
                    await self._probe()
            except (HostConnectionError, TimeoutError) as exc:
                if isinstance(exc, HostConnectionError):
                    cause = exc
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise SessionFailed(
                        f"lost the connection to the host while {what} and could not get it back "
                        f"within {self._reconnect_timeout:g}s: {cause}"
                    ) from cause
                await asyncio.sleep(min(_RECONNECT_PAUSE, remaining))
                continue
            self._ctx.report_progress(None, "Reconnected to the host")
            return

    async def _probe(self) -> None:
        if hasattr(self._host, "file_size"):
            await self._host.file_size(self._log_path)
        else:
            await self._host.run_command(":")


async def _wait_uncancellable(tasks: list[asyncio.Task[None]]) -> None:
    """Wait until every (already cancelled) task has ended; a cancel meanwhile is re-raised after.

    A task that swallowed its cancellation (a body catching ``CancelledError``, or
    Python 3.11's ``asyncio.wait_for`` losing a cancel that races with completion)
    is cancelled again every ``_RECANCEL_INTERVAL`` seconds rather than waited for forever.
    """
    cancelled = False
    pending = {task for task in tasks if not task.done()}
    while pending:
        try:
            _, pending = await asyncio.wait(pending, timeout=_RECANCEL_INTERVAL)
        except asyncio.CancelledError:
            cancelled = True
        for task in pending:
            task.cancel()
    if cancelled:
        raise asyncio.CancelledError


_RECANCEL_INTERVAL: Final = 1.0
