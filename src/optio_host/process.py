"""What a command gives back: a finished ``RunResult`` or a running ``ProcessHandle``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from optio_host.errors import HostConnectionError

#: Grace between SIGTERM and SIGKILL when a process tree is ended gently (every host, detached too).
TERMINATE_GRACE = 5.0
#: How long ending a process waits for the killed process to be reaped.
KILL_REAP_WAIT = 2.0

#: How a handle ends its process tree: ``terminate(handle, aggressive)`` (the host's own method).
Terminator = Callable[["ProcessHandle", bool], Awaitable[None]]

__all__ = ["KILL_REAP_WAIT", "TERMINATE_GRACE", "ProcessHandle", "RunResult", "owned_by"]


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
    #: Set by the host that started it; ``None`` for handles built elsewhere (see ``owned_by``).
    _terminate: Terminator | None = field(default=None, kw_only=True, repr=False, compare=False)

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
        try:
            if self._terminate is not None:
                try:
                    await self._terminate(self, False)
                except asyncio.CancelledError:
                    await asyncio.shield(self._terminate(self, True))
                    raise
        finally:
            await asyncio.shield(self._close_streams())

    async def kill(self) -> None:
        """SIGKILL the whole tree at once and close; never raises (for clean-up paths)."""
        with contextlib.suppress(Exception):
            if self._terminate is not None:
                await asyncio.shield(self._terminate(self, True))
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
        outcome = await self.pid_like.wait()
        code = outcome if isinstance(outcome, int) else self.returncode
        if code is None:
            raise HostConnectionError("the connection closed before the process reported an exit status")
        return code


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
    if handle._terminate is None:

        async def terminate(target: ProcessHandle, aggressive: bool) -> None:
            await host.terminate_subprocess(target, aggressive=aggressive)

        handle._terminate = terminate
    return handle
