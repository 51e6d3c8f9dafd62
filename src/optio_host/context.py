"""``HookContext``: the optio ``ProcessContext`` a task hook receives, plus host operations.

Anything ``HookContext`` does not define is read from the wrapped context, so
``hook_ctx.report_progress(...)``, ``hook_ctx.process_id`` and
``hook_ctx.params`` work as on the ``ProcessContext`` itself.

Paths given to ``copy_file``, ``read_from_host``, ``read_text_from_host`` and
``download_file`` take three forms: absolute (``/...``, used as given), home
(``~`` or ``~/...``, relative to the host user's home), or relative to the
workdir, where they must stay inside it (a ``..`` segment is refused).
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncGenerator, Callable
from typing import Any, Literal, Protocol, overload, runtime_checkable

from bson import ObjectId

from optio_host._streams import CHUNK_SIZE, sha256_of_chunks
from optio_host.download import create_download_task
from optio_host.errors import HostCommandError
from optio_host.host.interface import FileSource, Host
from optio_host.process import RunResult
from optio_host.worker import home_relative, path_inside, resolve_from

__all__ = ["HookContext", "HookContextProtocol", "HostCommandError", "RunResult"]

#: What ``copy_file`` accepts: ``put_file_to_host``'s sources, or a blob id for ``ctx.load_blob``.
CopySource = FileSource | ObjectId


@runtime_checkable
class HookContextProtocol(Protocol):
    """What a task hook may rely on; ``HookContext`` implements it."""

    @property
    def process_id(self) -> str: ...

    @property
    def params(self) -> dict[str, Any]: ...

    @property
    def metadata(self) -> dict[str, Any]: ...

    def report_progress(self, percent: float | None, message: str | None = None) -> None: ...

    def should_continue(self) -> bool: ...

    async def run_on_host(
        self,
        command: str,
        *,
        check: bool = True,
        capture_stderr: bool = False,
        cwd: str | None = None,
    ) -> str | RunResult: ...

    async def copy_file(
        self, source: CopySource, target: str, *, skip_if_unchanged: bool = False
    ) -> None: ...

    async def read_from_host(self, path: str, *, silent: bool = False) -> bytes: ...

    async def read_text_from_host(self, path: str, *, silent: bool = False) -> str: ...

    async def download_file(
        self,
        url: str,
        target: str,
        *,
        description: str | None = None,
        cleanup_on_fail: bool = True,
        expected_sha256: str | None = None,
    ) -> None: ...


class HookContext:
    """Wraps an optio ``ProcessContext`` (``ctx``) for one ``host``; see the module docstring."""

    def __init__(self, ctx: Any, host: Host) -> None:
        self._ctx = ctx
        self._host = host

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not found on the wrapper. Reading ``_ctx`` through __dict__
        # keeps a half-built instance (copy, pickle) from recursing.
        try:
            ctx = self.__dict__["_ctx"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(ctx, name)

    def __repr__(self) -> str:
        return f"HookContext({self._ctx!r}, {self._host!r})"

    # ---------------------------------------------------------------- the wrapped context

    @property
    def ctx(self) -> Any:
        """The wrapped optio ``ProcessContext``."""
        return self._ctx

    @property
    def host(self) -> Host:
        """The host this context operates on."""
        return self._host

    @property
    def process_id(self) -> str:
        return self._ctx.process_id  # type: ignore[no-any-return]

    @property
    def params(self) -> dict[str, Any]:
        return self._ctx.params  # type: ignore[no-any-return]

    @property
    def metadata(self) -> dict[str, Any]:
        return self._ctx.metadata  # type: ignore[no-any-return]

    def report_progress(self, percent: float | None, message: str | None = None, **kwargs: Any) -> None:
        """Forwarded to the wrapped context (extra keywords, such as ``level``, too)."""
        self._ctx.report_progress(percent, message, **kwargs)

    def should_continue(self) -> bool:
        return bool(self._ctx.should_continue())

    # ---------------------------------------------------------------- commands

    @overload
    async def run_on_host(
        self,
        command: str,
        *,
        check: Literal[True] = True,
        capture_stderr: bool = False,
        cwd: str | None = None,
    ) -> str: ...

    @overload
    async def run_on_host(
        self,
        command: str,
        *,
        check: Literal[False],
        capture_stderr: bool = False,
        cwd: str | None = None,
    ) -> RunResult: ...

    @overload
    async def run_on_host(
        self,
        command: str,
        *,
        check: bool = True,
        capture_stderr: bool = False,
        cwd: str | None = None,
    ) -> str | RunResult: ...

    async def run_on_host(
        self,
        command: str,
        *,
        check: bool = True,
        capture_stderr: bool = False,
        cwd: str | None = None,
    ) -> str | RunResult:
        """Run a shell command on the host (in ``cwd``, default the workdir).

        ``check=True``: a non-zero exit raises ``HostCommandError``; otherwise
        stdout is returned (stdout followed by stderr with ``capture_stderr``).
        ``check=False``: the ``RunResult``, whatever the exit code.
        """
        result = await self._host.run_command(command, cwd=cwd)
        if not check:
            return result
        if result.exit_code != 0:
            raise HostCommandError(command, result.exit_code, result.stdout, result.stderr)
        return result.stdout + result.stderr if capture_stderr else result.stdout

    # ---------------------------------------------------------------- files

    async def copy_file(self, source: CopySource, target: str, *, skip_if_unchanged: bool = False) -> None:
        """Put ``source`` at ``target`` on the host, reporting progress.

        ``source`` is a local path, ``bytes``, an async iterator of bytes, or a
        ``bson.ObjectId`` naming a blob read through ``ctx.load_blob``. With
        ``skip_if_unchanged`` a target that already has the same SHA-256 is
        left alone (a blob is hashed first, streaming, to know its digest).
        """
        path = await self._resolve(target)
        name = posixpath.basename(path)
        skipped = False
        copying = False

        def start_copying() -> None:
            nonlocal copying
            if not copying:
                copying = True
                self._ctx.report_progress(None, f"Copying {name}...")

        def on_progress(percent: float | None, message: str | None) -> None:
            nonlocal skipped
            if message == "already up to date":
                skipped = True
                self._ctx.report_progress(None, f"Already up to date: {name}")
            elif percent is not None:
                start_copying()  # the first byte written: the verify did not skip
                self._ctx.report_progress(percent, None)

        if skip_if_unchanged:
            self._ctx.report_progress(None, f"Verifying {name}...")
        else:
            start_copying()
        if isinstance(source, ObjectId):
            expected = await self._blob_sha256(source) if skip_if_unchanged else None
            chunks = self._blob_chunks(source, on_first=start_copying)
            try:
                await self._host.put_file_to_host(
                    chunks,
                    path,
                    expected_sha256=expected,
                    skip_if_unchanged=skip_if_unchanged,
                    progress_cb=on_progress,
                )
            finally:
                await chunks.aclose()
        else:
            await self._host.put_file_to_host(
                source, path, skip_if_unchanged=skip_if_unchanged, progress_cb=on_progress
            )
        if not skipped:
            start_copying()  # an empty file reports no percent

    async def read_from_host(self, path: str, *, silent: bool = False) -> bytes:
        """The whole file at ``path`` on the host (message ``"Reading <name>..."`` unless ``silent``)."""
        absolute = await self._resolve(path)
        if not silent:
            self._ctx.report_progress(None, f"Reading {posixpath.basename(absolute)}...")
        return await self._host.fetch_bytes_from_host(absolute)

    async def read_text_from_host(self, path: str, *, silent: bool = False) -> str:
        """``read_from_host`` decoded as UTF-8."""
        data = await self.read_from_host(path, silent=silent)
        return data.decode("utf-8")

    async def download_file(
        self,
        url: str,
        target: str,
        *,
        description: str | None = None,
        cleanup_on_fail: bool = True,
        expected_sha256: str | None = None,
    ) -> None:
        """Download ``url`` to ``target`` on the host, as a child task of this process.

        The child is ``create_download_task`` with id
        ``"<process_id>.download-<n>"`` (``n`` from the context's child counter)
        and name ``"download <basename>"``; its failure propagates.
        """
        path = await self._resolve(target)
        number = self._ctx._child_counter.get("next", 0)
        task = create_download_task(
            f"{self._ctx.process_id}.download-{number}",
            f"download {posixpath.basename(path)}",
            url=url,
            target=path,
            host=self._host,
            description=description,
            cleanup_on_fail=cleanup_on_fail,
            expected_sha256=expected_sha256,
        )
        await self._ctx.run_child_task(task)

    # ---------------------------------------------------------------- helpers

    async def _resolve(self, path: str) -> str:
        """The absolute host path for one of the three path forms; ``ValueError`` if refused."""
        if not isinstance(path, str) or not path:
            raise ValueError(f"path must not be empty (got {path!r})")
        if "\0" in path:
            raise ValueError(f"host path contains a NUL character: {path!r}")
        if path.startswith("/"):
            return path
        home_rest = home_relative(path)
        if home_rest is not None:
            return resolve_from(await self._host.resolve_host_home(), home_rest)
        if path.startswith("~"):
            # Another user's home (``~bob/x``) is not supported; a folder named "~bob" in the
            # workdir is almost never what was meant.
            raise ValueError(f"host path {path!r}: only ~ and ~/... are supported, not ~user")
        if ".." in path.split("/"):
            raise ValueError(f"workdir-relative path may not contain '..': {path!r}")
        workdir = posixpath.normpath(self._host.workdir)
        absolute = resolve_from(workdir, path)
        if absolute == workdir or not path_inside(absolute, workdir):
            raise ValueError(f"workdir-relative path escapes workdir: {path!r} (workdir: {workdir})")
        return absolute

    async def _blob_sha256(self, blob_id: ObjectId) -> str:
        return await sha256_of_chunks(self._blob_chunks(blob_id))

    async def _blob_chunks(
        self, blob_id: ObjectId, *, on_first: Callable[[], None] | None = None
    ) -> AsyncGenerator[bytes, None]:
        async with self._ctx.load_blob(blob_id) as reader:
            while True:
                chunk = await reader.read(CHUNK_SIZE)
                if not chunk:
                    return
                if on_first is not None:
                    on_first()
                    on_first = None
                yield bytes(chunk)
