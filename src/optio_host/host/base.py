"""``BaseHost``: everything both hosts share, written once (the interface is in ``interface.py``).

A backend (``LocalHost``, ``RemoteHost``) implements a small set of
primitives: start a process, end a process tree, stream a file in and out,
list a folder, follow a file. Running commands to completion, uploads with
checksums and skip-if-unchanged, whole-file reads, globbing and line tailing
are built here on top of those primitives, so the two hosts cannot drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import posixpath
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Self

from optio_host._lines import iter_lines
from optio_host._localfs import write_atomic
from optio_host._streams import (
    CHUNK_SIZE,
    ProgressCallback,
    Sha256Tap,
    aclose_iterator,
    iter_local_file,
    local_file_sha256,
    sha256_of_chunks,
)
from optio_host.detached import DetachedProcess, launch_detached
from optio_host.errors import CommandTimeout, HostCommandError, HostConnectionError, HostNotConnected
from optio_host.host.interface import Command, FileSource, Host
from optio_host.process import ProcessHandle, RunResult

# The interface is re-exported here.
__all__ = ["BaseHost", "Command", "FileSource", "Host", "ReleasingIterator", "sized_chunks"]

#: ``fetch_bytes_from_host`` reserves memory for at most this much before reading.
_PRESIZE_LIMIT = 64 * 1024 * 1024
_log = logging.getLogger("optio_host")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAGIC = re.compile(r"[*?\[]")


@dataclass
class _Source:
    open: Callable[[], AsyncIterator[bytes]]
    size: int | None
    mode: int | None
    local_path: str | None

    async def sha256(self) -> str:
        if self.local_path is not None:
            return await local_file_sha256(self.local_path)
        return await sha256_of_chunks(self.open())


def _source(source: FileSource) -> _Source:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).cast("B")

        async def slices() -> AsyncIterator[bytes]:
            for start in range(0, len(data), CHUNK_SIZE):
                yield bytes(data[start : start + CHUNK_SIZE])

        return _Source(slices, len(data), None, None)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        info = os.stat(path)  # FileNotFoundError names the missing local file
        if not os.path.isfile(path):
            raise IsADirectoryError(f"upload source {path} is not a regular file")
        return _Source(lambda: iter_local_file(path), info.st_size, info.st_mode & 0o777, path)
    if hasattr(source, "__anext__"):
        used = False

        def once() -> AsyncIterator[bytes]:
            nonlocal used
            if used:
                raise RuntimeError("an async-iterator upload source can be read only once")
            used = True
            return source

        return _Source(once, None, None, None)
    raise TypeError(
        "upload source must be a local path, bytes, or an async iterator of bytes, "
        f"not {type(source).__name__}"
    )


async def kill_quietly(host: Host, handle: ProcessHandle) -> None:
    """SIGKILL ``handle``'s process tree if it still runs; never raises (for clean-up paths)."""
    if handle.returncode is None:
        with contextlib.suppress(Exception):
            await host.terminate_subprocess(handle, aggressive=True)


def normalize_sha256(value: str) -> str:
    """A SHA-256 hex digest in lower case; ``ValueError`` unless it is 64 hex digits."""
    digest = value.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"expected_sha256 must be 64 hex digits, got {value!r}")
    return digest


def checksum_mismatch(path: str, expected: str, actual: str) -> ValueError:
    """The error for content whose SHA-256 differs from the one promised."""
    return ValueError(f"SHA-256 mismatch for {path}: expected {expected}, got {actual}")


