"""Where a task's directory lives on its host."""

from __future__ import annotations

import os
import re

from optio_host.types import SSHConfig

# Defined in worker.py, which must stand alone on hosts without optio-host: re-exported here.
from optio_host.worker import temp_name_for

__all__ = ["task_dir", "temp_name_for"]

_PROCESS_ID = re.compile(r"[A-Za-z0-9._-]+")


def task_dir(*, ssh: SSHConfig | None, process_id: str, consumer_name: str) -> str:
    """The per-task directory for ``process_id`` of the task package ``consumer_name``.

    Local: ``$<PREFIX>_TASK_ROOT/<id>``, else ``$XDG_DATA_HOME/<consumer>/<id>``,
    else ``$HOME/.local/share/<consumer>/<id>``. Remote:
    ``$<PREFIX>_REMOTE_TASK_ROOT/<id>``, else ``/tmp/<consumer>/<id>``.
    ``PREFIX`` is ``consumer_name`` upper-cased with ``-`` turned into ``_``.

    ``/tmp`` is shared: ``RemoteHost.setup_workdir()`` creates the folder with mode 0700
    and refuses (``UnsafeTaskdir``) one that is a link or that another user made first.
    """
    if not isinstance(process_id, str) or not _PROCESS_ID.fullmatch(process_id):
        raise ValueError(
            f"process_id {process_id!r} must match [A-Za-z0-9._-]+ (it becomes a directory name on the host)"
        )
    if process_id in (".", ".."):
        raise ValueError(f"process_id {process_id!r} is not a usable directory name")
    prefix = consumer_name.upper().replace("-", "_")
    if ssh is None:
        root = os.environ.get(f"{prefix}_TASK_ROOT")
        if root:
            return os.path.join(root, process_id)
        xdg = os.environ.get("XDG_DATA_HOME")
        if xdg:
            return os.path.join(xdg, consumer_name, process_id)
        home = os.environ.get("HOME") or os.path.expanduser("~")
        return os.path.join(home, ".local", "share", consumer_name, process_id)
    root = os.environ.get(f"{prefix}_REMOTE_TASK_ROOT")
    if root:
        return f"{root.rstrip('/')}/{process_id}"
    return f"/tmp/{consumer_name}/{process_id}"
