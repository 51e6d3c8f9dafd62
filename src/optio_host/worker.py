"""Helpers for workers that speak the log protocol; the protocol's words are defined here.

This file uses only the standard library and works on its own: copy it to a
host that has no optio-host and import it, or run it from a shell worker::

    python3 worker.py status 50 "half way"      # STATUS: 50% half way
    python3 worker.py status "no percent"
    python3 worker.py deliverable result.csv [--name tables/result.csv]
    python3 worker.py done "3 files processed"  # or: error "what went wrong"

A worker is the long-running program a session starts on the host. It talks
back by appending lines to ``<workdir>/optio.log``; the session driver
follows that file. The functions here each append exactly one line::

    from optio_host import worker

    worker.status("Loading data", percent=10)
    worker.deliverable("out/report.txt")   # copied into deliverables/
    worker.done("3 files processed")

The raw format, for workers in any language (one line each, UTF-8)::

    STATUS: <text>            progress message, no percent
    STATUS: <N>% <text>       N is 0-100 (1-3 digits)
    DELIVERABLE: <path>       a file under <workdir>/deliverables/ (relative to the workdir, or absolute)
    DONE                      success; DONE: <summary> adds a summary
    ERROR                     failure; ERROR: <message> adds a reason

From a shell script (``printf '%s\\n'`` rather than ``echo``, which may
mangle backslashes in a message)::

    log=${OPTIO_LOG:-optio.log}
    printf '%s\\n' "STATUS: 50% half way" >> "$log"
    mkdir -p deliverables && cp result.csv deliverables/
    printf '%s\\n' "DELIVERABLE: deliverables/result.csv" >> "$log"
    printf '%s\\n' "DONE: all good" >> "$log"

Rules these helpers follow (and a worker in another language should too):

- Write each line with one ``write`` on a file opened for appending
  (``O_APPEND``, ``>>`` in a shell): concurrent writers then never interleave
  inside a line.
- A message must not contain a line break, or its tail would be read as a
  line of its own (and could forge a ``DONE``). The helpers replace every
  line break (``\\n``, ``\\r`` and the other characters ``str.splitlines``
  splits on) with a space.
- A message without a percent that itself starts with ``<digits>%`` is read
  as carrying that percent.
- Copy a deliverable into place completely before writing its line.

The log is found from ``$OPTIO_LOG`` (the ``optio-host session`` command sets
it), else ``./optio.log``, else the nearest ``optio.log`` in a parent folder.

The protocol's keywords and file names live here, not in the parser, because
this file must stand alone; ``optio_host.protocol.parser`` imports them from it.
"""

from __future__ import annotations

import argparse
import math
import os
import posixpath
import re
import secrets
import shutil
import sys
from collections.abc import Sequence

__all__ = [
    "DELIVERABLE",
    "DELIVERABLES_DIR",
    "DONE",
    "ERROR",
    "KEYWORDS",
    "LOG_ENV",
    "LOG_NAME",
    "STATUS",
    "deliverable",
    "done",
    "error",
    "find_log",
    "home_relative",
    "main",
    "path_inside",
    "resolve_from",
    "resolve_inside",
    "status",
    "temp_name_for",
]

#: The log a worker appends to, in its workdir.
LOG_NAME = "optio.log"
#: The workdir folder deliverables must be in.
DELIVERABLES_DIR = "deliverables"
#: Environment variable naming the log file; set for workers started by ``optio-host session``.
LOG_ENV = "OPTIO_LOG"
#: The protocol's keywords: each starts a line and is followed by ``:`` and its text (optional
#: for DONE and ERROR).
STATUS = "STATUS"
DELIVERABLE = "DELIVERABLE"
DONE = "DONE"
ERROR = "ERROR"
KEYWORDS = (STATUS, DELIVERABLE, DONE, ERROR)