class BaseHost(ABC):
    """Shared behaviour of every host; subclasses provide the primitives."""

    def __init__(self, taskdir: str | os.PathLike[str] | None) -> None:
        self._taskdir: str | None = None
        self._owns_taskdir = taskdir is None
        if taskdir is not None:
            self._taskdir = self._normalize_taskdir(os.fspath(taskdir))
        self._home: str | None = None
        #: A private taskdir a lost connection kept ``disconnect()`` from removing.
        self.left_behind_taskdir: str | None = None

    # ---------------------------------------------------------------- identity

    def _normalize_taskdir(self, taskdir: str) -> str:
        if not taskdir:
            raise ValueError("taskdir must not be empty")
        if not taskdir.startswith("/"):
            raise ValueError(f"taskdir must be an absolute path, got {taskdir!r}")
        return posixpath.normpath(taskdir)

    @property
    def taskdir(self) -> str:
        """The task's folder on the host (absolute)."""
        if self._taskdir is None:
            raise HostNotConnected(
                f"{type(self).__name__} was created without a taskdir; "
                "a private one is made at connect() - connect first"
            )
        return self._taskdir

    @property
    def workdir(self) -> str:
        """``taskdir + "/workdir"``: where commands run and relative paths point."""
        return self.taskdir + "/workdir"

    def _resolve(self, path: str | os.PathLike[str], *, what: str = "path") -> str:
        text = os.fspath(path)
        if not isinstance(text, str) or not text:
            raise ValueError(f"{what} must be a non-empty path")
        if "\0" in text:
            raise ValueError(f"{what} contains a NUL character: {text!r}")
        if text.startswith("/"):
            return text
        return posixpath.join(self.workdir, text)

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        """Open the host (SSH connection for a remote one); make a private taskdir if none was given."""
        await self._open()
        if self._taskdir is None:
            try:
                await self._remove_left_behind()
                self._taskdir = await self._make_private_taskdir()
                await self.setup_workdir()
            except BaseException:
                await asyncio.shield(self._close())
                raise

    async def disconnect(self) -> None:
        """Stop tails and tunnels, remove a private taskdir, close. Safe to call twice.

        A private taskdir that cannot be removed (the connection was lost) is logged with
        its location as a warning, and removed at this host's next ``connect()``.
        """
        try:
            if self._owns_taskdir and self._taskdir is not None:
                left: str | None = self._taskdir
                try:
                    if self._is_open():
                        await self.cleanup_taskdir(True)
                        left = None
                except HostConnectionError:
                    pass
                finally:
                    self._taskdir = None
                    if left is not None:
                        self.left_behind_taskdir = left
                        _log.warning(
                            "%r: could not remove the private taskdir %s (the connection was lost); "
                            "it is removed at the next connect(), else remove it by hand",
                            self,
                            left,
                        )
        finally:
            await self._close()

    def keep_taskdir(self) -> None:
        """Leave a private taskdir (made at ``connect()``) in place at ``disconnect()``."""
        self._owns_taskdir = False

    async def _remove_left_behind(self) -> None:
        left, self.left_behind_taskdir = self.left_behind_taskdir, None
        if left is None:
            return
        self._taskdir = left
        try:
            await self.cleanup_taskdir(True)
        except Exception:
            self.left_behind_taskdir = left  # still there: keep pointing at it
        finally:
            self._taskdir = None

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    def _is_open(self) -> bool: ...

    @abstractmethod
    async def _make_private_taskdir(self) -> str: ...

    @abstractmethod
    async def setup_workdir(self) -> None:
        """Create taskdir and workdir (mode 0700) if missing; never deletes anything."""

    @abstractmethod
    async def cleanup_taskdir(self, aggressive: bool = False) -> None:
        """Remove the whole taskdir (``aggressive``: also read-only parts, ignoring errors)."""

    @abstractmethod
    async def establish_tunnel(self, remote_port: int, *, bind_addr: str = "127.0.0.1") -> int:
        """A local port that reaches ``127.0.0.1:remote_port`` on the host."""

    @abstractmethod
    async def resolve_host_home(self) -> str:
        """The host user's home directory (absolute)."""

    # ---------------------------------------------------------------- processes

    @abstractmethod
    async def launch_subprocess(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        merge_stderr: bool = True,
        stdin: bool = False,
        env_remove: Sequence[str] | None = None,
    ) -> ProcessHandle:
        """Start ``command`` in ``cwd`` (default: workdir) in its own process group.

        A string runs under ``/bin/sh -c``; a sequence is an argv passed
        verbatim. Inherited variables whose names match an ``env_remove``
        fnmatch pattern (e.g. ``"*_TOKEN"``) are dropped, then ``env`` is
        added. Returns while the process runs.
        """

    @abstractmethod
    async def terminate_subprocess(self, handle: ProcessHandle, *, aggressive: bool = False) -> None:
        """End the process and every process it started.

        ``aggressive=False``: SIGTERM, up to 5 s grace, then SIGKILL.
        ``True``: SIGKILL at once. A process that already ended is left alone.
        """

    async def run(
        self,
        cmd: Command,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        input: str | bytes | None = None,
        timeout: float | None = None,
        check: bool = False,
        on_stdout: Callable[[bytes], object] | None = None,
        on_stderr: Callable[[bytes], object] | None = None,
        env_remove: Sequence[str] | None = None,
    ) -> RunResult:
        """Run ``cmd`` to completion and return its decoded output and exit code.

        ``cmd`` is an argv sequence (no shell) or a shell string; ``env`` and
        ``env_remove`` act as in ``launch_subprocess``. ``input`` is
        fed to stdin. After ``timeout`` seconds the whole process tree is
        killed and ``CommandTimeout`` raised. ``check=True`` raises
        ``HostCommandError`` on a non-zero exit. ``on_stdout``/``on_stderr``
        stream that output as it comes (each chunk of bytes is passed to the
        callable, and the result's field stays empty) instead of collecting it.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        data = input.encode() if isinstance(input, str) else input
        handle = await self.launch_subprocess(
            cmd, env=env, cwd=cwd, merge_stderr=False, stdin=data is not None, env_remove=env_remove
        )
        out = bytearray()
        err = bytearray()

        async def pump(
            chunks: AsyncIterator[bytes] | None, sink: bytearray, stream: Callable[[bytes], object] | None
        ) -> None:
            if chunks is not None:
                async for chunk in chunks:
                    if stream is None:
                        sink += chunk
                    else:
                        stream(chunk)

        async def feed() -> None:
            if handle.stdin is None or data is None:
                return
            try:
                if data:
                    handle.stdin.write(data)
                    await handle.stdin.drain()
                handle.stdin.close()
                await handle.stdin.wait_closed()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the command did not read all of its input; its exit code tells

        async def complete() -> int:
            await asyncio.gather(
                pump(handle.stdout, out, on_stdout), pump(handle.stderr, err, on_stderr), feed()
            )
            return await handle.wait()

        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a racing cancel.
            async with asyncio.timeout(timeout):
                code = await complete()
        except TimeoutError:
            await handle.kill()
            killed = handle.returncode
            raise CommandTimeout(
                cmd,
                timeout or 0.0,
                out.decode(errors="replace"),
                err.decode(errors="replace"),
                killed if killed is not None else -9,
            ) from None
        except BaseException:
            # Cancelled or failed while running: leave no process behind.
            await handle.kill()
            raise
        await handle.aclose()  # it has exited: reap it and close its pipes or channel
        result = RunResult(out.decode(errors="replace"), err.decode(errors="replace"), code)
        if check and code != 0:
            raise HostCommandError(cmd, code, result.stdout, result.stderr)
        return result

    async def _kill_quietly(self, handle: ProcessHandle) -> None:
        await kill_quietly(self, handle)

    async def run_command(
        self,
        command: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run a shell command string; never raises for a non-zero exit."""
        return await self.run(command, cwd=cwd, env=env)

    async def launch_detached(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
    ) -> DetachedProcess:
        """Start ``command`` so that it survives a lost connection (see ``optio_host.detached``)."""
        return await launch_detached(self, command, env=env, cwd=cwd, name=name)

    # ---------------------------------------------------------------- files

    @abstractmethod
    async def _write_file_atomic(
        self,
        target: str,
        chunks: AsyncIterator[bytes],
        *,
        mode: int | None,
        before_commit: Callable[[], None],
    ) -> None:
        """Write to an unpredictable temporary name beside ``target``, then rename.

        ``before_commit`` runs after the last chunk and may raise to abandon the write.
        """

    @abstractmethod
    async def _read_file(self, path: str) -> tuple[int, AsyncIterator[bytes]]:
        """Size and chunks of a file; ``FileNotFoundError`` if it is missing."""

    @abstractmethod
    async def _open_checked(self, path: str, folder: str) -> tuple[int, AsyncIterator[bytes]]:
        """``_read_file`` of what ``path`` opens, verified to be a regular file under ``folder``."""

    @abstractmethod
    async def file_sha256(self, path: str) -> str | None:
        """Hex SHA-256 of a file, computed on the host; ``None`` if there is no such file."""

    @abstractmethod
    async def _list_dir(self, path: str) -> list[tuple[str, bool]] | None:
        """``(name, is_dir)`` of a folder's entries; ``None`` if it is not a folder."""

    @abstractmethod
    async def _exists(self, path: str) -> bool:
        """Whether anything (even a dangling link) is at ``path``."""

    @abstractmethod
    async def remove_file(self, path: str) -> None:
        """Delete a file; a missing file is not an error."""

    @abstractmethod
    async def realpath(self, path: str) -> str:
        """The path with every symlink resolved on the host; ``FileNotFoundError`` if missing."""

    @abstractmethod
    async def file_size(self, path: str) -> int | None:
        """Size in bytes, or ``None`` if there is no such file."""

    @abstractmethod
    def archive_workdir(self, exclude: Sequence[str] | None = None) -> AsyncIterator[bytes]:
        """A gzip'd tar stream of the workdir's contents (see ``optio_host.archive``)."""

    @abstractmethod
    async def restore_workdir(self, stream: AsyncIterator[bytes]) -> None:
        """Empty the workdir, then unpack an archive from ``archive_workdir`` into it."""

    async def write_text(self, relpath: str, content: str) -> None:
        """Write UTF-8 ``content`` to ``workdir/relpath``, creating parent folders."""
        if not relpath or relpath.startswith("/"):
            raise ValueError(f"write_text needs a path relative to the workdir, got {relpath!r}")
        normalized = posixpath.normpath(relpath)
        if normalized == ".." or normalized.startswith("../"):
            raise ValueError(f"write_text path {relpath!r} leaves the workdir")
        await self.put_file_to_host(content.encode("utf-8"), self._resolve(normalized))

    async def put_file_to_host(
        self,
        source: FileSource,
        absolute_target: str,
        *,
        expected_sha256: str | None = None,
        skip_if_unchanged: bool = False,
        progress_cb: ProgressCallback | None = None,
    ) -> bool:
        """Upload ``source`` to ``absolute_target`` atomically (temporary name, then rename).

        With ``expected_sha256`` the written bytes are verified and a mismatch
        raises ``ValueError`` leaving no target. With ``skip_if_unchanged`` a
        target whose SHA-256 already matches is left alone and
        ``progress_cb(None, "already up to date")`` is called.

        Returns ``True`` when the target was written, ``False`` when it was left
        alone because it was already up to date (0.1.2 returned ``None``).
        """
        target = self._resolve(absolute_target, what="upload target")
        src = _source(source)
        expected = normalize_sha256(expected_sha256) if expected_sha256 is not None else None
        if skip_if_unchanged:
            if expected is None and src.local_path is None and src.size is None:
                raise ValueError(
                    "skip_if_unchanged with an async-iterator source needs expected_sha256 "
                    "(the stream cannot be read twice to hash it first)"
                )
            wanted = expected or await src.sha256()
            if await self.file_sha256(target) == wanted:
                if progress_cb is not None:
                    progress_cb(None, "already up to date")
                return False
        tap = Sha256Tap(src.size, progress_cb) if expected else _CountTap(src.size, progress_cb)

        def verify() -> None:
            if expected is not None and tap.hexdigest() != expected:
                raise checksum_mismatch(target, expected, tap.hexdigest())
            if src.size is not None and tap.count != src.size:
                raise OSError(
                    f"upload of {target} read {tap.count} bytes but the source has {src.size}; "
                    "it changed while being copied"
                )

        await self._write_file_atomic(target, tap.tap(src.open()), mode=src.mode, before_commit=verify)
        return True

    async def open_regular_file(self, path: str, *, under: str) -> tuple[int, AsyncIterator[bytes]]:
        """Open ``path`` on the host, then verify what was opened; return its size and bytes.

        The opened file must be a regular file whose real path (every link
        resolved, as the host sees it) lies under the folder ``under`` (itself
        a real path). So the bytes handed over are those of the file checked,
        whatever is swapped in meanwhile. A FIFO or device is refused without
        being read and without blocking. Missing: ``FileNotFoundError``;
        refused: ``PermissionError`` (outside) or ``OSError`` (not a regular file).
        Close the iterator (``aclose``) when done with it early.
        """
        folder = posixpath.normpath(self._resolve(under, what="folder"))
        target = self._resolve(path)
        size, chunks = await self._open_checked(target, folder)
        return size, sized_chunks(chunks, size, target)

    async def fetch_bytes_from_host(
        self, absolute_path: str, *, progress_cb: ProgressCallback | None = None
    ) -> bytes:
        """The whole contents of a file on the host; ``FileNotFoundError`` if missing."""
        path = self._resolve(absolute_path)
        size, raw = await self._read_file(path)
        chunks = sized_chunks(raw, size, path)
        tap = _CountTap(size, progress_cb)
        # A pre-sized BytesIO hands its buffer out without a copy, so peak memory is about the
        # file size, not twice it. Only up to a bound: the size is what the worker claims (a
        # sparse file says 8 GiB and holds nothing), so beyond it memory grows with what is read.
        buffer = io.BytesIO()
        if size:
            buffer.seek(min(size, _PRESIZE_LIMIT) - 1)
            buffer.write(b"\0")
            buffer.seek(0)
        try:
            async for chunk in tap.tap(chunks):
                buffer.write(chunk)
        finally:
            await aclose_iterator(chunks)
        return buffer.getvalue()

    async def fetch_file_from_host(
        self,
        absolute_path: str,
        local_path: str | os.PathLike[str],
        *,
        progress_cb: ProgressCallback | None = None,
    ) -> None:
        """Stream a host file into a local file (atomically: temporary name, then rename)."""
        path = self._resolve(absolute_path)
        size, raw = await self._read_file(path)
        chunks = sized_chunks(raw, size, path)
        tap = _CountTap(size, progress_cb)
        target = os.path.abspath(os.fspath(local_path))
        try:
            await write_atomic(target, tap.tap(chunks))
        finally:
            await aclose_iterator(chunks)

    async def glob(self, pattern: str) -> list[str]:
        """Sorted absolute paths matching ``pattern`` (absolute, or relative to the workdir).

        ``*``, ``?`` and ``[...]`` match within one path segment; a leading dot
        must be matched explicitly, as in the shell. ``**`` is not recursive.
        """
        if not pattern:
            raise ValueError("glob pattern must not be empty")
        root = "/" if pattern.startswith("/") else self.workdir
        segments = [segment for segment in pattern.split("/") if segment]
        dirs_only = pattern.endswith("/")
        candidates = [root]
        needs_check = False
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if not _MAGIC.search(segment):
                candidates = [posixpath.join(path, segment) for path in candidates]
                needs_check = True
                continue
            matched: list[str] = []
            for folder in candidates:
                entries = await self._list_dir(folder)
                for name, is_dir in entries or ():
                    if (not last or dirs_only) and not is_dir:
                        continue
                    if name.startswith(".") and not segment.startswith("."):
                        continue
                    if fnmatchcase(name, segment):
                        matched.append(posixpath.join(folder, name))
            candidates = matched
            needs_check = False
        if needs_check or dirs_only:
            found = []
            for path in candidates:
                if dirs_only:
                    if await self._list_dir(path) is not None:
                        found.append(path)
                elif await self._exists(path):
                    found.append(path)
            candidates = found
        return sorted(set(candidates))

    # ---------------------------------------------------------------- following files

    @abstractmethod
    def tail_bytes(self, absolute_path: str, *, offset: int = 0) -> AsyncIterator[bytes]:
        """Bytes of a file from ``offset`` on, then as they are appended, until disconnect.

        Waits for a file that does not exist yet. Starts over from the
        beginning if the file is truncated or replaced (like ``tail -F``).
        """

    async def tail_file(self, absolute_path: str) -> AsyncIterator[str]:
        """Every line of the file from the first, then new lines as they come, without newlines.

        Works for a file created after the call and for lines of any length.
        Ends when the host disconnects.
        """
        chunks = self.tail_bytes(self._resolve(absolute_path))
        try:
            async for line in iter_lines(chunks):
                yield line
        finally:
            await aclose_iterator(chunks)  # end the tail (its watch, its host process) now


