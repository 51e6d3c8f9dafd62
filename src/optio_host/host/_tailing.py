"""The one rule both hosts apply to a file they follow: a regular file, not reached through a link.

A worker may replace the file a tail follows (``optio.log``) with a symlink to
any file or device (``/dev/zero``), a FIFO or a folder. Following a link would
leak an outside file's lines (and its ``DONE``); a FIFO would block; a device
never ends. Both hosts refuse with the same ``OSError`` text.
"""

from __future__ import annotations

import stat
from typing import Final

__all__ = ["UNTAILABLE_KINDS", "kind_of_mode", "untailable"]

#: What stands at the path, by the code the remote tail snippet reports (``optio-untailable:<code>``).
UNTAILABLE_KINDS: Final = {
    "link": "a symbolic link",
    "fifo": "a FIFO (named pipe)",
    "directory": "a directory",
    "char": "a character device",
    "block": "a block device",
    "socket": "a socket",
    "other": "a special file",
}


def kind_of_mode(mode: int) -> str | None:
    """The ``UNTAILABLE_KINDS`` code for an ``lstat`` mode, or ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, code in (
        (stat.S_ISLNK, "link"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return code
    return "other"


def untailable(path: str, code: str) -> OSError:
    """The error for a followed path that holds something other than a regular file."""
    what = UNTAILABLE_KINDS.get(code, UNTAILABLE_KINDS["other"])
    return OSError(
        f"refusing to follow {path}: it is {what}; only a regular file is followed "
        "(did the worker replace it?)"
    )
