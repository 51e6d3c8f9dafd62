"""Workdir archives on a ``RemoteHost``: the host's own ``tar`` and ``pigz``/``gzip`` do the work.

Archiving streams the ARCHIVE script's output. Restoring sends the archive's
own (compressed) bytes, each chunk only once the headers in it have been
checked here (``optio_host.archive.CheckedArchive``), to ``gzip -dc | tar -x``
in a fresh staging folder beside the workdir; then, once the gzip CRC, the
tar end marker and both exit statuses are good, one swap of whole folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TYPE_CHECKING, TypeVar

from optio_host.archive import (
    FIX_MODES,
    TAR_EXTRACT_OPTIONS,
    CheckedArchive,
    archive_status,
    find_prune_expression,
    resolve_excludes,
)
from optio_host.host import _scripts as scripts
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
        if host._is_open():
            await _uncancellable(host._sh(scripts.REMOVE_FORCIBLY, *leftovers, check=False))


async def _unpack(host: RemoteHost, archive: CheckedArchive, staging: str, staged: str | None) -> None:
    """Unpack into ``staging``; on a long link (``staged`` given) and past one segment, striped
    lanes fill ``staged`` and the host's tar follows it."""
    head, more = await take_head(aiter(archive), SEGMENT + 1)
    chunks = chain_head(head, more)
    follow = staged if more is not None else None
    handle = await host.launch_subprocess(
        script_argv(scripts.RESTORE, staging, follow or "", *TAR_EXTRACT_OPTIONS),
        cwd="/",
        merge_stderr=True,
        stdin=True,
    )
    try:
        if follow is None:
            output = await _feed(handle, chunks)
        else:
            output = await _collecting(handle, _feed_striped(host, handle, chunks, follow))
        code = await handle.wait()
    except BaseException:
        await handle.kill()
        raise
    status = output.rsplit("optio-restore:", 1)[-1].split()
    if code != 0 or sorted(status) != ["t0", "z0"] or not archive.verified:
        detail = output.replace("\n", " ").strip()
        raise ValueError(f"the host's tar or gzip refused the archive (exit {code}): {detail}")


async def _feed_striped(
    host: RemoteHost, handle: ProcessHandle, archive: AsyncIterator[bytes], staged: str
) -> None:
    """Send the archive over striped lanes into ``staged``; tell RESTORE how far it is written."""
    stdin = handle.stdin
    assert stdin is not None
    done: dict[int, int] = {}
    ready = 0

    def written(offset: int, length: int) -> None:
        nonlocal ready
        done[offset] = length
        if ready not in done:
            return
        while ready in done:
            ready += done.pop(ready)
        with contextlib.suppress(BrokenPipeError, OSError):  # it stopped reading: its output says why
            stdin.write(f"{ready}\n".encode())

    try:
        await host._write_striped(staged, "the workdir archive", archive, on_written=written)
    finally:
        stdin.close()


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
