"""Where a path given on the command line points on the host: one rule for every subcommand.

The rule, as with ssh and scp: on a remote host (``--ssh``), a relative path is
relative to the login's home folder, and ``run`` without ``--cwd`` runs there too.
On this machine, a relative path is relative to the current folder, and ``run``
runs there. ``~`` and ``~/...`` name the home folder on both. (``session`` runs its
worker in a fresh workdir of its own: that is where its ``optio.log`` lives; the
files it needs go there with ``--upload``.)
"""

from __future__ import annotations

import os
import posixpath

from optio_host.host.interface import Host

__all__ = ["host_path"]


async def host_path(host: Host, path: str, *, local: bool) -> str:
    """An absolute, normalised path on ``host`` for ``path`` as typed (see the module's rule)."""
    if not path:
        raise ValueError("a path must not be empty")
    if local:
        return os.path.abspath(os.path.expanduser(path))
    if path.startswith("/"):
        return posixpath.normpath(path)
    home = await host.resolve_host_home()
    if path == "~":
        return home
    if path.startswith("~/"):
        path = path[2:]
    return posixpath.normpath(posixpath.join(home, path))