# Everything str.splitlines() breaks on, so no reader can see a second line.
_LINE_BREAKS = re.compile("\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def temp_name_for(target: str) -> str:
    """An unpredictable hidden name beside ``target`` (same folder, so a rename is atomic).

    One scheme for every host, the download task and workers, so a leftover is recognisable
    anywhere. The target's name is cut to 100 bytes so the result fits NAME_MAX (255).
    """
    folder, name = posixpath.split(target)
    stem = name.encode()[:100].decode(errors="ignore")
    return posixpath.join(folder, f".{stem}.optio-{secrets.token_hex(8)}.tmp")


def path_inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies below it, both absolute POSIX paths, compared after
    normalising (lexically: links are the host's business). The one containment rule of the
    package: the session, HookContext, the CLI, the download task and workers all use it."""
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def resolve_from(root: str, path: str) -> str:
    """``path`` (relative to ``root``, or absolute) as a normalised absolute path, wherever it
    leads; ``ValueError`` when it is empty or holds a NUL. ``resolve_inside`` is this plus the
    bound; the CLI uses it as is (like ssh and scp, it lets a path climb out of the home)."""
    if not root.startswith("/"):
        raise ValueError(f"the folder must be an absolute path, got {root!r}")
    if not path or "\0" in path:
        raise ValueError(f"path is empty or contains a NUL character: {path!r}")
    return posixpath.normpath(posixpath.join(root, path))


def resolve_inside(root: str, path: str) -> str:
    """``path`` (relative to ``root``, or absolute) as a normalised absolute path; ``ValueError``
    when it is empty, holds a NUL, or leaves ``root``."""
    resolved = resolve_from(root, path)
    if not path_inside(resolved, root):
        raise ValueError(f"path {path!r} leads outside {posixpath.normpath(root)}")
    return resolved


def home_relative(path: str) -> str | None:
    """For ``~`` or ``~/...``, the rest relative to the home folder (``.`` for the home itself, as
    a shell reads ``~//x``: ``x``); ``None`` for any other path (``~user`` included)."""
    if path != "~" and not path.startswith("~/"):
        return None
    return path[1:].lstrip("/") or "."


def find_log() -> str:
    """The absolute path of the log to append to (see the module docstring for the search)."""
    from_env = os.environ.get(LOG_ENV, "")
    if from_env:
        return os.path.abspath(from_env)
    folder = os.getcwd()
    while True:
        candidate = os.path.join(folder, LOG_NAME)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            raise FileNotFoundError(
                f"no {LOG_NAME} found in {os.getcwd()} or any parent folder; run the worker in the "
                f"session's workdir or set {LOG_ENV} to the log's path"
            )
        folder = parent


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text)


def _append(line: str) -> None:
    data = (line + "\n").encode("utf-8", errors="surrogateescape")
    fd = os.open(find_log(), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        # One write keeps the line whole against concurrent appenders; a regular file
        # takes it all at once, the loop only guards against a short write (disk full).
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _clamp(percent: float) -> int:
    if isinstance(percent, bool) or not isinstance(percent, (int, float)):
        raise TypeError(f"percent must be a number, not {type(percent).__name__}")
    if math.isnan(percent):
        raise ValueError("percent must be a number, not NaN")
    return max(0, min(100, round(percent)))


def status(message: str, percent: float | None = None) -> None:
    """Report progress: ``STATUS: [N% ]message``. ``percent`` is rounded and clamped to 0-100."""
    text = _one_line(str(message))
    if percent is None:
        _append(f"{STATUS}: {text}")
    else:
        _append(f"{STATUS}: {_clamp(percent)}% {text}")


def done(summary: str | None = None) -> None:
    """Declare success (``DONE`` or ``DONE: summary``); the session ends after pending deliverables."""
    _append(f"{DONE}: {_one_line(summary)}" if summary else DONE)


def error(message: str | None = None) -> None:
    """Declare failure (``ERROR`` or ``ERROR: message``); the session fails with that message."""
    _append(f"{ERROR}: {_one_line(message)}" if message else ERROR)


def deliverable(path: str | os.PathLike[str], *, name: str | None = None) -> str:
    """Hand over a file; returns the path written on the ``DELIVERABLE`` line.

    A file already under ``<workdir>/deliverables/`` is announced where it is.
    Any other file is first copied (completely, then renamed into place) to
    ``deliverables/<name>``, ``name`` defaulting to the file's own name.
    """
    folder = os.path.join(os.path.realpath(os.path.dirname(find_log())), DELIVERABLES_DIR)
    source = os.path.realpath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"deliverable {os.fspath(path)!r} is not an existing file")
    in_place = None
    if os.path.commonpath([source, folder]) == folder:
        in_place = os.path.relpath(source, folder).replace(os.sep, "/")
    if name is None and in_place is not None:
        relative = in_place
    else:
        relative = _relative_name(name if name is not None else os.path.basename(os.fspath(path)))
    line_path = f"{DELIVERABLES_DIR}/{relative}"
    if _one_line(line_path) != line_path or line_path != line_path.strip():
        raise ValueError(
            f"deliverable path {line_path!r} cannot be written on one log line (line break, or "
            "white space at either end); pass name= to give the copy a plain name"
        )
    if relative != in_place:
        _copy(source, os.path.join(folder, relative))
    _append(f"{DELIVERABLE}: {line_path}")
    return line_path


def _relative_name(name: str) -> str:
    refused = ValueError(f"deliverable name must be a relative path inside deliverables/, got {name!r}")
    if not name or posixpath.isabs(name):
        raise refused
    try:
        resolved = resolve_inside("/" + DELIVERABLES_DIR, name)
    except ValueError:
        raise refused from None
    if resolved == "/" + DELIVERABLES_DIR:
        raise refused
    return resolved[len(DELIVERABLES_DIR) + 2 :]


def _copy(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Copy under a temporary name and rename, so the driver never fetches half a file.
    temp = temp_name_for(target)
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``status [N] TEXT``, ``deliverable PATH [--name NAME]``, ``done|error [TEXT]``."""
    parser = argparse.ArgumentParser(
        prog="worker.py", description=f"Append one log-protocol line to ${LOG_ENV} or the nearest {LOG_NAME}."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    status_command = commands.add_parser("status", help="progress: status [PERCENT] TEXT")
    status_command.add_argument("words", nargs="+", metavar="[PERCENT] TEXT")
    deliverable_command = commands.add_parser("deliverable", help="hand over a file")
    deliverable_command.add_argument("path")
    deliverable_command.add_argument("--name", help="its name under deliverables/ (default: its own)")
    for name, meaning in (("done", "success"), ("error", "failure")):
        commands.add_parser(name, help=f"declare {meaning}").add_argument("text", nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            percent, words = _percent_and_text(args.words)
            status(" ".join(words), percent)
        elif args.command == "deliverable":
            print(deliverable(args.path, name=args.name))
        else:
            (done if args.command == "done" else error)(args.text)
    except (OSError, ValueError, TypeError) as exc:
        print(f"worker.py {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _percent_and_text(words: list[str]) -> tuple[float | None, list[str]]:
    # "status 50 text" and "status 50% text" carry a percent; "status 50" alone is a message.
    match = re.fullmatch(r"(\d{1,3}(?:\.\d+)?)%?", words[0])
    if match is None or len(words) == 1:
        return None, words
    return float(match.group(1)), words[1:]


if __name__ == "__main__":
    sys.exit(main())
