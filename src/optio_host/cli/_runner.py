"""Running a command's coroutine: Ctrl-C as a clean stop, errors as one line and an exit code."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from optio_host.cli._display import for_terminal
from optio_host.errors import HostCommandError, HostConnectionError, HostKeyUnknown, SessionFailed

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CliError",
    "Interrupt",
    "Interrupted",
    "fail",
    "run_async",
    "set_time_limit",
]

T = TypeVar("T")

#: Signals that stop a command cleanly (Ctrl-C, kill, a closed terminal).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: Like most Unix tools (and click): a bad command line.
EXIT_USAGE = 2

#: Like ssh: the host could not be reached, refused us, or the link dropped.
EXIT_CONNECTION = 255

#: Like GNU timeout(1): the time limit ran out and the work was stopped.
EXIT_TIMEOUT = 124

#: A limit on the whole command, in seconds (``session --timeout``); None: no limit.
_time_limit: float | None = None


def set_time_limit(seconds: float | None) -> None:
    """Limit the next ``run_async``: past it, the work is cancelled (cleanly) and it exits 124."""
    global _time_limit
    _time_limit = seconds


class CliError(Exception):
    """An error to show as one line, with the exit code to end with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Interrupted(Exception):
    """The user stopped the command (Ctrl-C, SIGTERM, SIGHUP) and the work was cancelled cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.code = 128 + signum


class Interrupt:
    """Set by SIGINT/SIGTERM/SIGHUP; ``race`` cancels the work it guards when that happens."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signum: int | None = None

    def _fire(self, signum: int) -> None:
        if self.signum is not None:
            # A second Ctrl-C while cleaning up: the user wants out now.
            os._exit(128 + signum)
        self.signum = signum
        self.event.set()

    async def race(self, work: Awaitable[T]) -> T:
        """Await ``work``; if interrupted first, cancel it, wait for its cleanup, raise ``Interrupted``."""
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled() and self.signum is not None:
            raise Interrupted(self.signum)
        return task.result()

    def check(self) -> None:
        """Raise ``Interrupted`` if a stop was asked for."""
        if self.signum is not None:
            raise Interrupted(self.signum)


def fail(message: str) -> None:
    """Print an error as one line on stderr."""
    text = for_terminal(" ".join(message.split()))  # it may quote worker text (an ERROR line)
    print(f"optio-host: {text}", file=sys.stderr, flush=True)


def _describe(exc: BaseException) -> tuple[str, int]:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # a task group's failure: its first cause is the story
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, HostKeyUnknown) and 'host_key_policy="accept-new"' in str(exc):
        # The API names its own fix; the command line's spelling of it, where it is the fix.
        return f"{exc} On the command line: --accept-new (or --known-hosts FILE).", EXIT_CONNECTION
    if isinstance(exc, HostConnectionError):
        return str(exc), EXIT_CONNECTION
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}", 1
    if isinstance(exc, (OSError, ValueError, SessionFailed, HostCommandError)):
        return str(exc) or type(exc).__name__, 1
    return f"unexpected {type(exc).__name__}: {exc} (set OPTIO_HOST_DEBUG=1 for a traceback)", 1


def run_async(main: Callable[[Interrupt], Coroutine[Any, Any, int]]) -> int:
    """Run ``main(interrupt)`` in a fresh event loop and return the exit code for the process."""

    async def with_signals() -> int:
        loop = asyncio.get_running_loop()
        interrupt = Interrupt()
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, interrupt._fire, signum)
        try:
            if _time_limit is None:
                return await main(interrupt)
            try:
                async with asyncio.timeout(_time_limit):
                    return await main(interrupt)
            except TimeoutError:
                raise CliError(
                    f"timed out after {_time_limit:g} s; the work on the host was stopped", EXIT_TIMEOUT
                ) from None
        finally:
            for signum in _STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(with_signals())
    except Interrupted as exc:
        print(f"optio-host: interrupted ({exc}); stopped cleanly", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT  # before the handlers were in place: nothing to clean up
    except BrokenPipeError:
        # Our reader went away (``| head``): end quietly like any Unix filter, and keep Python
        # from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:
        if os.environ.get("OPTIO_HOST_DEBUG"):
            raise
        message, code = _describe(exc)
        fail(message)
        return code
