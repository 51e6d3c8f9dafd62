"""Low-latency "this file changed" notifications for the local tail.

On Linux one inotify instance per event loop watches the parent folders of
every tailed file (a folder watch reports creation, writes and renames of its
children, so files that do not exist yet are covered too). Elsewhere, or when
inotify cannot be used, callers fall back to short polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import struct
import sys
import weakref
from collections import defaultdict

__all__ = ["POLL_INTERVAL", "FileWatch", "watch_file"]

#: Polling period without inotify (and the safety re-check period with it).
POLL_INTERVAL = 0.02

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
)
_EVENT = struct.Struct("iIII")


class FileWatch:
    """Wakes its owner when the watched file (or its folder) may have changed."""

    def __init__(self, notifier: _Notifier | None, folder: str, name: str) -> None:
        #: True when inotify is usable but the folder does not exist yet: watch again later.
        self.awaiting_folder = False
        self._notifier = notifier
        self._folder = folder
        self._name = name
        self._event = asyncio.Event()

    @property
    def precise(self) -> bool:
        """True when backed by inotify; False when the owner must poll."""
        return self._notifier is not None

    def _wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Return when a change is reported, or after ``timeout`` seconds at most."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
        self._event.clear()

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.remove(self)
            self._notifier = None


class _Notifier:
    """One inotify instance shared by every watch of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, libc: ctypes.CDLL, fd: int) -> None:
        self._loop = loop
        self._libc = libc
        self._fd = fd
        self._folders: dict[int, str] = {}
        self._descriptors: dict[str, int] = {}
        self._watches: dict[str, set[FileWatch]] = defaultdict(set)
        loop.add_reader(fd, self._on_readable)

    def add(self, watch: FileWatch) -> bool:
        folder = watch._folder
        if folder not in self._descriptors:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), _MASK)
            if wd < 0:
                return False
            self._descriptors[folder] = wd
            self._folders[wd] = folder
        self._watches[folder].add(watch)
        return True

    def remove(self, watch: FileWatch) -> None:
        folder = watch._folder
        watches = self._watches.get(folder)
        if not watches:
            return
        watches.discard(watch)
        if not watches:
            del self._watches[folder]
            wd = self._descriptors.pop(folder, None)
            if wd is not None:
                self._folders.pop(wd, None)
                self._libc.inotify_rm_watch(self._fd, wd)
        if not self._watches:
            self.close()

    def close(self) -> None:
        """Release the inotify instance (they are a scarce per-user resource)."""
        if _notifiers.get(self._loop) is self:
            del _notifiers[self._loop]
        if self._fd >= 0:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        position = 0
        while position + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, position)
            raw_name = data[position + _EVENT.size : position + _EVENT.size + length]
            position += _EVENT.size + length
            name = os.fsdecode(raw_name.rstrip(b"\0"))
            if mask & _IN_Q_OVERFLOW:
                for watches in self._watches.values():
                    for watch in watches:
                        watch._wake()
                continue
            folder = self._folders.get(wd)
            if folder is None:
                continue
            if mask & _IN_IGNORED:
                # The folder went away; its watches fall back to re-checking on timeout.
                self._folders.pop(wd, None)
                self._descriptors.pop(folder, None)
            for watch in self._watches.get(folder, ()):
                if not name or name == watch._name:
                    watch._wake()


# A notifier lives while it has watches; the last watch to close releases it.
_notifiers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Notifier] = weakref.WeakKeyDictionary()
_libc: ctypes.CDLL | None = None
_inotify_usable = sys.platform.startswith("linux")


def _notifier_for(loop: asyncio.AbstractEventLoop) -> _Notifier | None:
    global _libc, _inotify_usable
    existing = _notifiers.get(loop)
    if existing is not None or not _inotify_usable:
        return existing
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    except (OSError, AttributeError):
        _inotify_usable = False
        return None
    if fd < 0:
        return None  # e.g. the per-user instance limit: poll this time, try again later
    notifier = _Notifier(loop, _libc, fd)
    _notifiers[loop] = notifier
    return notifier


def watch_file(path: str) -> FileWatch:
    """Start watching ``path``; its folder must exist for inotify to be used."""
    folder, name = os.path.split(os.path.abspath(path))
    notifier = _notifier_for(asyncio.get_running_loop())
    watch = FileWatch(notifier, folder, name)
    if notifier is not None and not notifier.add(watch):
        watch._notifier = None
        watch.awaiting_folder = not os.path.isdir(folder)
        if not notifier._watches:
            notifier.close()
    return watch
