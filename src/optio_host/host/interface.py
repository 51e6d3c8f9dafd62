"""The ``Host`` interface: what every host offers, whatever it runs on.

``LocalHost`` and ``RemoteHost`` implement it (through ``BaseHost``); task code
should be written against this protocol.
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
    """Where a task's work runs: this machine (``LocalHost``) or one reached over SSH.

    ``taskdir`` is the task's own folder on the host and ``workdir`` is
    ``taskdir + "/workdir"``. Relative paths given to host methods are
    relative to ``workdir``.
    """

    @property
    def taskdir(self) -> str: ...

    @property
    def workdir(self) -> str: ...

    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def setup_workdir(self) -> None: ...
    async def write_text(self, relpath: str, content: str) -> None: ...
    async def establish_tunnel(self, remote_port: int, *, bind_addr: str = "127.0.0.1") -> int: ...
    def tail_file(self, absolute_path: str) -> AsyncIterator[str]: ...
    def tail_bytes(self, absolute_path: str, *, offset: int = 0) -> AsyncIterator[bytes]: ...
    async def cleanup_taskdir(self, aggressive: bool = False) -> None: ...

    async def launch_subprocess(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        merge_stderr: bool = True,
        stdin: bool = False,
        env_remove: Sequence[str] | None = None,
    ) -> ProcessHandle: ...

    async def terminate_subprocess(self, handle: ProcessHandle, *, aggressive: bool = False) -> None: ...

    async def launch_detached(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
    ) -> DetachedProcess: ...
    async def remove_file(self, path: str) -> None: ...

    async def put_file_to_host(
        self,
        source: FileSource,
        absolute_target: str,
        *,
        expected_sha256: str | None = None,
        skip_if_unchanged: bool = False,
        progress_cb: ProgressCallback | None = None,
    ) -> bool | None:
        """``True`` if written, ``False`` if skipped as up to date (``None``: a 0.1.2-style host)."""
        ...

    async def fetch_bytes_from_host(
        self, absolute_path: str, *, progress_cb: ProgressCallback | None = None
    ) -> bytes: ...

    async def fetch_file_from_host(
        self,
        absolute_path: str,
        local_path: str | os.PathLike[str],
        *,
        progress_cb: ProgressCallback | None = None,
    ) -> None: ...

    async def run_command(
        self,
        command: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult: ...

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
    ) -> RunResult: ...

    async def resolve_host_home(self) -> str: ...
    async def glob(self, pattern: str) -> list[str]: ...
    async def realpath(self, path: str) -> str: ...
    async def file_size(self, path: str) -> int | None: ...
    async def file_sha256(self, path: str) -> str | None: ...
    def archive_workdir(self, exclude: Sequence[str] | None = None) -> AsyncIterator[bytes]: ...
    async def restore_workdir(self, stream: AsyncIterator[bytes]) -> None: ...