class ReleasingIterator(AsyncIterator[bytes]):
    """Chunks from ``chunks``; ``aclose()`` also runs ``release`` (once), even if never iterated.

    (An async generator closed before its first step never runs its ``finally``, so a
    file opened for it would stay open.)
    """

    def __init__(self, chunks: AsyncIterator[bytes], release: Callable[[], Awaitable[None]]) -> None:
        self._chunks = chunks
        self._release: Callable[[], Awaitable[None]] | None = release

    def __aiter__(self) -> ReleasingIterator:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop reading and release the file (a remote reader process, a descriptor)."""
        release, self._release = self._release, None
        try:
            await aclose_iterator(self._chunks)
        finally:
            if release is not None:
                await asyncio.shield(release())


def sized_chunks(chunks: AsyncIterator[bytes], size: int, path: str) -> ReleasingIterator:
    """``chunks`` of a file whose ``size`` was read at open (fstat); never more than ``size`` bytes.

    A file that turns out longer (or shorter) raises ``OSError`` "changed size while being
    read" as soon as that shows, so memory and disk stay bounded by ``size`` whatever a worker
    appends meanwhile. Closing the result closes ``chunks`` (stops the read on the host).
    """

    async def checked() -> AsyncIterator[bytes]:
        count = 0
        async for chunk in chunks:
            count += len(chunk)
            if count > size:
                raise OSError(
                    f"{path} changed size while being read (more than the {size} bytes it had when opened)"
                )
            yield chunk
        if count != size:
            raise OSError(f"{path} changed size while being read ({count} of {size} bytes)")

    return ReleasingIterator(checked(), lambda: aclose_iterator(chunks))


class _CountTap(Sha256Tap):
    """A ``Sha256Tap`` that only counts (hashing costs time on multi-GiB transfers)."""

    def update(self, chunk: bytes) -> None:
        self.count += len(chunk)
        self._report()
