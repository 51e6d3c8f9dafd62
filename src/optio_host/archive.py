"""Workdir archives: a gzip'd tar of a folder, streamed in chunks both ways, at ``tar`` speed.

Archiving runs ``find | tar | pigz -1`` (``gzip -1`` without pigz): the same
script on both hosts. Exclude patterns are shell globs; a pattern excludes a
path when it matches any one segment of the path relative to the root, or the
whole relative path. An excluded folder is not descended into. Only regular
files, folders and symbolic links are archived.

Restoring treats the archive as hostile. It is inflated here with ``zlib`` and
its tar headers are checked as they stream past (``optio_host._targuard``);
only bytes whose headers passed reach the host's ``tar -x``, which unpacks
into a fresh staging folder beside the destination. Once the gzip CRC and the
tar end marker have been verified, one swap of whole folders puts the new
content in place: a refused, broken or cancelled restore leaves the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from fnmatch import fnmatchcase

from optio_host._localfs import rmtree_forcibly
from optio_host._streams import CHUNK_SIZE, BlockingReader, StreamClosed, iter_from_thread, run_in_thread
from optio_host._targuard import Gunzip, TarChecker
from optio_host.paths import temp_name_for
from optio_host.worker import path_inside

__all__ = [
    "DEFAULT_WORKDIR_EXCLUDES",
    "unpack_failure",
    "consume_workdir_archive",
    "find_prune_expression",
    "is_excluded",
    "resolve_excludes",
    "TAR_EXTRACT_OPTIONS",
    "CheckedArchive",
    "yield_workdir_archive",
]

DEFAULT_WORKDIR_EXCLUDES = [".git", "node_modules", "__pycache__", ".venv", "*.pyc", ".DS_Store"]

#: Restore bounds (defaults of ``consume_workdir_archive``/``restore_workdir``): generous for a
#: workdir, but a zip bomb or a flood of empty members stops there.
DEFAULT_MAX_BYTES = 256 * 1024**3
DEFAULT_MAX_MEMBERS = 10_000_000
#: How the host's ``tar`` unpacks a checked stream (after ``-x -f -``): never as the archive's
#: owner, never with its set-id bits; the checker has already refused everything unsafe.
TAR_EXTRACT_OPTIONS = ["--no-same-owner", "--no-same-permissions", "--warning=no-timestamp"]
#: Run in the staging folder when some member's mode would leave a file the owner cannot read
#: or write (or a folder it cannot enter), or carries set-id/sticky bits. (-R skips symlinks.)
FIX_MODES = ["chmod", "-R", "u+rwX,ugo-st", "--", "."]
#: Bigger pipe buffers for tar's pipes: fewer wake-ups per MiB (Linux; ignored elsewhere).
_PIPE_SIZE = 1024 * 1024


def resolve_excludes(exclude: Sequence[str] | None) -> list[str]:
    """``None`` means the defaults; a list (even empty) is used exactly as given."""
    if exclude is None:
        return list(DEFAULT_WORKDIR_EXCLUDES)
    if isinstance(exclude, str):
        raise TypeError("exclude must be a list of patterns, not a single string")
    return list(exclude)


def is_excluded(relpath: str, patterns: Sequence[str]) -> bool:
    """Whether ``relpath`` (POSIX, relative to the root) is excluded by ``patterns``."""
    segments = relpath.split("/")
    for pattern in patterns:
        if fnmatchcase(relpath, pattern):
            return True
        if any(fnmatchcase(segment, pattern) for segment in segments):
            return True
    return False


def find_prune_expression(patterns: Sequence[str]) -> list[str]:
    """``find`` arguments selecting what ``is_excluded`` excludes, relative to ``.``.

    Checking each path as ``find`` reaches it, one segment at a time, is the
    same as checking every segment of the full path, because excluded folders
    are pruned before their contents are visited.
    """
    terms: list[str] = []
    for pattern in patterns:
        if terms:
            terms.append("-o")
        terms += ["-name", pattern, "-o", "-path", "./" + pattern]
    return terms


# --------------------------------------------------------------------------- writing


def _widen_pipe(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)


def archive_status(code: int, errors: str, where: str) -> None:
    """``OSError`` unless the ARCHIVE script and its ``tar`` both succeeded."""
    if code != 0 or "optio-tar-exit:0" not in errors:
        detail = errors.replace("optio-tar-exit:", "tar exit status ").strip()
        raise OSError(f"archiving {where} failed (exit {code}): {detail}")


async def yield_workdir_archive(
    root: str | os.PathLike[str],
    exclude: Sequence[str] | None = None,
) -> AsyncIterator[bytes]:
    """Stream a gzip'd tar of the contents of ``root`` (paths relative to it)."""
    from optio_host.host._scripts import ARCHIVE  # the host package imports this module

    folder = os.fspath(root)
    patterns = resolve_excludes(exclude)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot archive {folder}: no such folder")
    argv = ["/bin/sh", "-c", ARCHIVE, "sh", folder, *find_prune_expression(patterns)]

    def produce(emit: Callable[[bytes], None]) -> None:
        with (
            tempfile.TemporaryFile() as errors,
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, start_new_session=True
            ) as process,
        ):
            assert process.stdout is not None
            try:
                _widen_pipe(process.stdout.fileno())
                while chunk := process.stdout.read(CHUNK_SIZE):
                    emit(chunk)
                code = process.wait()
            finally:
                _kill_group(process)
            errors.seek(0)
            archive_status(code, errors.read(8192).decode(errors="replace"), folder)

    async for chunk in iter_from_thread(produce):
        yield chunk


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, 9)
        process.wait()


