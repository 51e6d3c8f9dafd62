"""What a command gives back: a finished ``RunResult`` or a running ``ProcessHandle``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from optio_host.errors import HostConnectionError

#: Grace between SIGTERM and SIGKILL when a process tree is ended gently (every host, detached too).
TERMINATE_GRACE = 5.0
#: How long ending a process waits for the killed process to be reaped.
KILL_REAP_WAIT = 2.0

#: How a handle ends its process tree: ``terminate(handle, aggressive)`` (the host's own method).
Terminator = Callable[["ProcessHandle", bool], Awaitable[None]]

__all__ = ["KILL_REAP_WAIT", "TERMINATE_GRACE", "ProcessHandle", "RunResult", "owned_by", "proc_wait"]


@dataclass
class RunResult:
    """Output and exit status of a finished command (output decoded as UTF-8)."""

    stdout: str
    stderr: str
    exit_code: int


@dataclass
class ProcessHandle:
    """A process started on a host that may still be running.

    ``pid_like`` is the underlying process object (``asyncio.subprocess.Process``
    locally, an asyncssh ``SSHClientProcess`` remotely). ``stdout`` (and
    ``stderr`` unless it was merged into ``stdout``) yield raw byte chunks, not
    lines. ``stdin``, when requested, has ``write``, ``drain``, ``close`` and
    ``wait_closed``; ``close`` sends end-of-file.
    """

    pid_like: Any
    stdout: AsyncIterator[bytes]
    stderr: AsyncIterator[bytes] | None = None
    stdin: Any | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the process and every process it started, reap it and close its pipes or channel.

        SIGTERM, up to 5 s grace, then SIGKILL; a process that already exited is only reaped
        and closed. Cancelled during the grace, it kills at once, finishes the clean-up and
        then re-raises, so nothing is left running. Output not read yet is discarded.
        """
        terminate = _terminator(self)
        try:
            if terminate is not None:
                try:
                    await terminate(self, False)
                except asyncio.CancelledError:
                    await asyncio.shield(terminate(self, True))
                    raise
        finally:
            await asyncio.shield(self._close_streams())

    async def kill(self) -> None:
        """SIGKILL the whole tree at once and close; never raises (for clean-up paths)."""
        terminate = _terminator(self)
        with contextlib.suppress(Exception):
            if terminate is not None:
                await asyncio.shield(terminate(self, True))
        await asyncio.shield(self._close_streams())

    async def _close_streams(self) -> None:
        for stream in (self.stdout, self.stderr):
            close = getattr(stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended (negative: killed by that signal)."""
        code = getattr(self.pid_like, "returncode", None)
        return code if isinstance(code, int) else None

    async def wait(self) -> int:
        """Wait for the process to end and return its exit code.

        Drain ``stdout``/``stderr`` first (or concurrently): a process whose
        output nobody reads can block forever on a full pipe.
        """
        return _exit_code(self.pid_like, await self.pid_like.wait())


async def proc_wait(handle: Any) -> int:
    """Await the end of a ``ProcessHandle`` and return its exit code.

    Also takes any object whose ``pid_like`` has an async ``wait()`` (a
    consumer's own handle): its result, or ``pid_like.returncode``, is the code.
    """
    if isinstance(handle, ProcessHandle):
        return await handle.wait()
    wait = getattr(getattr(handle, "pid_like", None), "wait", None)
    if not callable(wait):
        raise TypeError(
            f"proc_wait() needs a ProcessHandle (or an object whose pid_like has an async wait()), "
            f"not {type(handle).__name__}"
        )
    return _exit_code(handle.pid_like, await wait())


def _exit_code(pid_like: Any, outcome: Any) -> int:
    # asyncio's wait() returns the code; asyncssh's returns a result object carrying it.
    for code in (outcome, getattr(outcome, "returncode", None), getattr(pid_like, "returncode", None)):
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    raise HostConnectionError("the connection closed before the process reported an exit status")


def owned_by(handle: ProcessHandle, host: Any) -> ProcessHandle:
    """``handle`` with ``aclose()``/``kill()`` ending it through ``host.terminate_subprocess``.

    Our hosts bind their handles already; this is for handles a consumer's own ``Host`` made.
    """
    if not isinstance(handle, ProcessHandle):  # a duck-typed handle from a consumer's host
        handle = ProcessHandle(
            pid_like=handle.pid_like,
            stdout=handle.stdout,
            stderr=getattr(handle, "stderr", None),
            stdin=getattr(handle, "stdin", None),
        )
    if _terminator(handle) is None:

        async def terminate(target: ProcessHandle, aggressive: bool) -> None:
            await host.terminate_subprocess(target, aggressive=aggressive)

        # Not a dataclass field: the published four fields stay exactly as they were.
        setattr(handle, _TERMINATOR, terminate)
    return handle


_TERMINATOR = "_optio_terminate"


def _terminator(handle: ProcessHandle) -> Terminator | None:
    """How ``handle`` is ended (set by ``owned_by``), or ``None``."""
    found: Terminator | None = getattr(handle, _TERMINATOR, None)
    return found
