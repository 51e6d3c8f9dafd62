"""``RemoteHost``'s processes: every command starts through one wrapper script, passed its
arguments as quoted words (nothing is ever spliced into it). The wrapper reads the environment
from stdin (so secret values never appear on a command line), changes to the working directory,
reports its process id, which is also its process group id because sshd starts each session in a
new session, and then execs the command. Ending a process tree is then ``kill -- -PGID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncssh

from optio_host.errors import (
    NOT_STARTED,
    WORKDIR_SETUP_HINT,
    HostConnectionError,
    command_not_started,
)
from optio_host.host import _scripts as scripts
from optio_host.host._remote_core import RemoteCore
from optio_host.host._ssh import Link, SessionPool, describe, translate_errors
from optio_host.host.base import Command
from optio_host.process import KILL_REAP_WAIT, TERMINATE_GRACE, ProcessHandle, owned_by
from optio_host.quoting import script_argv, validate_argv, validate_env, validate_env_remove
from optio_host.types import SSHConfig

__all__ = ["READ_SIZE", "RemoteProcesses", "RemoteStdin", "stdin_of"]

#: Each read takes everything buffered (up to more than a channel window). asyncssh refills the
#: window whenever it hands buffered data on, even while more waits undelivered in the channel:
#: reading in smaller pieces lets a slow reader's backlog grow by a window per read (seen: 170 MB
#: behind a 256 MiB archive). Draining the whole buffer each time keeps it to about two windows.
READ_SIZE = 8 * 1024 * 1024


def stdin_of(handle: ProcessHandle) -> RemoteStdin:
    if not isinstance(handle.stdin, RemoteStdin):  # pragma: no cover - launched with stdin=True
        raise RuntimeError("process was started without stdin")
    return handle.stdin


class RemoteStdin:
    """stdin of a remote process: ``close()`` sends EOF (the channel stays open for output)."""

    def __init__(self, writer: asyncssh.SSHWriter[bytes], config: SSHConfig) -> None:
        self._writer = writer
        self._config = config
        self._eof = False

    def write(self, data: bytes) -> None:
        self._writer.write(bytes(data))

    async def drain(self) -> None:
        # BrokenPipeError (the command closed its stdin) stays as it is: callers tell it apart.
        with translate_errors(self._config, "sending input", keep=(BrokenPipeError,)):
            await self._writer.drain()

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
        with translate_errors(None, "waiting for a command"):
            await self.pid_like.wait_closed()
        code = self.returncode
        if code is None:
            raise HostConnectionError(
                "the connection closed before the remote process reported an exit status"
            )
        return code


async def _stream(
    process: asyncssh.SSHClientProcess[bytes],
    reader: asyncssh.SSHReader[bytes],
    first: bytes,
    config: SSHConfig,
    *,
    owns_channel: bool,
    on_end: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """A process's output. Abandoning the owning stream closes the channel: output nobody will
    read would otherwise fill the window, sshd would never send its close, and the session slot
    would stay taken for good."""
    finished = False
    try:
        if first:
            yield first
        while True:
            with translate_errors(config, "reading output"):
                chunk = await reader.read(READ_SIZE)
            if not chunk:
                finished = True
                if on_end is not None:
                    on_end()
                return
            yield chunk
    finally:
        if owns_channel and not finished:
            process.close()


class RemoteProcesses(RemoteCore):
    """Commands on the host: launching through the wrapper, session slots, ending process groups."""

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
        return await self._launch(
            command,
            env=env,
            cwd=cwd,
            merge_stderr=merge_stderr,
            stdin=stdin,
            control=False,
            env_remove=env_remove,
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
        env_remove: Sequence[str] | None = None,
        spare: bool = False,
    ) -> ProcessHandle:
        extra_env = validate_env(env)
        removed = validate_env_remove(env_remove)
        env_on_stdin = bool(extra_env or removed)
        if isinstance(command, str):
            mode, words = "sh", [command]
        else:
            mode, words = "argv", validate_argv(command)
        directory = self._resolve(cwd, what="cwd") if cwd is not None else self.workdir
        wrapper_args = ["1" if env_on_stdin else "0", directory, mode, "1" if merge_stderr else "0", *words]
        env_line = scripts.env_line(extra_env, removed) if env_on_stdin else None
        opening: list[bool] = []

        def command_for(link: Link) -> str:
            opening.append(True)  # from here on a cancel must not leave a half-started command
            return scripts.command_line(wrapper_args, link.login_shell_is_sh)

        start = asyncio.ensure_future(
            self._start(
                command_for,
                env_line,
                words,
                directory,
                merge_stderr=merge_stderr,
                stdin=stdin,
                control=control,
                spare=spare,
            )
        )
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            if not opening:
                start.cancel()  # still waiting for a slot: nothing started
            else:
                await _end_when_started(start)
            raise

    async def _start(
        self,
        command_for: Callable[[Link], str],
        env_line: str | None,
        words: list[str],
        directory: str,
        *,
        merge_stderr: bool,
        stdin: bool,
        control: bool,
        spare: bool,
    ) -> ProcessHandle:
        pool = self._connected_pool
        link, process = await pool.start_process(
            command_for, "starting a command", control=control, spare=spare
        )
        self._watch_until_closed(process, pool, link, " ".join(words)[:200])
        try:
            if env_line is not None:
                process.stdin.write(env_line.encode() + b"\n")
            if not stdin:
                process.stdin.write_eof()
            first = await self._read_header(process, link, directory, words[0])
        except BaseException:
            process.close()
            raise
        return owned_by(
            _RemoteProcessHandle(
                pid_like=process,
                stdout=_stream(
                    process,
                    process.stdout,
                    first,
                    self.ssh_config,
                    owns_channel=True,
                    on_end=lambda: self._drained.add(process),
                ),
                stderr=None
                if merge_stderr
                else _stream(process, process.stderr, b"", self.ssh_config, owns_channel=False),
                stdin=RemoteStdin(process.stdin, self.ssh_config) if stdin else None,
            ),
            self,
        )

    def _watch_until_closed(
        self, process: asyncssh.SSHClientProcess[bytes], pool: SessionPool, link: Link, what: str
    ) -> None:
        """Give the session slot back when the channel closes, whatever closes it (EOF and exit,
        ``terminate_subprocess``, an abandoned output stream, a lost connection)."""
        self._open_channels[process] = what

        async def release_when_closed() -> None:
            try:
                await process.wait_closed()
            except Exception:
                pass
            finally:
                self._open_channels.pop(process, None)
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
                chunk = await process.stdout.read(READ_SIZE)
            if not chunk:
                detail = (await process.stderr.read(4096)).decode(errors="replace").strip()
                raise HostConnectionError(
                    f"the remote shell on {describe(self.ssh_config)} did not start the command"
                    + (f": {detail}" if detail else "")
                )
            buffer += chunk
        status = buffer[start + 6 : end].decode(errors="replace")
        if status in NOT_STARTED:
            path = program if status in ("ENOENT", "EACCES") else directory
            hint = (
                WORKDIR_SETUP_HINT
                if status == "ECWD" and self._taskdir is not None and directory == self.workdir
                else ""
            )
            raise command_not_started(status, path, describe(self.ssh_config), hint=hint)
        pid, _, shell_is_sh = status.partition(":")
        self._groups[process] = int(pid)
        self._process_links[process] = (link, time.monotonic())
        link.login_shell_is_sh = shell_is_sh == "1"
        return buffer[end + 1 :]

    async def terminate_subprocess(self, handle: ProcessHandle, *, aggressive: bool = False) -> None:
        process = handle.pid_like
        try:
            await self._end_group(process, aggressive=aggressive)
        finally:
            # However it ended, the caller is done with it. Output it left unread would keep the
            # channel (and its session slot) open forever: sshd sends its close only after every
            # byte fits into our window, and nobody reads to open it. Buffered output stays readable.
            process.close()

    async def _end_group(self, process: asyncssh.SSHClientProcess[bytes], *, aggressive: bool) -> None:
        group = self._groups.get(process)
        if group is None:
            return
        if self._has_ended(process):
            # Children started in the background still hold its output: they are in its group.
            if process not in self._drained and not self._kill_later_if_cut_off(process):
                await self._control(script_argv(scripts.KILL_ORPHANS, str(group)))
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
        await self._wait_exit(process, KILL_REAP_WAIT)

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
        await self._control(["kill", "-s", signal_name, "--", f"-{group}"])

    async def _control(self, command: Command) -> None:
        """Run a short command on a control slot (kept free for ending processes), output ignored:
        "No such process" when the group already ended is fine."""
        handle = await self._launch(command, env=None, cwd="/", merge_stderr=True, stdin=False, control=True)
        async for _ in handle.stdout:
            pass
        await handle.wait()

    def _has_ended(self, process: asyncssh.SSHClientProcess[bytes]) -> bool:
        return process.returncode is not None

    async def _wait_exit(self, process: asyncssh.SSHClientProcess[bytes], timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._has_ended(process):
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def open_channels(self) -> list[str]:
        """The commands whose channels are still open (each holds one of the server's session
        slots). For leak checks in tests: a finished, killed or abandoned command is not listed."""
        return sorted(self._open_channels.values())

    async def wait_channels_closed(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for every command channel to close; what is still open."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._open_channels:
                    watchers = [task for task in self._watchers if task is not self._cleanup]
                    if not watchers:
                        break
                    await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        return self.open_channels()

    @property
    def slots_in_use(self) -> int:
        """Session slots taken on this host's connections (0 when nothing runs)."""
        return 0 if self._pool is None else self._pool.slots_in_use


#: How long a cancelled launch waits for its command to report its process group, so it can end it.
LAUNCH_SETTLE = 10.0


async def _end_when_started(start: asyncio.Future[ProcessHandle]) -> None:
    """A launch was cancelled after the channel was asked for: let it finish, then end what it started.

    Cancelling it halfway would leave the command running on the host with no owner (and, while
    the channel opens, a session slot taken), since its process group is known only from its header.
    """
    try:
        async with asyncio.timeout(LAUNCH_SETTLE):
            handle = await asyncio.shield(start)
    except BaseException:
        start.cancel()  # failed, too slow, or cancelled again: its own clean-up closes the channel
        return
    await handle.kill()