# --------------------------------------------------------------------------- reading


class CheckedArchive:
    """The chunks of a gzip'd tar stream, each passed on only once everything in it is checked.

    For a host that inflates the archive itself: a chunk is yielded after the
    headers it completes have passed, so the host's ``tar`` never sees a whole
    header that was not checked. At the end the gzip trailer and the tar end
    marker are verified (``ValueError`` otherwise); ``checker`` then tells
    whether modes need fixing.
    """

    def __init__(self, stream: AsyncIterator[bytes], *, max_bytes: int, max_members: int) -> None:
        self._stream = stream
        self.checker = TarChecker(max_bytes=max_bytes, max_members=max_members)
        #: Every chunk was checked and passed on, and the gzip trailer and tar end marker verified.
        self.verified = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = BlockingReader(aiter(self._stream), asyncio.get_running_loop())
        gunzip = Gunzip()
        checker = self.checker

        def produce(emit: Callable[[bytes], None]) -> None:
            while chunk := reader.read(CHUNK_SIZE):
                for piece in gunzip.feed(chunk):
                    checker.feed(piece)
                emit(chunk)
            gunzip.finish()
            checker.finish()

        try:
            async for chunk in iter_from_thread(produce):
                yield chunk
            self.verified = True
        finally:
            reader.abort()


def _pass_checked(
    reader: BlockingReader, checker: TarChecker, write: Callable[[memoryview], object], stop: threading.Event
) -> None:
    """Inflate, check, and ``write`` the inflated bytes up to ``checker.cleared``."""
    gunzip = Gunzip()
    held = b""  # inflated bytes past ``cleared``: a header not complete yet
    while chunk := reader.read(CHUNK_SIZE):
        for piece in gunzip.feed(chunk):
            if stop.is_set():  # a small archive can expand for a long time: stop between slices
                raise StreamClosed
            start = checker.offset - len(held)
            checker.feed(piece)
            data = held + piece if held else piece
            count = checker.cleared - start
            if count:
                write(memoryview(data)[:count])
            held = b"" if checker.ended else data[count:]
    gunzip.finish()
    checker.finish()


