"""``RemoteHost``'s files: SFTP requests (a dead connection replaced first), uploads to a temporary
name then renamed, streamed and checked reads, listings, and leftovers a lost connection kept."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncssh

from optio_host.host import _scripts as scripts
from optio_host.host._remote_processes import RemoteProcesses, RemoteStdin, stdin_of
from optio_host.host._ssh import describe, translate_errors
from optio_host.host._striped import SEGMENT, SLOW_LAUNCH, StripedWriter, chain_head, segments, take_head
from optio_host.host.base import ReleasingIterator
from optio_host.paths import temp_name_for
from optio_host.process import ProcessHandle
from optio_host.quoting import script_argv

__all__ = ["OPEN_TIMEOUT", "RemoteFiles"]

_T = TypeVar("_T")

#: How long a checked open (``open_regular_file``) may take to say what it opened.
OPEN_TIMEOUT = 60.0


class RemoteFiles(RemoteProcesses):
    """Files on the host: SFTP requests, atomic uploads, checked reads, listings."""

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
        """Remove temporary files and folders a lost connection kept us from removing (best
        effort: what cannot be removed now stays listed for the next try)."""
        paths = sorted(self._orphans)
        self._orphans.difference_update(paths)
        try:
            await self._sh(scripts.REMOVE_FORCIBLY, *paths)
        except Exception:
            self._orphans.update(paths)  # never the caller's error: it has its own to report

    async def remove_file(self, path: str) -> None:
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
        head, more = await take_head(chunks, SEGMENT + 1)
        data = chain_head(head, more)
        # Owner-writable while being written (the lanes open it again); the exact mode at the end.
        writable = None if mode is None else mode | 0o200
        args = [posixpath.dirname(target) or "/", temp, "" if writable is None else f"{writable:o}"]
        handle: ProcessHandle | None = None
        committed = False
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            handle = await self.launch_subprocess(
                script_argv(scripts.PUT, *args), cwd="/", merge_stderr=True, stdin=True
            )
            # A launch takes about three round trips: a slow one means a long link, where one
            # channel carries a window per round trip at most (``_striped``); PUT only creates.
            striped = more is not None and loop.time() - started >= SLOW_LAUNCH

            async def feed(stdin: RemoteStdin) -> None:
                if not striped:
                    async for chunk in data:
                        stdin.write(chunk)
                        await stdin.drain()

            code, output = await self._feed_and_wait(handle, feed)
            if code != 0:
                raise self._write_failed(target, code, output)
            if striped:
                await self._write_striped(temp, target, data)
            before_commit()
            if mode is not None and mode != writable:
                await self._sftp_call(temp, lambda sftp: sftp.chmod(temp, mode))
            await self._sftp_call(target, lambda sftp: sftp.posix_rename(temp, target))
            committed = True
        finally:
            if not committed:
                await asyncio.shield(self._discard(handle, temp))

    def _write_failed(self, target: str, code: int, output: str) -> OSError:
        return OSError(f"writing {target} on {describe(self.ssh_config)} failed (exit {code}): {output}")

    async def _write_striped(
        self,
        temp: str,
        target: str,
        chunks: AsyncIterator[bytes],
        on_written: Callable[[int, int], None] | None = None,
    ) -> None:
        """Write ``chunks`` into the existing ``temp`` over several channels (see ``_striped``);
        ``on_written(offset, length)`` as each segment reaches the file (in any order)."""

        def lane(spare: bool) -> Awaitable[ProcessHandle]:
            argv = script_argv(scripts.PUT_LANE, temp)
            return self._launch(
                argv, env=None, cwd="/", merge_stderr=True, stdin=True, control=False, spare=spare
            )

        async with StripedWriter(lane, on_written=on_written) as writer:
            try:
                with translate_errors(self.ssh_config, "sending data", keep=(BrokenPipeError,)):
                    async for segment in segments(chunks):
                        await writer.send(segment)
            except BrokenPipeError:
                pass  # a lane ended early: its exit code and output below say why
            results = await writer.finish()
        written = writer.written
        for code, output in results:
            if code != 0:
                raise self._write_failed(target, code, output)
        attrs = await self._stat(temp, follow=False)
        if attrs is None or attrs.size != written:
            raise OSError(
                f"writing {target} on {describe(self.ssh_config)}: the host has "
                f"{None if attrs is None else attrs.size} bytes of the {written} sent; not committed"
            )

    async def _feed_and_wait(
        self, handle: ProcessHandle, feed: Callable[[RemoteStdin], Awaitable[None]]
    ) -> tuple[int, str]:
        """Feed a process's stdin (then EOF) while keeping the start of its output; its exit code."""
        output = bytearray()

        async def collect() -> None:
            async for piece in handle.stdout:
                output.extend(piece[: 4096 - len(output)])

        reader = asyncio.ensure_future(collect())
        try:
            stdin = stdin_of(handle)
            with translate_errors(self.ssh_config, "sending data"):
                try:
                    await feed(stdin)
                finally:
                    stdin.close()
                await reader
        finally:
            reader.cancel()
        return await handle.wait(), output.decode(errors="replace").strip()

    async def _discard(self, handle: ProcessHandle | None, temp: str) -> None:
        # (A launch cancelled or failed midway has already ended what it started: None here.)
        if handle is not None:
            await handle.kill()
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
        return await self._stream_file(path, script_argv(scripts.GET, path))

    async def _open_checked(self, path: str, folder: str) -> tuple[int, AsyncIterator[bytes]]:
        return await self._stream_file(
            path, script_argv(scripts.GET_CHECKED, path, folder), folder=folder, timeout=OPEN_TIMEOUT
        )

    async def _stream_file(
        self, path: str, argv: list[str], *, folder: str = "", timeout: float | None = None
    ) -> tuple[int, AsyncIterator[bytes]]:
        """Run a GET script: its first line is the size or a refusal, then the file's bytes."""
        handle = await self.launch_subprocess(argv, cwd="/", merge_stderr=False)
        try:
            try:
                async with asyncio.timeout(timeout):
                    header, rest = await _first_line(handle.stdout)
            except TimeoutError:
                raise TimeoutError(
                    f"{path} on {describe(self.ssh_config)} did not open within {timeout:g}s "
                    "(a FIFO swapped in after the check?); refused"
                ) from None
            if header == "missing":
                raise FileNotFoundError(2, f"no such file on {describe(self.ssh_config)}", path)
            if header == "directory":
                raise IsADirectoryError(f"{path} is a directory")
            if header == "special":
                raise OSError(f"{path} is not a regular file (a FIFO, socket or device); refused")
            if header.startswith("outside "):
                raise PermissionError(f"{path} resolves to {header[8:]}, outside {folder}/; refused")
            if not header.isdigit():
                errors = b"".join([piece async for piece in handle.stderr or _empty()])
                raise OSError(f"cannot read {path} on the host: {errors.decode(errors='replace').strip()}")
        except BaseException:
            await handle.kill()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in rest:
                yield chunk
            code = await handle.wait()
            if code != 0:
                raise OSError(f"reading {path} on the host failed (exit {code})")

        async def release() -> None:
            if handle.returncode is None:
                await handle.kill()

        return int(header), ReleasingIterator(chunks(), release)

    async def file_sha256(self, path: str) -> str | None:
        path = self._resolve(path)
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
        # The stat after it makes a missing path FileNotFoundError, whatever the server's realpath does.
        target = self._resolve(path)
        resolved = await self._sftp_call(target, lambda sftp: sftp.realpath(target))
        if await self._stat(resolved) is None:
            raise FileNotFoundError(2, f"no such file on {describe(self.ssh_config)}", target)
        return resolved if isinstance(resolved, str) else resolved.decode()

    async def file_size(self, path: str) -> int | None:
        attrs = await self._stat(self._resolve(path))
        return None if attrs is None else int(attrs.size or 0)


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
