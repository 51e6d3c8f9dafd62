"""Workdir archives on a ``RemoteHost``: the host's own ``tar`` and ``pigz``/``gzip`` do the work.

Archiving streams the ARCHIVE script's output. Restoring sends the archive's
own (compressed) bytes, each chunk only once the headers in it have been
checked here (``optio_host.archive.CheckedArchive``), to ``gzip -dc | tar -x``
in a fresh staging folder beside the workdir; then, once the gzip CRC, the
tar end marker and both exit statuses are good, one swap of whole folders. On a
long link those bytes go over striped lanes (``_striped``) into a staged copy
beside the workdir, which ``tar`` follows as segments are acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from optio_host.archive import (
    FIX_MODES,
    TAR_EXTRACT_OPTIONS,
    CheckedArchive,
    archive_status,
    find_prune_expression,
    resolve_excludes,
    unpack_failure,
)
from optio_host.host import _scripts as scripts
from optio_host.host._ssh import describe
from optio_host.host._striped import SEGMENT, SLOW_LAUNCH, chain_head, take_head
from optio_host.paths import temp_name_for
from optio_host.process import ProcessHandle
from optio_host.quoting import script_argv
from optio_host.worker import path_inside

if TYPE_CHECKING:
    from optio_host.host.remote import RemoteHost

__all__ = ["archive_workdir", "restore_workdir"]

_T = TypeVar("_T")
#: How much of the restore script's output is kept for an error message (start and end).
_KEEP = 4096


async def archive_workdir(host: RemoteHost, exclude: Sequence[str] | None) -> AsyncIterator[bytes]:
    """The ARCHIVE script's output; ``OSError`` if find, tar or the compressor failed."""
    patterns = resolve_excludes(exclude)
    handle = await host.launch_subprocess(
        script_argv(scripts.ARCHIVE, host.workdir, *find_prune_expression(patterns)),
        cwd="/",
        merge_stderr=False,
    )
    errors = bytearray()

    async def collect() -> None:
        async for piece in handle.stderr or _empty():
            errors.extend(piece[: _KEEP - len(errors)])

    reader = asyncio.ensure_future(collect())
    try:
        async for chunk in handle.stdout:
            yield chunk
        await reader
        archive_status(await handle.wait(), errors.decode(errors="replace"), f"{host.workdir} on the host")
    finally:
        reader.cancel()
        if handle.returncode is None:
            await handle.kill()


async def restore_workdir(
    host: RemoteHost, stream: AsyncIterator[bytes], *, max_bytes: int, max_members: int
) -> None:
    """Replace the workdir with the archive (see the module docstring); ``ValueError`` if refused."""
    workdir = host.workdir.rstrip("/")
    staging, aside, staged = temp_name_for(workdir), temp_name_for(workdir), temp_name_for(workdir)
    # Removed at the end, whatever happens (aside: once it holds the old workdir).
    leftovers = [staging, staged]
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await host._sh(
            'umask 077 && mkdir -p -- "$2" && mkdir -- "$1" && set -C && : > "$3"',
            staging,
            posixpath.dirname(workdir),
            staged,
        )
        slow = loop.time() - started >= SLOW_LAUNCH
        archive = CheckedArchive(stream, max_bytes=max_bytes, max_members=max_members)
        await _unpack(host, archive, staging, staged if slow else None)
        if archive.checker.needs_mode_fix:
            await host.run(FIX_MODES, cwd=staging, check=True)
        outside = (await host._sh(scripts.LINKS_OUT, staging)).strip()
        if outside:
            name = posixpath.relpath(outside, staging) if path_inside(outside, staging) else outside
            raise ValueError(f"refused archive: symbolic link {name!r} leads outside the destination")
        commit = asyncio.ensure_future(host._sh(scripts.RESTORE_COMMIT, staging, workdir, aside))
        try:
            await _uncancellable(commit)
        finally:
            if commit.done() and not commit.cancelled() and commit.exception() is None:
                leftovers.append(aside)
    finally:
        # Removed now, or (the connection is gone) once it is back, like an upload's temp file.
        host._orphans.update(leftovers)
        if host._is_open():
            await _uncancellable(host._remove_orphans())
        else:
            host._schedule_cleanup()


