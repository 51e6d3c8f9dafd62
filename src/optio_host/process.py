"""What a command gives back: a finished ``RunResult`` or a running ``ProcessHandle``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from optio_host.errors import HostConnectionError

__all__ = ["ProcessHandle", "RunResult", "proc_wait"]


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
