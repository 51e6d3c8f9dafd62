"""Where a path given on the command line points on the host: one rule for every subcommand.

The rule, as with ssh and scp: on a remote host (``--ssh``), a relative path is
relative to the login's home folder, and ``run`` without ``--cwd`` runs there too.
On this machine, a relative path is relative to the current folder, and ``run``
runs there. ``~`` and ``~/...`` name the home folder on both. (``session`` runs its
worker in a fresh workdir of its own: that is where its ``optio.log`` lives; the
files it needs go there with ``--upload``.) The resolution itself is the package's one
rule, ``optio_host.worker.resolve_from`` (``resolve_inside`` without the bound: like
scp, a path may climb out of the home).
"""

from __future__ import annotations

import os

from optio_host.host.interface import Host
from optio_host.worker import home_relative, resolve_from

__all__ = ["host_path"]


async def host_path(host: Host, path: str, *, local: bool) -> str:
    """An absolute, normalised path on ``host`` for ``path`` as typed (see the module's rule)."""
    if not path:
        raise ValueError("a path must not be empty")
    if local:
        return resolve_from(os.getcwd(), os.path.expanduser(path))
    if path.startswith("/"):
        return resolve_from("/", path)
    home = await host.resolve_host_home()
    home_rest = home_relative(path)
    return resolve_from(home, home_rest if home_rest is not None else path)
