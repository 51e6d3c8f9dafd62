"""This process's stdin and stdout as byte streams (``-`` as a file, ``run``'s stdin)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable

from optio_host._streams import CHUNK_SIZE, iter_from_thread

__all__ = ["STDIO", "stdin_chunks", "stdin_to_forward", "write_stdout"]

#: A file argument that means stdin (``put``) or stdout (``get``), as with scp and tar.
STDIO = "-"


def stdin_to_forward() -> bool:
    """Whether ``run`` should forward our stdin: yes unless it is a terminal or closed.

    A terminal is left alone (the command would wait for typing); ``/dev/null``
    or an empty pipe forward nothing but an end of file, so the command sees
    what it would see under ssh.
    """
    try:
        return not os.isatty(0) and os.fstat(0) is not None
    except OSError:
        return False  # no stdin at all (closed descriptor 0)


def stdin_chunks() -> AsyncIterator[bytes]:
    """Our stdin, read in a daemon thread: a blocked read never holds up exit or the event loop."""

    def produce(emit: Callable[[bytes], None]) -> None:
        while chunk := os.read(0, CHUNK_SIZE):
            emit(chunk)

    return iter_from_thread(produce)


def write_stdout(chunk: bytes) -> None:
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
