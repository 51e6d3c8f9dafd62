"""Where a path given on the command line points on the host."""

from __future__ import annotations

import os
import posixpath

from optio_host.host.interface import Host

__all__ = ["host_path"]


async def host_path(host: Host, path: str, *, local: bool) -> str:
    """An absolute path on ``host``.

    On this machine a relative path is relative to the current folder. On a
    remote host it is relative to the login's home folder, as with ``scp``;
    ``~`` and ``~/...`` name that home folder on both.
    """
    if not path:
        raise ValueError("a path must not be empty")
    if local:
        return os.path.abspath(os.path.expanduser(path))
    if path.startswith("/"):
        return path
    home = await host.resolve_host_home()
    if path == "~":
        return home
    if path.startswith("~/"):
        path = path[2:]
    return posixpath.join(home, path)
