"""The ``Host`` interface: what every host offers, whatever it runs on, and its contract.

Each member's docstring here is the one description of what it does. ``LocalHost``
and ``RemoteHost`` implement it through ``BaseHost``, whose base ``HostCore``
subclasses ``Host`` explicitly, so they inherit these docstrings. Task code should
be written against this protocol.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from optio_host._streams import ProgressCallback
from optio_host.detached import DetachedProcess
from optio_host.process import ProcessHandle, RunResult

__all__ = ["Command", "FileSource", "Host"]

#: A command: a shell string (run by ``/bin/sh -c``) or an argv sequence (run as is).
Command = str | Sequence[str]

#: What ``put_file_to_host`` accepts: a local path, bytes, or an async iterator of bytes.
FileSource = str | os.PathLike[str] | bytes | bytearray | memoryview | AsyncIterator[bytes]


@runtime_checkable
class Host(Protocol):
    """Where a task's work runs: this machine (``LocalHost``) or one reached over SSH (``RemoteHost``).

    ``taskdir`` is the task's own folder on the host and ``workdir`` is
    ``taskdir + "/workdir"``. Relative paths given to host methods are
    relative to ``workdir``. A ``RemoteHost`` used before ``connect()`` raises
    ``HostNotConnected``; a connection that cannot be made or is lost raises
    ``HostConnectionError`` (a ``ConnectionError``).
    """

    @property
    def taskdir(self) -> str:
        """The task's own folder on the host (absolute).

        A host made without one gets a private one at ``connect()``; before that,
        ``HostNotConnected``.
        """

    @property
    def workdir(self) -> str:
        """``taskdir + "/workdir"``: where commands run by default and what relative paths are relative to."""

    async def connect(self) -> None:
        """Open the host; one made without a taskdir gets a private one now.

        ``LocalHost`` has nothing to open; ``RemoteHost`` opens one SSH connection (a
        pool, normally of one) that carries commands, SFTP and port forwards. The private
        taskdir (taskdir and workdir, mode 0700) is made after removing one that an earlier
        ``disconnect()`` had to leave behind. A host given a taskdir does not create it:
        call ``setup_workdir()``.
        """

    async def disconnect(self) -> None:
        """Stop every tail and tunnel, remove a private taskdir, then close. Idempotent.

        A private taskdir stays if ``keep_taskdir()`` was called. One that cannot be removed
        (the connection was lost) is logged as a warning with its location, and removed at
        this host's next ``connect()``.
        """

    async def __aenter__(self) -> Self:
        """``await connect()``, then the host itself: ``async with make_host(...) as host:``."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """``await disconnect()``, however the block ended."""

    async def setup_workdir(self) -> None:
        """Create taskdir and workdir (mode 0700) if missing. Idempotent: it never deletes anything.

        ``RemoteHost`` raises ``UnsafeTaskdir`` (a ``PermissionError``) when the taskdir
        or workdir is a symbolic link or another user's, or a folder above it could be
        swapped by another user (a shared ``/tmp``), and ``OSError`` when it cannot create them.
        """

    async def write_text(self, relpath: str, content: str) -> None:
        """Write UTF-8 ``content`` to ``workdir/relpath``, creating parent folders.

        Written like ``put_file_to_host`` (temporary name, then rename). ``ValueError``
        if ``relpath`` is empty, absolute, or leaves the workdir.
        """

    async def establish_tunnel(self, remote_port: int, *, bind_addr: str = "127.0.0.1") -> int:
        """A local port that reaches ``127.0.0.1:remote_port`` on the host.

        ``LocalHost``: the port is already reachable, so ``remote_port`` itself.
        ``RemoteHost``: a local port forward over the SSH connection, listening on
        ``bind_addr`` at an ephemeral port (``local_port=`` picks one); it may be
        called many times, and every forward closes at ``disconnect()``.
        ``ValueError`` unless ``remote_port`` is 1-65535.
        """

    def tail_file(self, absolute_path: str) -> AsyncIterator[str]:
        """Every line of the file from its first, then lines as they are appended, without the newline.

        Never skips lines written before the call; works for a file created after
        the call and for lines of 16 MiB and more. Ends when the host disconnects.
        Only a regular file is followed (see ``tail_bytes``).
        """

    def tail_bytes(self, absolute_path: str, *, offset: int = 0) -> AsyncIterator[bytes]:
        """The bytes of a file from ``offset`` on, then as they are appended, until the host disconnects.

        Waits for a file that does not exist yet, and starts over from the beginning
        when the file is truncated or replaced (like ``tail -F``). Only a regular file
        is followed: a symbolic link, FIFO, device or folder at the path, also one that
        replaces the file later, raises ``OSError``. ``ValueError`` for a negative ``offset``.
        """

    async def cleanup_taskdir(self, aggressive: bool = False) -> None:
        """Remove the whole taskdir; one that is already gone is not an error.

        ``aggressive=True`` also removes read-only parts, ignoring errors.
        """

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
        """Start ``command`` in ``cwd`` (default: the workdir) in a process group of its own.

        A string runs under ``/bin/sh -c``; a sequence is an argv passed verbatim
        (no shell). Inherited variables whose names match an ``env_remove`` fnmatch
        pattern (e.g. ``"*_TOKEN"``) are dropped, then ``env`` is added. Returns while
        the process runs. ``merge_stderr=True``: stderr goes into ``handle.stdout`` and
        ``handle.stderr`` is ``None``; ``False``: separate iterators. ``stdin=True``:
        ``handle.stdin`` is a writer, else ``None``. Lines of 16 MiB and more pass.

        A command that cannot start raises a ``CommandNotStarted`` (an ``OSError``):
        ``ProgramNotFound``, ``ProgramNotExecutable`` (an argv's program), ``CwdNotFound``,
        ``CwdNotADirectory``, ``CwdNotAccessible``. An environment name that is not
        ``[A-Za-z_][A-Za-z0-9_]*``, or a NUL in an argument, is a ``ValueError``. End the
        process with ``handle.aclose()`` or ``terminate_subprocess``.
        """

    async def terminate_subprocess(self, handle: ProcessHandle, *, aggressive: bool = False) -> None:
        """End the process and every process it started, and close its pipes or channel.

        ``aggressive=False``: SIGTERM, up to 5 s grace, then SIGKILL. ``True``: SIGKILL at
        once, without waiting long. A process that already ended is left alone, but not
        children it started in the background that still hold its output: those are killed.
        """

    async def launch_detached(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
    ) -> DetachedProcess:
        """Start ``command`` so that it survives a lost connection (see ``optio_host.detached``).

        Its output and exit status are kept in ``<taskdir>/.optio/detached/<name>``
        (``name`` defaults to a random id; ``ValueError`` unless it is a plain file name).
        ``OSError`` if the host could not start it.
        """

    async def remove_file(self, path: str) -> None:
        """Delete a file; a missing file is not an error."""

    async def put_file_to_host(
        self,
        source: FileSource,
        absolute_target: str,
        *,
        expected_sha256: str | None = None,
        skip_if_unchanged: bool = False,
        progress_cb: ProgressCallback | None = None,
    ) -> bool | None:
        """Upload ``source`` (a local path, bytes, or an async iterator of bytes) to ``absolute_target``.

        Creates parent folders. Writes to an unpredictable temporary name and renames,
        so the target is never half-written; on failure the temporary file is removed.
        A local path's permission bits are kept. With ``expected_sha256`` the written
        bytes are verified, and a mismatch raises ``ValueError`` naming both digests and
        leaves no target. With ``skip_if_unchanged`` a target whose SHA-256 already
        matches is left alone and ``progress_cb(None, "already up to date")`` is called;
        an async-iterator source then needs ``expected_sha256``, else ``ValueError``
        before anything is written. ``progress_cb(percent, message)``: ``percent`` a float
        or ``None``, ``message`` a str or ``None``.

        Returns ``True`` if written, ``False`` if skipped as up to date (``None``: a
        0.1.2-style host).
        """

    async def fetch_bytes_from_host(
        self, absolute_path: str, *, progress_cb: ProgressCallback | None = None
    ) -> bytes:
        """The whole contents of a file on the host; ``FileNotFoundError`` if it is missing.

        A file that changes size while being read raises ``OSError``.
        """

    async def fetch_file_from_host(
        self,
        absolute_path: str,
        local_path: str | os.PathLike[str],
        *,
        progress_cb: ProgressCallback | None = None,
    ) -> None:
        """Stream a file on the host into ``local_path`` here (temporary name, then rename).

        Memory stays bounded whatever the size. As in ``fetch_bytes_from_host``: a missing
        file raises ``FileNotFoundError``, one that changes size while being read ``OSError``.
        """

    async def run_command(
        self,
        command: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run a shell string under ``/bin/sh -c`` in ``cwd`` (default: the workdir), ``env`` added.

        Returns its output decoded as UTF-8 (invalid bytes replaced) and its exit
        code; never raises for a non-zero exit.
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
        """Run ``cmd`` to completion; return its decoded output and exit code.

        ``cmd`` is an argv sequence (each element passed verbatim, no shell) or a shell
        string; ``cwd``, ``env`` and ``env_remove`` act as in ``launch_subprocess`` (a
        missing ``cwd`` is an error, never a silent fallback). ``input`` (``str`` as
        UTF-8, ``bytes``, or an async iterator of bytes, streamed) is fed to stdin.
        After ``timeout`` seconds (positive, else ``ValueError``) the whole process tree
        is killed and ``CommandTimeout`` (a ``HostCommandError`` and ``TimeoutError``, with
        the output so far) is raised. ``check=True`` raises ``HostCommandError`` on a
        non-zero exit. ``on_stdout`` and ``on_stderr`` receive that output chunk by chunk
        as it comes (the result's field then stays empty) instead of collecting it.
        """

    async def resolve_host_home(self) -> str:
        """The host user's home directory (absolute)."""

    async def glob(self, pattern: str) -> list[str]:
        """Sorted absolute paths matching ``pattern`` (absolute, or relative to the workdir).

        ``*``, ``?`` and ``[...]`` match within one path segment; a leading dot must be
        matched explicitly, as in the shell. ``**`` is not recursive. ``ValueError`` for
        an empty pattern.
        """

    async def realpath(self, path: str) -> str:
        """The path with every symlink resolved on the host; ``FileNotFoundError`` if it does not exist."""

    async def file_size(self, path: str) -> int | None:
        """Size in bytes (links followed), or ``None`` if there is no such file."""

    async def file_sha256(self, path: str) -> str | None:
        """Hex SHA-256 (lower case) of the file at ``path`` (relative: to the workdir), computed on the host.

        ``None`` if there is no such file, or it is a folder.
        """

    def archive_workdir(self, exclude: Sequence[str] | None = None) -> AsyncIterator[bytes]:
        """A gzip'd tar stream of the workdir's contents (a plain method returning an async iterator).

        ``exclude=None``: ``DEFAULT_WORKDIR_EXCLUDES``; ``[]``: nothing excluded; a list:
        exactly those patterns (not merged with the defaults). A pattern (a shell glob)
        excludes a path when it matches any one segment of it or the whole relative
        path. See ``optio_host.archive``.
        """

    async def restore_workdir(self, stream: AsyncIterator[bytes]) -> None:
        """Empty the workdir (keeping the folder), then unpack an archive from ``archive_workdir`` into it.

        The archive is treated as hostile: one with a member that is absolute, contains
        ``..``, is a device or a link pointing outside, or that is broken or too large,
        raises ``ValueError``. It is unpacked into a staging folder, verified, then swapped
        in whole, so a refused, broken or cancelled restore leaves the old contents. Both
        hosts also take ``max_bytes=`` and ``max_members=``, the bounds of
        ``optio_host.archive.consume_workdir_archive``.
        """