#: What tar says when the destination, not the archive, is at fault.
_WRITE_FAILURES = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Wrote only")


def unpack_failure(text: str, where: str) -> Exception:
    """The error for a failed unpack: ``OSError`` when tar could not write (a full disk, a quota:
    the archive is not to blame), else ``ValueError`` (the archive is refused)."""
    if any(marker in text for marker in _WRITE_FAILURES):
        return OSError(errno.ENOSPC, f"could not unpack into {where}: the disk is full or read-only ({text})")
    return ValueError(text)


def _extract(reader: BlockingReader, checker: TarChecker, staging: str, stop: threading.Event) -> None:
    """Unpack the checked stream into ``staging`` with this machine's ``tar``."""
    argv = ["tar", "-x", "-f", "-", "-C", staging, *TAR_EXTRACT_OPTIONS]
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors) as tar,
    ):
        assert tar.stdin is not None
        try:
            _widen_pipe(tar.stdin.fileno())
            try:
                _pass_checked(reader, checker, tar.stdin.write, stop)
            except BrokenPipeError:
                pass  # tar stopped reading: its exit status and message tell why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    tar.stdin.close()
            code = tar.wait()
        finally:
            if tar.poll() is None:
                tar.kill()
                tar.wait()
        if code != 0:
            errors.seek(0)
            message = errors.read(4096).decode(errors="replace").strip()
            raise unpack_failure(f"tar refused the archive (exit {code}): {message}", staging)
        checker.finish()
    if checker.needs_mode_fix:
        subprocess.run(FIX_MODES, cwd=staging, check=True, stdin=subprocess.DEVNULL)
    _check_links(staging)


def _check_links(staging: str) -> None:
    """Second line of defence: no symbolic link anywhere in ``staging`` resolves outside it.

    Every link on disk is checked, not only those the header checker saw: should the checker
    and ``tar`` ever read a header differently, what ``tar`` made is what counts.
    """
    root = os.path.realpath(staging)
    for folder, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            path = os.path.join(folder, entry)
            if not os.path.islink(path):
                continue
            resolved = os.path.realpath(path)
            if not path_inside(resolved, root):
                name = os.path.relpath(path, root)
                raise ValueError(f"refused archive: symbolic link {name!r} leads outside the destination")


def swap_in(staging: str, target: str) -> str | None:
    """Put ``staging`` in place of ``target`` by two renames, no await between them.

    Returns the old folder's new name (to be removed), or ``None`` if there was none.
    """
    aside = None
    if os.path.lexists(target):
        aside = temp_name_for(target)
        os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        if aside is not None:
            os.rename(aside, target)
        raise
    return aside


async def consume_workdir_archive(
    stream: AsyncIterator[bytes],
    dest: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> None:
    """Replace the contents of ``dest`` with the archive in ``stream``; unsafe archives raise ``ValueError``.

    The archive is unpacked into a staging folder beside ``dest``, verified
    (gzip CRC, tar end marker), then swapped in whole: a refused, broken or
    cancelled restore leaves ``dest`` as it was. ``max_bytes`` bounds the
    unpacked tar stream, ``max_members`` the number of members.
    """
    target = os.path.abspath(os.fspath(dest)).rstrip("/") or "/"
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    staging = temp_name_for(target)
    os.mkdir(staging, 0o700)
    checker = TarChecker(max_bytes=max_bytes, max_members=max_members)
    reader = BlockingReader(aiter(stream), asyncio.get_running_loop())
    stop = threading.Event()

    def cancel() -> None:
        stop.set()
        reader.abort()

    aside = None
    try:
        await run_in_thread(lambda: _extract(reader, checker, staging, stop), on_cancel=cancel)
        aside = swap_in(staging, target)
    finally:
        for leftover in (staging, aside):
            if leftover is not None and os.path.lexists(leftover):
                await asyncio.shield(asyncio.to_thread(rmtree_forcibly, leftover))
