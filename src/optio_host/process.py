"""What a command gives back: a finished ``RunResult`` or a running ``ProcessHandle``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from optio_host.errors import HostConnectionError

__all__ = ["ProcessHandle", "RunResult"]


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
        outcome = await self.pid_like.wait()
        code = outcome if isinstance(outcome, int) else self.returncode
        if code is None:
            raise HostConnectionError("the connection closed before the process reported an exit status")
        return code
