"""Workdir archives: a gzip'd tar of a folder, streamed in chunks both ways.

Exclude patterns are shell globs; a pattern excludes a path when it matches
any one segment of the path relative to the root, or the whole relative path.
An excluded folder is not descended into.

Unpacking is defensive: members that are absolute, contain ``..``, are device
files, or are links leading outside the destination make the whole archive
refused with ``ValueError``. Unpacking happens in a staging folder beside the
destination, so a refused archive leaves the destination as it was.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
from collections.abc import AsyncIterator, Callable, Sequence
from fnmatch import fnmatchcase
from typing import IO, Any

from optio_host._streams import CHUNK_SIZE, BlockingReader, iter_from_thread, run_in_thread

__all__ = [
    "DEFAULT_WORKDIR_EXCLUDES",
    "consume_workdir_archive",
    "find_prune_expression",
    "is_excluded",
    "resolve_excludes",
    "sanitize_archive",
    "yield_workdir_archive",
]

DEFAULT_WORKDIR_EXCLUDES = [".git", "node_modules", "__pycache__", ".venv", "*.pyc", ".DS_Store"]

#: gzip level 1: archives of multi-GiB workdirs are limited by compression speed.
_GZIP_LEVEL = 1


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


def _write_tree(root: str, patterns: Sequence[str], out: IO[bytes]) -> None:
    with (
        gzip.GzipFile(fileobj=out, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        _add_children(tar, root, "", patterns)


def _add_children(tar: tarfile.TarFile, root: str, rel: str, patterns: Sequence[str]) -> None:
    folder = os.path.join(root, rel) if rel else root
    with os.scandir(folder) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        child = f"{rel}/{name}" if rel else name
        if is_excluded(child, patterns):
            continue
        path = os.path.join(root, child)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue  # removed while we were archiving
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            continue  # sockets, fifos and devices have no place in a workdir archive
        member = tar.gettarinfo(path, arcname=child)
        if member.isreg():
            with open(path, "rb") as handle:
                tar.addfile(member, handle)
        else:
            tar.addfile(member)
        if member.isdir():
            _add_children(tar, root, child, patterns)


class _EmitWriter:
    """A write-only file object that hands full chunks to ``emit``."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self._emit = emit
        self._buffer = bytearray()

    def write(self, data: Any) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK_SIZE:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            chunk = bytes(self._buffer)
            self._buffer.clear()
            self._emit(chunk)


async def yield_workdir_archive(
    root: str | os.PathLike[str],
    exclude: Sequence[str] | None = None,
) -> AsyncIterator[bytes]:
    """Stream a gzip'd tar of the contents of ``root`` (paths relative to it)."""
    folder = os.fspath(root)
    patterns = resolve_excludes(exclude)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot archive {folder}: no such folder")

    def produce(emit: Callable[[bytes], None]) -> None:
        writer = _EmitWriter(emit)
        _write_tree(folder, patterns, writer)  # type: ignore[arg-type]
        writer.flush()

    async for chunk in iter_from_thread(produce):
        yield chunk


# --------------------------------------------------------------------------- reading


class _MemberGuard:
    """Refuses archive members that could write outside the destination."""

    def __init__(self) -> None:
        self._symlinks: set[str] = set()
        self._files: set[str] = set()

    def check(self, member: tarfile.TarInfo) -> str | None:
        """The member's normalised relative name, ``None`` for the root; ``ValueError`` if unsafe."""
        raw = member.name
        if raw.startswith("/") or raw.startswith("\\"):
            raise ValueError(f"archive member {raw!r} has an absolute path")
        parts = [part for part in raw.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"archive member {raw!r} contains '..'")
        if not parts:
            return None
        name = "/".join(parts)
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in self._symlinks:
                raise ValueError(f"archive member {raw!r} goes through a symbolic link")
        if name in self._symlinks:
            raise ValueError(f"archive member {raw!r} replaces a symbolic link")
        if member.ischr() or member.isblk():
            raise ValueError(f"archive member {raw!r} is a device file")
        if member.isfifo():
            raise ValueError(f"archive member {raw!r} is a FIFO")
        if member.issym():
            self._check_link_target(raw, posixpath.dirname(name), member.linkname)
            self._symlinks.add(name)
        elif member.islnk():
            target = self._check_link_target(raw, "", member.linkname)
            if target not in self._files:
                raise ValueError(
                    f"archive member {raw!r} is a hard link to {member.linkname!r}, "
                    "which is not an earlier regular file of the archive"
                )
        elif member.isreg():
            self._files.add(name)
        elif not member.isdir():
            raise ValueError(f"archive member {raw!r} has an unsupported type")
        return name

    @staticmethod
    def _check_link_target(raw: str, base: str, target: str) -> str:
        if not target or target.startswith("/"):
            raise ValueError(f"archive member {raw!r} links to an absolute path {target!r}")
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise ValueError(f"archive member {raw!r} links outside the destination: {target!r}")
        return resolved


