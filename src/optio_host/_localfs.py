"""This machine's file system, for LocalHost and downloads to here: atomic writes, forcible removal."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable

from optio_host.paths import temp_name_for

__all__ = ["rmtree_forcibly", "write_atomic"]


async def write_atomic(
    target: str,
    chunks: AsyncIterator[bytes],
    *,
    mode: int | None = None,
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Write ``chunks`` to a temporary file beside ``target``, then rename it into place.

    ``before_commit`` may raise to abandon the write (for example on a
    checksum mismatch). On any failure or cancellation the temporary file is
    removed and ``target`` is left as it was.
    """
    folder = os.path.dirname(target)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if os.path.isdir(target):
        raise IsADirectoryError(f"cannot write {target}: it is a directory")
    temp = temp_name_for(target)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    committed = False
    try:
        async for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        if before_commit is not None:
            before_commit()
        if mode is not None:
            os.fchmod(fd, mode)
        os.close(fd)
        fd = -1
        os.rename(temp, target)
        committed = True
    finally:
        if fd >= 0:
            os.close(fd)
        if not committed:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass


def rmtree_forcibly(path: str) -> None:
    """``rm -rf``: make folders without write or search permission ours again first (an archive
    or a worker may leave them so), then remove; ignore what still fails."""
    if not os.path.lexists(path):
        return
    with contextlib.suppress(OSError):
        if not os.path.islink(path):
            os.chmod(path, 0o700)
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                full = os.path.join(root, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)
