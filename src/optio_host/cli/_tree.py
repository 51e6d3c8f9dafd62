"""``put -r`` and ``get -r``: a folder and everything under it (names, bytes, permission bits).

Symbolic links are skipped, and named on stderr: following them could copy
files from outside the folder, and recreating them could point anywhere.
Folders get their permission bits after their contents are in place, so a
read-only folder does not block its own copy.
"""

from __future__ import annotations

import glob
import os
import posixpath
import sys

from optio_host.cli._runner import CliError
from optio_host.host.interface import Host

__all__ = ["get_tree", "put_tree", "upload_into"]

#: Folders per ``mkdir``/``chmod`` command line (well under any ARG_MAX).
_BATCH = 200


def _skipped(path: str) -> None:
    print(f"optio-host: skipped symbolic link {path}", file=sys.stderr, flush=True)


async def _run_batched(host: Host, argv: list[str], paths: list[str]) -> None:
    for start in range(0, len(paths), _BATCH):
        await host.run([*argv, "--", *paths[start : start + _BATCH]], cwd="/", check=True)


async def put_tree(host: Host, local: str, target: str) -> int:
    """Copy the local folder ``local`` to ``target`` on ``host``; returns the bytes copied."""
    root = os.path.abspath(local)
    if not os.path.isdir(root):
        raise CliError(f"{local}: no such folder here")
    folders: list[tuple[str, int]] = [(target, os.stat(root).st_mode & 0o7777)]
    files: list[tuple[str, str]] = []
    for here, dirnames, filenames in os.walk(root):
        relative = os.path.relpath(here, root)
        there = target if relative == "." else posixpath.join(target, *relative.split(os.sep))
        for name in list(dirnames):
            path = os.path.join(here, name)
            if os.path.islink(path):
                dirnames.remove(name)
                _skipped(path)
            else:
                folders.append((posixpath.join(there, name), os.stat(path).st_mode & 0o7777))
        for name in filenames:
            path = os.path.join(here, name)
            if os.path.islink(path) or not os.path.isfile(path):
                _skipped(path)
            else:
                files.append((path, posixpath.join(there, name)))
    await _run_batched(host, ["mkdir", "-p"], [path for path, _ in folders])
    size = 0
    for path, remote in files:
        await host.put_file_to_host(path, remote)  # keeps the file's permission bits
        size += os.path.getsize(path)
    for mode in sorted({mode for _, mode in folders}):
        await _run_batched(host, ["chmod", format(mode, "o")], [path for path, m in folders if m == mode])
    return size


async def get_tree(host: Host, source: str, target: str) -> int:
    """Copy the folder ``source`` on ``host`` to the local ``target``; returns the bytes copied."""
    listing = await host.run(
        ["find", source, "-mindepth", "1", "-printf", "%y %m %P\\0"], cwd="/", check=True
    )
    top_mode = int((await host.run(["stat", "-c", "%a", source], cwd="/", check=True)).stdout.strip(), 8)
    os.makedirs(target, exist_ok=True)
    folders: list[tuple[str, int]] = [(target, top_mode)]
    size = 0
    for entry in sorted(listing.stdout.split("\0")):
        if not entry:
            continue
        kind, mode_text, relative = entry.split(" ", 2)
        parts = relative.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise CliError(f"refusing a name from the host that leaves the folder: {relative!r}")
        local = os.path.join(target, *parts)
        remote = posixpath.join(source, relative)
        mode = int(mode_text, 8)
        if kind == "d":
            os.makedirs(local, exist_ok=True)
            folders.append((local, mode))
        elif kind == "f":
            os.makedirs(os.path.dirname(local), exist_ok=True)
            await host.fetch_file_from_host(remote, local)
            os.chmod(local, mode)
            size += os.path.getsize(local)
        else:
            _skipped(remote)
    for path, mode in reversed(folders):
        os.chmod(path, mode)
    return size


async def upload_into(host: Host, items: tuple[str, ...] | list[str], folder: str) -> None:
    """``session --upload``: files, folders (with everything in them) and globs, all the same way.

    A glob (``'*.sh'``, quoted so the shell leaves it to us) is expanded here;
    each match, and each named path, lands in ``folder`` under its own name.
    Nothing to upload for an item is an error (exit code 1), whatever the item.
    """
    for item in items:
        matches = [item] if os.path.lexists(item) else sorted(glob.glob(item))
        if not matches:
            what = "no file or folder matches" if glob.has_magic(item) else "no such file or folder"
            raise CliError(f"--upload {item}: {what}")
        for path in matches:
            target = posixpath.join(folder, os.path.basename(os.path.abspath(path)))
            if os.path.isdir(path):
                await put_tree(host, path, target)
            else:
                await host.put_file_to_host(path, target)