def _clean_member(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    member.name = name
    # No set-id or sticky bits, and the owner can always read and write what it restored.
    if member.isdir():
        member.mode = (member.mode & 0o777) | 0o700
    elif not member.issym():
        member.mode = (member.mode & 0o777) | 0o600
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def _extract(reader: BlockingReader, staging: str) -> None:
    guard = _MemberGuard()
    extra: dict[str, Any] = {}
    if hasattr(tarfile, "data_filter"):
        extra["filter"] = "data"  # defence in depth: checks the real file system too
    with tarfile.open(fileobj=reader, mode="r|*", bufsize=CHUNK_SIZE) as tar:
        for member in tar:
            name = guard.check(member)
            if name is None:
                continue
            tar.extract(_clean_member(member, name), staging, set_attrs=True, **extra)


def _swap_in(staging: str, dest: str) -> None:
    for name in os.listdir(dest):
        path = os.path.join(dest, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for name in os.listdir(staging):
        os.rename(os.path.join(staging, name), os.path.join(dest, name))
    os.rmdir(staging)


def _staging_path(dest: str) -> str:
    parent, base = os.path.split(dest.rstrip("/"))
    return os.path.join(parent, f".{base}.restore-{secrets.token_hex(8)}")


async def consume_workdir_archive(
    stream: AsyncIterator[bytes],
    dest: str | os.PathLike[str],
) -> None:
    """Replace the contents of ``dest`` with the archive in ``stream`` (``dest`` itself stays).

    The archive is unpacked into a staging folder next to ``dest`` first; a
    refused or broken archive raises and leaves ``dest`` untouched.
    """
    target = os.path.abspath(os.fspath(dest))
    os.makedirs(target, mode=0o700, exist_ok=True)
    staging = _staging_path(target)
    os.mkdir(staging, 0o700)
    reader = BlockingReader(aiter(stream), asyncio.get_running_loop())
    try:
        await run_in_thread(lambda: _extract(reader, staging), on_cancel=reader.abort)
        await asyncio.to_thread(_swap_in, staging, target)
    except tarfile.FilterError as exc:
        raise ValueError(f"refused archive: {exc}") from exc
    except tarfile.TarError as exc:
        raise ValueError(f"not a readable tar archive: {exc}") from exc
    finally:
        if os.path.lexists(staging):
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, staging, True))


async def sanitize_archive(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-emit a (possibly gzip'd) tar stream as a checked, uncompressed tar stream.

    Members are checked exactly as ``consume_workdir_archive`` checks them; an
    unsafe member raises ``ValueError`` before any of its bytes are emitted.
    Used to unpack on a remote host with its own ``tar`` safely.
    """
    reader = BlockingReader(aiter(stream), asyncio.get_running_loop())

    def produce(emit: Callable[[bytes], None]) -> None:
        guard = _MemberGuard()
        writer = _EmitWriter(emit)
        with (
            tarfile.open(fileobj=reader, mode="r|*", bufsize=CHUNK_SIZE) as source,
            tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as out,  # type: ignore[call-overload]
        ):
            for member in source:
                name = guard.check(member)
                if name is None:
                    continue
                data = source.extractfile(member) if member.isreg() else None
                out.addfile(_clean_member(member, name), data)
        writer.flush()

    try:
        async for chunk in iter_from_thread(produce):
            yield chunk
    except tarfile.TarError as exc:
        raise ValueError(f"not a readable tar archive: {exc}") from exc
    finally:
        reader.abort()
