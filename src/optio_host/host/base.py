"""``BaseHost``: everything both hosts share, written once (the interface is in ``interface.py``).

A backend (``LocalHost``, ``RemoteHost``) implements a small set of
primitives: start a process, end a process tree, stream a file in and out,
list a folder, follow a file. Running commands to completion, uploads with
checksums and skip-if-unchanged, whole-file reads, globbing and line tailing
are built here on top of those primitives, so the two hosts cannot drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from optio_host.detached import DetachedProcess, launch_detached
from optio_host.errors import CommandTimeout, HostCommandError
from optio_host.host._transfers import (
    ReleasingIterator,
    Transfers,
    checksum_mismatch,
    normalize_sha256,
    sized_chunks,
)
from optio_host.host.interface import Command, FileSource, Host
from optio_host.process import ProcessHandle, RunResult

# The interface and the shared helpers are re-exported here.
__all__ = [
    "BaseHost",
    "Command",
    "FileSource",
    "Host",
    "ReleasingIterator",
    "checksum_mismatch",
    "normalize_sha256",
    "sized_chunks",
]


class BaseHost(Transfers):
    """Everything both hosts share: ``HostCore`` (identity, lifecycle, primitives), ``Transfers``
    (files), and here the ways to run a command to completion.

    The ``Host`` members are documented on ``Host``; listed here is only what both hosts add.
    """

    async def run(
        self,
        cmd: Command,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        input: str | bytes | AsyncIterator[bytes] | None = None,
        timeout: float | None = None,
        check: bool = False,
        on_stdout: Callable[[bytes], object] | None = None,
        on_stderr: Callable[[bytes], object] | None = None,
        env_remove: Sequence[str] | None = None,
    ) -> RunResult:
        # A thin layer over the one way a host starts a process: launch, drain, wait.
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        data: bytes | AsyncIterator[bytes] | None = input.encode() if isinstance(input, str) else input
        handle = await self.launch_subprocess(
            cmd, env=env, cwd=cwd, merge_stderr=False, stdin=data is not None, env_remove=env_remove
        )
        out = bytearray()
        err = bytearray()

        async def complete() -> int:
            await asyncio.gather(
                _collect(handle.stdout, out, on_stdout),
                _collect(handle.stderr, err, on_stderr),
                _feed(handle, data),
            )
            return await handle.wait()

        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a racing cancel.
            async with asyncio.timeout(timeout):
                code = await complete()
        except TimeoutError:
            await handle.kill()
            code = handle.returncode if handle.returncode is not None else -9
            raise CommandTimeout(cmd, timeout or 0.0, _text(out), _text(err), code) from None
        except BaseException:
            # Cancelled or failed while running: leave no process behind.
            await handle.kill()
            raise
        await handle.aclose()  # it has exited: reap it and close its pipes or channel
        result = RunResult(_text(out), _text(err), code)
        if check and code != 0:
            raise HostCommandError(cmd, code, result.stdout, result.stderr)
        return result

    async def run_command(
        self,
        command: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        return await self.run(command, cwd=cwd, env=env)

    async def launch_detached(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
    ) -> DetachedProcess:
        return await launch_detached(self, command, env=env, cwd=cwd, name=name)


async def _collect(
    chunks: AsyncIterator[bytes] | None, sink: bytearray, stream: Callable[[bytes], object] | None
) -> None:
    """Read a process's output to the end: into ``sink``, or chunk by chunk to ``stream``."""
    if chunks is not None:
        async for chunk in chunks:
            if stream is None:
                sink += chunk
            else:
                stream(chunk)


async def _feed(handle: ProcessHandle, data: bytes | AsyncIterator[bytes] | None) -> None:
    """Write ``data`` to the process's stdin, then close it."""
    if handle.stdin is None or data is None:
        return
    try:
        if isinstance(data, bytes):
            if data:
                handle.stdin.write(data)
                await handle.stdin.drain()
        else:
            async for chunk in data:
                handle.stdin.write(chunk)
                await handle.stdin.drain()
        handle.stdin.close()
        await handle.stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command did not read all of its input; its exit code tells


def _text(output: bytearray) -> str:
    return output.decode(errors="replace")
