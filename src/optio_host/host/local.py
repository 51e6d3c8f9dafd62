"""``LocalHost``: the host is this machine."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from optio_host._localfs import rmtree_forcibly, write_atomic
from optio_host._streams import CHUNK_SIZE, local_file_sha256
from optio_host.archive import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMBERS,
    consume_workdir_archive,
    yield_workdir_archive,
)
from optio_host.errors import WORKDIR_SETUP_HINT, CommandNotStarted, command_not_started
from optio_host.host._tailing import kind_of_mode, untailable
from optio_host.host._watch import POLL_INTERVAL, FileWatch, watch_file
from optio_host.host.base import BaseHost, Command, ReleasingIterator
from optio_host.process import KILL_REAP_WAIT, TERMINATE_GRACE, ProcessHandle, owned_by
from optio_host.quoting import validate_argv, validate_env, validate_env_remove, without_env
from optio_host.worker import path_inside

__all__ = ["LocalHost"]

#: With inotify, re-check this often anyway (guards against a missed event).
_SAFETY_RECHECK = 0.5


@dataclass(eq=False)
class _Tail:
    stopped: bool = False
    watch: FileWatch | None = field(default=None)

    def stop(self) -> None:
        self.stopped = True
        if self.watch is not None:
            self.watch._wake()


async def _empty_output() -> AsyncIterator[bytes]:
    return
    yield b""


async def _read_chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        chunk = await reader.read(CHUNK_SIZE)
        if not chunk:
            return
        yield chunk


def _not_started(exc: OSError, program: str, directory: str, *, is_workdir: bool) -> CommandNotStarted:
    """The launch failure ``exc`` as the same exception a RemoteHost raises."""
    if exc.filename == directory and program != directory:  # the child's chdir failed
        code = {errno.ENOENT: "ECWD", errno.ENOTDIR: "ECWDNOTDIR"}.get(exc.errno or 0, "ECWDACCES")
        hint = WORKDIR_SETUP_HINT if code == "ECWD" and is_workdir else ""
        return command_not_started(code, directory, "this machine", hint=hint)
    code = "EACCES" if isinstance(exc, PermissionError) else "ENOENT"
    return command_not_started(code, program, "this machine")


class LocalHost(BaseHost):
    """Runs everything on this machine; ``taskdir`` is a local folder.

    Without a ``taskdir`` a private one is created at ``connect()`` and removed
    at ``disconnect()``. With one, ``connect()`` is optional.
    """

    def __init__(self, taskdir: str | os.PathLike[str] | None = None) -> None:
        if taskdir is not None:
            taskdir = os.path.abspath(os.fspath(taskdir))
        super().__init__(taskdir)
        self._tails: set[_Tail] = set()

    def __repr__(self) -> str:
        return f"LocalHost(taskdir={self._taskdir!r})"

    # ---------------------------------------------------------------- lifecycle

    async def _open(self) -> None:
        pass  # nothing to connect to

    async def _close(self) -> None:
        for tail in list(self._tails):
            tail.stop()

    def _is_open(self) -> bool:
        return True

    async def _make_private_taskdir(self) -> str:
        return await asyncio.to_thread(tempfile.mkdtemp, prefix="optio-host-")

    async def setup_workdir(self) -> None:
        os.makedirs(self.taskdir, mode=0o700, exist_ok=True)
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)

    async def cleanup_taskdir(self, aggressive: bool = False) -> None:
        taskdir = self.taskdir
        if aggressive:
            await asyncio.to_thread(rmtree_forcibly, taskdir)
        else:
            try:
                await asyncio.to_thread(shutil.rmtree, taskdir)
            except FileNotFoundError:
                pass

    async def establish_tunnel(self, remote_port: int, *, bind_addr: str = "127.0.0.1") -> int:
        # On this machine the port is already reachable: nothing to forward.
        if not isinstance(remote_port, int) or not 0 < remote_port < 65536:
            raise ValueError(f"remote_port must be 1-65535, got {remote_port!r}")
        return remote_port

    async def resolve_host_home(self) -> str:
        if self._home is None:
            self._home = os.path.expanduser("~")
        return self._home

    # ---------------------------------------------------------------- processes

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
        extra_env = validate_env(env)
        removed = validate_env_remove(env_remove)
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else validate_argv(command)
        directory = self._resolve(cwd, what="cwd") if cwd is not None else self.workdir
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *argv,
                cwd=directory,
                env={**without_env(os.environ, removed), **extra_env} if extra_env or removed else None,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
                start_new_session=True,  # own process group: terminate ends the whole tree
            )
        )
        try:
            # Shielded: asyncio, cancelled mid-spawn, kills only the direct child and then waits
            # for its pipes, which the rest of the tree keeps open. Let it start, then end it all.
            process = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            await self._end_spawned(spawn)
            raise
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            raise _not_started(exc, argv[0], directory, is_workdir=cwd is None) from None
        if process.stdout is None:  # pragma: no cover - stdout=PIPE guarantees it
            raise RuntimeError("subprocess started without a stdout pipe")
        handle = ProcessHandle(
            pid_like=process,
            stdout=_read_chunks(process.stdout),
            stderr=None if merge_stderr or process.stderr is None else _read_chunks(process.stderr),
            stdin=process.stdin if stdin else None,
        )
        return owned_by(handle, self)

    async def _end_spawned(self, spawn: asyncio.Future[asyncio.subprocess.Process]) -> None:
        """A launch was cancelled while its process was being created: end whatever started."""
        try:
            process = await asyncio.shield(spawn)
        except BaseException:
            return  # it failed to start, or we were cancelled again
        await owned_by(ProcessHandle(pid_like=process, stdout=_empty_output()), self).kill()

    async def terminate_subprocess(self, handle: ProcessHandle, *, aggressive: bool = False) -> None:
        process = handle.pid_like
        try:
            await self._end_group(process, aggressive=aggressive)
        finally:
            # The caller is done with it: close the pipes now rather than leave the transport to
            # the garbage collector (which may run after the event loop is gone).
            transport = getattr(process, "_transport", None)
            if transport is not None and process.returncode is not None:
                transport.close()

    async def _end_group(self, process: asyncio.subprocess.Process, *, aggressive: bool) -> None:
        if process.returncode is not None:
            if _output_held(process):
                _kill_orphaned_group(process.pid)
            return
        group = process.pid  # a session leader: its pid is its process group id
        if not aggressive:
            _signal_group(group, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TERMINATE_GRACE):
                    await process.wait()
        # SIGKILL the group even after a graceful exit: children that ignored SIGTERM remain.
        _signal_group(group, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_REAP_WAIT):
                await process.wait()

    # ---------------------------------------------------------------- files

    async def remove_file(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._resolve(path))

    async def _write_file_atomic(
        self,
        target: str,
        chunks: AsyncIterator[bytes],
        *,
        mode: int | None,
        before_commit: Callable[[], None],
    ) -> None:
        await write_atomic(target, chunks, mode=mode, before_commit=before_commit)

    async def _read_file(self, path: str) -> tuple[int, AsyncIterator[bytes]]:
        fd = _open_regular(path)
        return os.fstat(fd).st_size, _chunks_of(fd)

    async def _open_checked(self, path: str, folder: str) -> tuple[int, AsyncIterator[bytes]]:
        fd = _open_regular(path)
        try:
            # What was opened, not what the name leads to now: the link in /proc names the file.
            real = _opened_path(fd, path)
            if not path_inside(real, folder):
                raise PermissionError(f"{path} resolves to {real}, outside {folder}/; refused")
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        return size, _chunks_of(fd)

    async def file_sha256(self, path: str) -> str | None:
        try:
            return await local_file_sha256(self._resolve(path))
        except (FileNotFoundError, IsADirectoryError):
            return None

    async def _list_dir(self, path: str) -> list[tuple[str, bool]] | None:
        try:
            with os.scandir(path) as entries:
                return [(entry.name, entry.is_dir()) for entry in entries]
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None

    async def _exists(self, path: str) -> bool:
        return os.path.lexists(path)

    async def realpath(self, path: str) -> str:
        return os.path.realpath(self._resolve(path), strict=True)

    async def file_size(self, path: str) -> int | None:
        try:
            return os.stat(self._resolve(path)).st_size
        except FileNotFoundError:
            return None

    def archive_workdir(self, exclude: Sequence[str] | None = None) -> AsyncIterator[bytes]:
        return yield_workdir_archive(self.workdir, exclude)

    async def restore_workdir(
        self,
        stream: AsyncIterator[bytes],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_members: int = DEFAULT_MAX_MEMBERS,
    ) -> None:
        await consume_workdir_archive(stream, self.workdir, max_bytes=max_bytes, max_members=max_members)

    # ---------------------------------------------------------------- tailing

    async def tail_bytes(self, absolute_path: str, *, offset: int = 0) -> AsyncIterator[bytes]:
        # The refusal of anything but a regular file is _tailing's rule. Reads run in a thread and
        # each one yields to the loop, so neither a slow disk nor an endless writer stalls the process.
        path = self._resolve(absolute_path)
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        tail = _Tail()
        self._tails.add(tail)
        followed: _FollowedFile | None = None
        position = offset
        try:
            while not tail.stopped:
                if tail.watch is None or (tail.watch.awaiting_folder and _folder_exists(path)):
                    if tail.watch is not None:
                        tail.watch.close()
                    tail.watch = watch_file(path)
                if followed is None:
                    followed = _FollowedFile.open(path)
                    if followed is None:
                        await self._wait(tail)
                        continue
                    if followed.size() < position:
                        position = 0  # shorter than where we were: it was rewritten
                data = await followed.read(position)
                if data:
                    position += len(data)
                    yield data
                    continue
                if followed.size() < position:
                    position = 0  # truncated: start over, like tail -F
                    continue
                if followed.replaced():
                    followed.close()  # replaced by a new file: follow the name
                    followed = None
                    position = 0
                    continue
                await self._wait(tail)
        finally:
            if followed is not None:
                followed.close()
            if tail.watch is not None:
                tail.watch.close()
            self._tails.discard(tail)

    @staticmethod
    async def _wait(tail: _Tail) -> None:
        if tail.watch is None:
            await asyncio.sleep(POLL_INTERVAL)
        else:
            await tail.watch.wait(_SAFETY_RECHECK if tail.watch.precise else POLL_INTERVAL)


def _open_regular(path: str) -> int:
    """A descriptor of the regular file ``path`` opens; FIFOs and devices are refused unread.

    O_NONBLOCK: opening a FIFO must not wait for a writer (it would stall the event loop).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{path} is a directory")
        if not stat.S_ISREG(mode):
            raise OSError(f"{path} is not a regular file (a FIFO, socket or device); refused")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _opened_path(fd: int, path: str) -> str:
    """The real path of the file open at ``fd`` (``realpath`` of ``path`` where there is no /proc)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def _chunks_of(fd: int) -> ReleasingIterator:
    """The bytes at ``fd`` from its start, read in a thread; ``fd`` is closed at the end or aclose."""
    closed = False

    async def release() -> None:
        nonlocal closed
        if not closed:
            closed = True
            os.close(fd)

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            read = asyncio.ensure_future(asyncio.to_thread(os.read, fd, CHUNK_SIZE))
            try:
                chunk = await asyncio.shield(read)
            except asyncio.CancelledError:
                # The thread still reads from fd: closing it now could read a reused number.
                await asyncio.wait([read])
                raise
            if not chunk:
                await release()
                return
            yield chunk

    return ReleasingIterator(chunks(), release)


class _FollowedFile:
    """One open descriptor of a followed regular file.

    Reads run in a worker thread (a slow disk stalls the tail, not the loop). A
    read cancelled mid-way goes on in its thread, so the descriptor is closed
    only when that read has ended: its number must not be reused under it.
    """

    def __init__(self, path: str, fd: int, info: os.stat_result) -> None:
        self._path = path
        self._fd = fd
        self._identity = (info.st_dev, info.st_ino)
        self._pending: asyncio.Future[bytes] | None = None

    @classmethod
    def open(cls, path: str) -> _FollowedFile | None:
        """Open ``path`` if it is a regular file; ``None`` if it does not exist (yet)."""
        try:
            kind = kind_of_mode(os.lstat(path).st_mode)
            if kind is not None:
                raise untailable(path, kind)  # not even opened: a device open may act
            # O_NOFOLLOW and O_NONBLOCK: a link or FIFO swapped in since the lstat fails or
            # opens at once (and is refused below) instead of being followed or blocking.
            flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise untailable(path, "link") from None
            raise
        info = os.fstat(fd)
        kind = kind_of_mode(info.st_mode)
        if kind is not None:
            os.close(fd)
            raise untailable(path, kind)
        return cls(path, fd, info)

    async def read(self, position: int) -> bytes:
        """Up to ``CHUNK_SIZE`` bytes at ``position`` (``b""`` at the end)."""
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(None, os.pread, self._fd, CHUNK_SIZE, position)
        data = await asyncio.shield(self._pending)
        self._pending = None
        return data

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def replaced(self) -> bool:
        """Whether something else (a new file, a link) now stands at the path."""
        try:
            info = os.lstat(self._path)
        except FileNotFoundError:
            return False  # removed: keep reading what we have, like tail -F
        return (info.st_dev, info.st_ino) != self._identity

    def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.add_done_callback(functools.partial(_close_after_read, self._fd))
        else:
            os.close(self._fd)


def _close_after_read(fd: int, read: asyncio.Future[bytes]) -> None:
    if not read.cancelled():
        read.exception()  # retrieved: a failed read nobody awaits any more is not an error
    os.close(fd)


def _folder_exists(path: str) -> bool:
    return os.path.isdir(os.path.dirname(path))


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def _output_held(process: asyncio.subprocess.Process) -> bool:
    """Whether something still holds the output pipes of a command that has exited: children it
    started in the background (``cmd &``), which are still in its process group."""
    return any(stream is not None and not stream.at_eof() for stream in (process.stdout, process.stderr))


def _kill_orphaned_group(group: int) -> None:
    """KILL what is left of the group of a leader that has exited and been reaped. While any
    member lives, the group id stays taken, so no new process can have it as its pid: a process
    with that pid means the group emptied and the id went to someone else (left alone)."""
    try:
        os.kill(group, 0)
    except ProcessLookupError:
        _signal_group(group, signal.SIGKILL)
    except PermissionError:
        pass  # another user's process has that pid now