async def _unpack(host: RemoteHost, archive: CheckedArchive, staging: str, staged: str | None) -> None:
    """Unpack into ``staging``; on a long link (``staged`` given) and past one segment, striped
    lanes fill ``staged`` and the host's tar follows it."""
    head, more = await take_head(aiter(archive), SEGMENT + 1)
    chunks = chain_head(head, more)
    if staged is not None and more is not None:
        code, output = await _unpack_striped(host, chunks, staging, staged)
    else:
        handle = await _launch_restore(host, staging, "")
        try:
            output = await _feed(handle, chunks)
            code = await handle.wait()
        except BaseException:
            await handle.kill()
            raise
    status = output.rsplit("optio-restore:", 1)[-1].split()
    if code != 0 or sorted(status) != ["t0", "z0"] or not archive.verified:
        detail = output.replace("\n", " ").strip()
        text = f"the host's tar or gzip refused the archive (exit {code}): {detail}"
        raise unpack_failure(text, f"{staging} on {describe(host.ssh_config)}")


def _launch_restore(host: RemoteHost, staging: str, follow: str) -> Awaitable[ProcessHandle]:
    argv = script_argv(scripts.RESTORE, staging, follow, *TAR_EXTRACT_OPTIONS)
    return host.launch_subprocess(argv, cwd="/", merge_stderr=True, stdin=True)


async def _unpack_striped(
    host: RemoteHost, chunks: AsyncIterator[bytes], staging: str, staged: str
) -> tuple[int, str]:
    """Lanes write the archive into ``staged``; RESTORE, started beside them, is told how far it
    is written (in order) and unpacks that far. The lanes never wait for RESTORE: if it has to
    wait for a slot they hold, it starts once they are done and unpacks the whole file then."""
    follower = _Follower()
    writing = asyncio.ensure_future(
        host._write_striped(staged, "the workdir archive", chunks, on_written=follower.written)
    )
    following = asyncio.ensure_future(
        follower.follow(lambda: _launch_restore(host, staging, staged), writing)
    )
    try:
        await asyncio.wait({writing, following}, return_when=asyncio.FIRST_EXCEPTION)
        if writing.done():
            writing.result()  # the lanes' error first: RESTORE's only follows from it
        output = await following
        assert follower.handle is not None
        return await follower.handle.wait(), output
    finally:
        for task in (writing, following):
            task.cancel()
        for task in (writing, following):
            with contextlib.suppress(BaseException):
                await task
        if follower.handle is not None and follower.handle.returncode is None:
            await follower.handle.kill()


class _Follower:
    """RESTORE's side of a striped restore: how far the staged archive is written, in order."""

    def __init__(self) -> None:
        self.handle: ProcessHandle | None = None
        self._done: dict[int, int] = {}
        self._ready = 0
        self._first = asyncio.Event()

    def written(self, offset: int, length: int) -> None:
        self._first.set()
        self._done[offset] = length
        if self._ready not in self._done:
            return
        while self._ready in self._done:
            self._ready += self._done.pop(self._ready)
        self._tell()

    def _tell(self) -> None:
        if self.handle is not None and self.handle.stdin is not None and self._ready:
            with contextlib.suppress(BrokenPipeError, OSError):  # it stopped reading: its output says why
                self.handle.stdin.write(f"{self._ready}\n".encode())

    async def follow(self, launch: Callable[[], Awaitable[ProcessHandle]], writing: Awaitable[None]) -> str:
        """Start RESTORE once the lanes have written a segment (so they hold their slots first:
        RESTORE may wait for one, the lanes never wait for RESTORE), tell it what is written so
        far, collect its output, and send EOF once the lanes are done (its output's start and end)."""
        await self._first.wait()
        handle = self.handle = await launch()
        self._tell()

        async def until_written() -> None:
            try:
                await writing
            finally:
                if handle.stdin is not None:
                    handle.stdin.close()

        return await _collecting(handle, until_written())


async def _feed(handle: ProcessHandle, archive: AsyncIterator[bytes]) -> str:
    """Send the checked archive to the process's stdin; return the start and end of its output."""
    stdin = handle.stdin
    assert stdin is not None

    async def send() -> None:
        try:
            async for chunk in archive:
                stdin.write(chunk)
                await stdin.drain()
        except BrokenPipeError:
            pass  # the script stopped reading: its output says why, and nothing is swapped in
        finally:
            stdin.close()

    return await _collecting(handle, send())


async def _collecting(handle: ProcessHandle, sending: Awaitable[None]) -> str:
    """Await ``sending`` while reading the process's output; the start and end of that output."""
    head = bytearray()
    tail = b""

    async def collect() -> None:
        nonlocal tail
        async for piece in handle.stdout:
            head.extend(piece[: _KEEP - len(head)])
            tail = (tail + piece)[-_KEEP:]

    reader = asyncio.ensure_future(collect())
    try:
        await sending
        await reader
    finally:
        reader.cancel()
    text = head.decode(errors="replace")
    last = tail.decode(errors="replace")
    return text if last in text else f"{text} ... {last}"


async def _uncancellable(step: Awaitable[_T]) -> _T:
    """Run ``step`` to its end even if the caller is cancelled meanwhile (then re-raise)."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""
