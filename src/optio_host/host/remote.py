"""``RemoteHost``: the host is reached over SSH (asyncssh), through one pool of connections.

Every remote command goes through one wrapper script, passed its arguments
as quoted words (nothing is ever spliced into it). The wrapper reads the
environment from stdin (so secret values never appear on a command line),
changes to the working directory, reports its process id, which is also its
process group id because sshd starts each session in a new session, and then
execs the command. Ending a process tree is then ``kill -- -PGID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets
import stat
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from optio_host.archive import find_prune_expression, resolve_excludes, sanitize_archive
from optio_host.errors import HostConnectionError, HostNotConnected
from optio_host.host import _scripts as scripts
from optio_host.host._ssh import Link, SessionPool, describe, translate_errors
from optio_host.host._tailing import untailable
from optio_host.host.base import BaseHost, Command
from optio_host.paths import temp_name_for
from optio_host.process import ProcessHandle
from optio_host.quoting import env_assignments_line, script_argv, validate_argv, validate_env
from optio_host.types import SSHConfig

__all__ = ["RemoteHost"]

_T = TypeVar("_T")

TERMINATE_GRACE = 5.0
KILL_REAP_WAIT = 2.0
#: Each read takes everything buffered (up to more than a channel window). asyncssh refills the
#: window whenever it hands buffered data on, even while more waits undelivered in the channel:
#: reading in smaller pieces lets a slow reader's backlog grow by a window per read (seen: 170 MB
#: behind a 256 MiB archive). Draining the whole buffer each time keeps it to about two windows.
_READ_SIZE = 8 * 1024 * 1024
#: How the tail snippet (``scripts.TAIL``) reports a refused path on stderr.
_UNTAILABLE = b"optio-untailable:"
#: How long ``disconnect()`` lets a clean-up after a lost connection (kills, temp files) finish.
CLEANUP_WAIT = 5.0


def _stdin_of(handle: ProcessHandle) -> _RemoteStdin:
    if not isinstance(handle.stdin, _RemoteStdin):  # pragma: no cover - launched with stdin=True
        raise RuntimeError("process was started without stdin")
    return handle.stdin


class _RemoteStdin:
    """stdin of a remote process: ``close()`` sends EOF (the channel stays open for output)."""

    def __init__(self, writer: asyncssh.SSHWriter[bytes], config: SSHConfig) -> None:
        self._writer = writer
        self._config = config
        self._eof = False

    def write(self, data: bytes) -> None:
        self._writer.write(bytes(data))

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError) as exc:
            # BrokenPipeError (the command closed its stdin) stays as it is: callers tell it apart.
            raise HostConnectionError(
                f"lost the connection to {describe(self._config)} while sending input"
            ) from exc

    def close(self) -> None:
        if not self._eof:
            self._eof = True
            with contextlib.suppress(BrokenPipeError, OSError):
                self._writer.write_eof()

    write_eof = close

    def is_closing(self) -> bool:
        return self._eof

    async def wait_closed(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            await self._writer.drain()


@dataclass
class _RemoteProcessHandle(ProcessHandle):
    """A ``ProcessHandle`` whose ``wait()`` reports a lost connection as ``HostConnectionError``."""

    async def wait(self) -> int:
        try:
            await self.pid_like.wait_closed()
        except (asyncssh.Error, OSError) as exc:
            raise HostConnectionError(f"lost the connection while waiting: {exc}") from exc
        code = self.returncode
        if code is None:
            raise HostConnectionError(
                "the connection closed before the remote process reported an exit status"
            )
        return code


async def _stream(reader: asyncssh.SSHReader[bytes], first: bytes, config: SSHConfig) -> AsyncIterator[bytes]:
    if first:
        yield first
    while True:
        with translate_errors(config, "reading output"):
            chunk = await reader.read(_READ_SIZE)
        if not chunk:
            return
        yield chunk


class RemoteHost(BaseHost):
    """Runs everything on a host reached over SSH.

    One pool of SSH connections (normally one) carries commands, SFTP and
    port forwards. Without a ``taskdir`` a private one is made on the host at
    ``connect()`` and removed at ``disconnect()``.
    """

    def __init__(self, ssh_config: SSHConfig, taskdir: str | None = None) -> None:
        if not isinstance(ssh_config, SSHConfig):
            raise TypeError(f"ssh_config must be an SSHConfig, not {type(ssh_config).__name__}")
        super().__init__(taskdir)
        self.ssh_config = ssh_config
        self._pool: SessionPool | None = None
        self._groups: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        #: Processes whose channel has closed (asyncssh's is_closing() is already true after EOF).
        self._ended: weakref.WeakSet[Any] = weakref.WeakSet()
        self._watchers: set[asyncio.Task[None]] = set()
        self._tails: set[Any] = set()
        self._listeners: list[asyncssh.SSHListener] = []
        #: Temporary upload files that could not be removed (the link was down): retried later.
        self._orphans: set[str] = set()
        #: The connection each process runs on, and when it started.
        self._process_links: weakref.WeakKeyDictionary[Any, tuple[Link, float]] = weakref.WeakKeyDictionary()
        #: Process groups to kill once the host answers again (their connection died under them).
        self._pending_kills: dict[int, float] = {}
        self._cleanup: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RemoteHost({describe(self.ssh_config)}, taskdir={self._taskdir!r})"

    # ---------------------------------------------------------------- lifecycle

    @property
    def _connected_pool(self) -> SessionPool:
        if self._pool is None:
            raise HostNotConnected(
                f"RemoteHost({describe(self.ssh_config)}) is not connected: "
                "call connect() or use it as 'async with host:'"
            )
        return self._pool

    async def _open(self) -> None:
        if self._pool is None:
            self._pool = SessionPool(self.ssh_config)
            self._pool.on_reconnect = self._schedule_cleanup
        await self._pool.start()

    def _is_open(self) -> bool:
        return self._pool is not None and self._pool.has_live_link()

    async def _close(self) -> None:
        cleanup = self._cleanup
        if cleanup is not None and not cleanup.done():
            # A clean-up after a lost connection gets a few seconds to finish.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_WAIT):
                    await asyncio.shield(cleanup)
        pool, self._pool = self._pool, None
        for tail in list(self._tails):
            with contextlib.suppress(Exception):
                tail.close()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        if pool is not None:
            await pool.close()
        for task in list(self._watchers):
            task.cancel()

    async def _make_private_taskdir(self) -> str:
        result = await self._sh('exec mktemp -d "${TMPDIR:-/tmp}/optio-host-XXXXXXXXXX"')
        return result.strip()

    async def _sh(self, script: str, *args: str, check: bool = True) -> str:
        """Run an internal script (arguments as ``$1``...) from ``/``; return its stdout."""
        result = await self.run(script_argv(script, *args), cwd="/", check=check)
        return result.stdout

    async def setup_workdir(self) -> None:
        """Create taskdir and workdir (mode 0700) if missing; never deletes anything."""
        await self._sh('umask 077 && mkdir -p -- "$1"', self.workdir)

    async def cleanup_taskdir(self, aggressive: bool = False) -> None:
        """Remove the whole taskdir (``aggressive``: also read-only parts, ignoring errors)."""
        taskdir = self.taskdir
        if taskdir == "/":
            raise ValueError("refusing to remove '/' as a taskdir")
        if aggressive:
            await self._sh('chmod -R u+rwX -- "$1" 2>/dev/null; rm -rf -- "$1"', taskdir, check=False)
        else:
            await self._sh('rm -rf -- "$1"', taskdir)

    async def establish_tunnel(self, remote_port: int, *, bind_addr: str = "127.0.0.1") -> int:
        """Forward ``bind_addr``:<ephemeral> here to ``127.0.0.1:remote_port`` on the host."""
        if not isinstance(remote_port, int) or not 0 < remote_port < 65536:
            raise ValueError(f"remote_port must be 1-65535, got {remote_port!r}")
        link = self._connected_pool.primary
        with translate_errors(self.ssh_config, f"forwarding to port {remote_port}"):
            listener = await link.conn.forward_local_port(bind_addr, 0, "127.0.0.1", remote_port)
        self._listeners.append(listener)
        return int(listener.get_port())

    async def resolve_host_home(self) -> str:
        if self._home is None:
            self._home = (await self._sh('printf %s "$HOME"')) or "/"
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
    ) -> ProcessHandle:
        return await self._launch(
            command, env=env, cwd=cwd, merge_stderr=merge_stderr, stdin=stdin, control=False
        )

    async def _launch(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None,
        cwd: str | None,
        merge_stderr: bool,
        stdin: bool,
        control: bool,
    ) -> ProcessHandle:
        extra_env = validate_env(env)
        if isinstance(command, str):
            mode, words = "sh", [command]
        else:
            mode, words = "argv", validate_argv(command)
        directory = self._resolve(cwd, what="cwd") if cwd is not None else self.workdir
        wrapper_args = ["1" if extra_env else "0", directory, mode, "1" if merge_stderr else "0", *words]
        pool = self._connected_pool
        link, process = await pool.start_process(
            lambda link: scripts.command_line(wrapper_args, link.login_shell_is_sh),
            "starting a command",
            control=control,
        )
        self._watch_until_closed(process, pool, link)
        try:
            if extra_env:
                process.stdin.write(env_assignments_line(extra_env).encode() + b"\n")
            if not stdin:
                process.stdin.write_eof()
            first = await self._read_header(process, link, directory, words[0])
        except BaseException:
            process.close()
            raise
        return _RemoteProcessHandle(
            pid_like=process,
            stdout=_stream(process.stdout, first, self.ssh_config),
            stderr=None if merge_stderr else _stream(process.stderr, b"", self.ssh_config),
            stdin=_RemoteStdin(process.stdin, self.ssh_config) if stdin else None,
        )

    def _watch_until_closed(
        self, process: asyncssh.SSHClientProcess[bytes], pool: SessionPool, link: Link
    ) -> None:
        async def release_when_closed() -> None:
            try:
                await process.wait_closed()
            except Exception:
                pass
            finally:
                pool.release(link)

        task = asyncio.get_running_loop().create_task(release_when_closed())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _read_header(
        self, process: asyncssh.SSHClientProcess[bytes], link: Link, directory: str, program: str
    ) -> bytes:
        """Read the wrapper's ``OPTIO:`` line; return output that came after it."""
        buffer = b""
        while True:
            start = buffer.find(b"OPTIO:")
            end = buffer.find(b"\n", start) if start >= 0 else -1
            if end >= 0:
                break
            with translate_errors(self.ssh_config, "starting a command"):
                chunk = await process.stdout.read(_READ_SIZE)
            if not chunk:
                detail = (await process.stderr.read(4096)).decode(errors="replace").strip()
                raise HostConnectionError(
                    f"the remote shell on {describe(self.ssh_config)} did not start the command"
                    + (f": {detail}" if detail else "")
                )
            buffer += chunk
        status = buffer[start + 6 : end].decode(errors="replace")
        if status == "ECWD":
            raise FileNotFoundError(f"working directory does not exist on the host: {directory}")
        if status == "ENOENT":
            raise FileNotFoundError(f"program not found on the host: {program}")
        pid, _, shell_is_sh = status.partition(":")
        self._groups[process] = int(pid)
        self._process_links[process] = (link, time.monotonic())
        link.login_shell_is_sh = shell_is_sh == "1"
        return buffer[end + 1 :]

    async def terminate_subprocess(self, handle: ProcessHandle, *, aggressive: bool = False) -> None:
        process = handle.pid_like
        if self._has_ended(process):
            return
        group = self._groups.get(process)
        if group is None:
            process.close()
            return
        if self._kill_later_if_cut_off(process):
            # Nothing can reach it now, and waiting here for a reconnect would hold back the
            # caller's error: it is killed once the host answers again.
            return
        try:
            if not aggressive:
                await self._signal_group(group, "TERM")
                await self._wait_exit(process, TERMINATE_GRACE)
            # KILL the group even after a graceful exit: children that ignored TERM remain.
            await self._signal_group(group, "KILL")
        except HostConnectionError:
            self._kill_later_if_cut_off(process)
            raise
        if not await self._wait_exit(process, KILL_REAP_WAIT):
            process.close()

    def _kill_later_if_cut_off(self, process: asyncssh.SSHClientProcess[bytes]) -> bool:
        """If ``process``'s connection is gone, queue its group to be killed after reconnecting."""
        link, started = self._process_links.get(process, (None, 0.0))
        group = self._groups.get(process)
        if link is None or link.alive or group is None:
            return False
        self._pending_kills[group] = started
        process.close()
        self._schedule_cleanup()
        return True

    def _schedule_cleanup(self) -> None:
        """In the background (reconnecting if need be): kill what lost connections left running
        and remove their temporary files. A pass that cannot reach the host is retried at the
        next reconnect."""
        if self._pool is None or not (self._pending_kills or self._orphans):
            return
        if self._cleanup is None or self._cleanup.done():
            self._cleanup = asyncio.get_running_loop().create_task(self._clean_up())
            self._watchers.add(self._cleanup)
            self._cleanup.add_done_callback(self._watchers.discard)

    async def _clean_up(self) -> None:
        while self._pending_kills:
            group, started = next(iter(self._pending_kills.items()))
            min_age = max(0, int(time.monotonic() - started) - 1)
            try:
                await self.run(script_argv(scripts.KILL_GROUP, str(group), str(min_age)), cwd="/")
            except Exception:
                return  # unreachable (the next reconnect tries again), or closed
            self._pending_kills.pop(group, None)
        with contextlib.suppress(Exception):
            await self._remove_orphans()  # keeps what it could not remove for the next reconnect
        if self._pending_kills:  # queued while this ran: another pass once this task is done
            asyncio.get_running_loop().call_soon(self._schedule_cleanup)

    async def _signal_group(self, group: int, signal_name: str) -> None:
        handle = await self._launch(
            ["kill", "-s", signal_name, "--", f"-{group}"],
            env=None,
            cwd="/",
            merge_stderr=True,
            stdin=False,
            control=True,
        )
        async for _ in handle.stdout:
            pass  # "No such process" when it already ended: fine
        await handle.wait()

    def _has_ended(self, process: asyncssh.SSHClientProcess[bytes]) -> bool:
        return process.returncode is not None or process in self._ended

    async def _wait_exit(self, process: asyncssh.SSHClientProcess[bytes], timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._has_ended(process):
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # ---------------------------------------------------------------- files

    async def _sftp_call(self, what: str, operation: Callable[[asyncssh.SFTPClient], Awaitable[_T]]) -> _T:
        """One SFTP request (errors translated; a dead connection is replaced first)."""
        try:
            result = await self._connected_pool.sftp_call(what, operation)
        except OSError:
            # FileNotFoundError and the like: the host answered, so leftovers can go now too.
            if self._orphans and self._is_open():
                await self._remove_orphans()
            raise
        if self._orphans:
            await self._remove_orphans()
        return result

    async def _remove_orphans(self) -> None:
        """Remove temporary files a lost connection kept us from removing (best effort)."""
        for path in list(self._orphans):
            self._orphans.discard(path)

            async def remove(sftp: asyncssh.SFTPClient, path: str = path) -> None:
                await sftp.remove(path)

            try:
                await self._connected_pool.sftp_call(path, remove)
            except FileNotFoundError:
                pass
            except OSError:
                self._orphans.add(path)
                return

    async def remove_file(self, path: str) -> None:
        """Delete a file; a missing file is not an error."""
        target = self._resolve(path)
        with contextlib.suppress(FileNotFoundError):
            await self._sftp_call(target, lambda sftp: sftp.remove(target))

    async def _write_file_atomic(
        self,
        target: str,
        chunks: AsyncIterator[bytes],
        *,
        mode: int | None,
        before_commit: Callable[[], None],
    ) -> None:
        temp = temp_name_for(target)
        args = [posixpath.dirname(target) or "/", temp, "" if mode is None else f"{mode:o}"]
        handle = await self.launch_subprocess(
            script_argv(scripts.PUT, *args), cwd="/", merge_stderr=True, stdin=True
        )
        committed = False
        try:

            async def feed(stdin: _RemoteStdin) -> None:
                async for chunk in chunks:
                    stdin.write(chunk)
                    await stdin.drain()

            code, output = await self._feed_and_wait(handle, feed)
            if code != 0:
                where = describe(self.ssh_config)
                raise OSError(f"writing {target} on {where} failed (exit {code}): {output}")
            before_commit()
            await self._sftp_call(target, lambda sftp: sftp.posix_rename(temp, target))
            committed = True
        finally:
            if not committed:
                await asyncio.shield(self._discard(handle, temp))

    async def _feed_and_wait(
        self, handle: ProcessHandle, feed: Callable[[_RemoteStdin], Awaitable[None]]
    ) -> tuple[int, str]:
        """Feed a process's stdin (then EOF) while keeping the start of its output; its exit code."""
        output = bytearray()

        async def collect() -> None:
            async for piece in handle.stdout:
                output.extend(piece[: 4096 - len(output)])

        reader = asyncio.ensure_future(collect())
        try:
            stdin = _stdin_of(handle)
            try:
                await feed(stdin)
            finally:
                stdin.close()
            await reader
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise HostConnectionError(f"lost the connection to {describe(self.ssh_config)}") from exc
        finally:
            reader.cancel()
        return await handle.wait(), output.decode(errors="replace").strip()

    async def _discard(self, handle: ProcessHandle, temp: str) -> None:
        await self._kill_quietly(handle)
        self._orphans.add(temp)
        if self._is_open():  # else once reconnected (_clean_up): waiting here would delay the error
            with contextlib.suppress(Exception):
                await self._remove_orphans()

    async def _stat(self, path: str, *, follow: bool = True) -> asyncssh.SFTPAttrs | None:
        try:
            return await self._sftp_call(path, lambda sftp: sftp.stat(path) if follow else sftp.lstat(path))
        except FileNotFoundError:
            return None

    async def _read_file(self, path: str) -> tuple[int, AsyncIterator[bytes]]:
        handle = await self.launch_subprocess(script_argv(scripts.GET, path), cwd="/", merge_stderr=False)
        try:
            header, rest = await _first_line(handle.stdout)
            if header == "missing":
                raise FileNotFoundError(2, f"no such file on {describe(self.ssh_config)}", path)
            if header == "directory":
                raise IsADirectoryError(f"{path} is a directory")
            if not header.isdigit():
                errors = b"".join([piece async for piece in handle.stderr or _empty()])
                raise OSError(f"cannot read {path} on the host: {errors.decode(errors='replace').strip()}")
        except BaseException:
            await asyncio.shield(self._kill_quietly(handle))
            raise

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in rest:
                    yield chunk
                code = await handle.wait()
                if code != 0:
                    raise OSError(f"reading {path} on the host failed (exit {code})")
            finally:
                if handle.returncode is None:
                    await asyncio.shield(self._kill_quietly(handle))

        return int(header), chunks()

    async def file_sha256(self, path: str) -> str | None:
        result = await self.run(script_argv(scripts.SHA256, path), cwd="/")
        if result.exit_code == 3:
            return None
        if result.exit_code != 0:
            raise OSError(f"cannot hash {path} on the host: {result.stderr.strip()}")
        return result.stdout.lstrip("\\")[:64].lower()

    async def _list_dir(self, path: str) -> list[tuple[str, bool]] | None:
        try:
            entries = await self._sftp_call(path, lambda sftp: sftp.readdir(path))
        except ConnectionError:
            raise
        except OSError:
            return None  # missing, not a folder, or not readable
        listing = []
        for entry in entries:
            name = entry.filename if isinstance(entry.filename, str) else entry.filename.decode()
            if name in (".", ".."):
                continue
            perms = entry.attrs.permissions or 0
            if stat.S_ISLNK(perms):
                target = await self._stat(posixpath.join(path, name))
                perms = (target.permissions or 0) if target is not None else 0
            listing.append((name, stat.S_ISDIR(perms)))
        return listing

    async def _exists(self, path: str) -> bool:
        return await self._stat(path, follow=False) is not None

    async def realpath(self, path: str) -> str:
        """The path with every symlink resolved on the host; ``FileNotFoundError`` if missing."""
        target = self._resolve(path)
        resolved = await self._sftp_call(target, lambda sftp: sftp.realpath(target))
        if await self._stat(resolved) is None:
            raise FileNotFoundError(2, f"no such file on {describe(self.ssh_config)}", target)
        return resolved if isinstance(resolved, str) else resolved.decode()

    async def file_size(self, path: str) -> int | None:
        """Size in bytes, or ``None`` if there is no such file."""
        attrs = await self._stat(self._resolve(path))
        return None if attrs is None else int(attrs.size or 0)

    # ---------------------------------------------------------------- archives

    async def archive_workdir(self, exclude: Sequence[str] | None = None) -> AsyncIterator[bytes]:
        """A gzip'd tar stream of the workdir's contents, made by the host's own tar."""
        patterns = resolve_excludes(exclude)
        handle = await self.launch_subprocess(
            script_argv(scripts.ARCHIVE, self.workdir, *find_prune_expression(patterns)),
            cwd="/",
            merge_stderr=False,
        )
        errors = bytearray()

        async def collect() -> None:
            async for piece in handle.stderr or _empty():
                errors.extend(piece)

        reader = asyncio.ensure_future(collect())
        try:
            async for chunk in handle.stdout:
                yield chunk
            await reader
            code = await handle.wait()
            text = errors.decode(errors="replace")
            if code != 0 or "optio-tar-exit:0" not in text:
                detail = text.replace("optio-tar-exit:", "tar exit status ").strip()
                raise OSError(f"archiving {self.workdir} on the host failed: {detail}")
        finally:
            reader.cancel()
            if handle.returncode is None:
                await asyncio.shield(self._kill_quietly(handle))

    async def restore_workdir(self, stream: AsyncIterator[bytes]) -> None:
        """Replace the workdir's contents with an archive; unsafe archives raise ``ValueError``.

        Members are checked here before they reach the host's ``tar``; the
        archive lands in a staging folder first, so a refused one changes nothing.
        """
        staging = posixpath.join(self.taskdir, f".workdir.restore-{secrets.token_hex(8)}")
        await self._sh('umask 077 && mkdir -p -- "$2" && mkdir -- "$1"', staging, self.workdir)
        committed = False
        try:
            handle = await self.launch_subprocess(
                ["tar", "-xf", "-", "-C", staging, "--no-same-owner"],
                cwd="/",
                merge_stderr=True,
                stdin=True,
            )

            async def feed(stdin: _RemoteStdin) -> None:
                async for chunk in sanitize_archive(stream):
                    stdin.write(chunk)
                    await stdin.drain()

            try:
                code, output = await self._feed_and_wait(handle, feed)
            except BaseException:
                await asyncio.shield(self._kill_quietly(handle))
                raise
            if code != 0:
                raise ValueError(f"the host's tar refused the archive: {output}")
            await self._sh(scripts.RESTORE_COMMIT, staging, self.workdir)
            committed = True
        finally:
            if not committed and self._is_open():
                await asyncio.shield(self._sh('rm -rf -- "$1"', staging, check=False))

    # ---------------------------------------------------------------- tailing

    async def tail_bytes(self, absolute_path: str, *, offset: int = 0) -> AsyncIterator[bytes]:
        """Follow a regular file by name (``scripts.TAIL``); ``OSError`` for anything else there."""
        path = self._resolve(absolute_path)
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        handle = await self.launch_subprocess(
            script_argv(scripts.TAIL, path, str(offset + 1)),
            cwd="/",
            merge_stderr=False,
            stdin=True,
        )
        process = handle.pid_like
        self._tails.add(process)
        try:
            async for chunk in handle.stdout:
                yield chunk
            if self._pool is not None and not self._is_open():
                raise HostConnectionError(
                    f"lost the connection to {describe(self.ssh_config)} while following {path}"
                )
            if self._pool is not None and handle.stderr is not None:
                report = b"".join([chunk async for chunk in handle.stderr])  # one short line at most
                if report.startswith(_UNTAILABLE):
                    raise untailable(path, report[len(_UNTAILABLE) :].decode(errors="replace").strip())
        finally:
            self._tails.discard(process)
            # Closing stdin ends the remote tail (its watchdog sees EOF); over a dead connection
            # the watchdog never hears of it, so the tail is killed once we are connected again.
            if not self._kill_later_if_cut_off(process):
                process.close()


async def _first_line(chunks: AsyncIterator[bytes]) -> tuple[str, AsyncIterator[bytes]]:
    """The first line of a stream (decoded) and an iterator over everything after it."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\n" in buffer or len(buffer) > 4096:
            break
    line, _, rest = buffer.partition(b"\n")

    async def remainder() -> AsyncIterator[bytes]:
        if rest:
            yield rest
        async for chunk in chunks:
            yield chunk

    return line.decode(errors="replace").strip(), remainder()


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""
