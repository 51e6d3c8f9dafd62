"""The log protocol's line parser: one line of ``optio.log`` in, one event out. No I/O.

A worker appends lines to ``<workdir>/optio.log``:

====================================  ===========================================
line                                  event
====================================  ===========================================
``STATUS: <text>``                    ``StatusEvent(None, "<text>")``
``STATUS: <N>% <text>``               ``StatusEvent(N, "<text>")``, N of 1-3 digits, at most 100
``DELIVERABLE: <path>``               ``DeliverableEvent("<path>")``
``DONE`` / ``DONE: <summary>``        ``DoneEvent(None)`` / ``DoneEvent("<summary>")``
``ERROR`` / ``ERROR: <message>``      ``ErrorEvent(None)`` / ``ErrorEvent("<message>")``
anything else, blank lines included   ``UnknownLine("<line>")``
====================================  ===========================================

Choices where the table leaves room (what a worker author most likely meant):

- Keywords are upper case and must start the line; an indented ``  DONE`` is
  ordinary output (``UnknownLine``), so echoing protocol words is harmless.
- Trailing white space (and the newline) is ignored everywhere; the space
  after the colon is optional (``STATUS:half way`` is a status) and any white
  space after the colon is skipped.
- ``DONE:`` / ``ERROR:`` with nothing (or only white space) after the colon
  mean the same as bare ``DONE`` / ``ERROR``: the summary/message is ``None``,
  never ``""``. ``DONE x`` (no colon) and ``DONEX`` are unknown lines.
- ``STATUS`` needs its colon (a bare ``STATUS`` is an unknown line).
- The percent prefix is 1-3 ASCII digits and ``%`` followed by white space or
  the end of the line; otherwise the text is all message (``STATUS: 1234% x``
  and ``STATUS: 5%x`` have ``percent=None``).
- ``DELIVERABLE:`` with an empty path is still a ``DeliverableEvent("")``, so
  the session reports it as a bad deliverable instead of echoing it.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

# The keywords and names are defined once, in the worker helper (which must stand alone).
from optio_host.worker import DELIVERABLE, DONE, KEYWORDS, STATUS, path_inside, resolve_inside
from optio_host.worker import DELIVERABLES_DIR as DELIVERABLES_DIR
from optio_host.worker import LOG_NAME as LOG_NAME

__all__ = [
    "DeliverableEvent",
    "DoneEvent",
    "ErrorEvent",
    "LogEvent",
    "StatusEvent",
    "UnknownLine",
    "parse_log_line",
    "relativize_deliverable_path",
    "validate_deliverable_path",
]

_PERCENT = re.compile(r"([0-9]{1,3})%(?:\s+|\Z)")
_KEYWORD = re.compile(f"({'|'.join(map(re.escape, KEYWORDS))})(?::(.*)|\\Z)", re.DOTALL)


@dataclass(frozen=True)
class StatusEvent:
    """Progress: ``percent`` (0-100) when the line gave one, and a message (maybe empty)."""

    percent: int | None
    message: str


@dataclass(frozen=True)
class DeliverableEvent:
    """A file the worker produced, as written on the line (relative to the workdir, or absolute)."""

    path: str


@dataclass(frozen=True)
class DoneEvent:
    """The worker finished successfully."""

    summary: str | None = None


@dataclass(frozen=True)
class ErrorEvent:
    """The worker failed."""

    message: str | None = None


@dataclass(frozen=True)
class UnknownLine:
    """Any other line (blank ones included), without trailing white space."""

    text: str


LogEvent = StatusEvent | DeliverableEvent | DoneEvent | ErrorEvent | UnknownLine


def parse_log_line(line: str) -> LogEvent:
    """Turn one line of ``optio.log`` into its event. Never raises for a ``str``.

    A trailing newline (``\\n`` or ``\\r\\n``) may be included or not.
    """
    text = line.rstrip()
    match = _KEYWORD.match(text)
    if match is None:
        return UnknownLine(text)
    keyword, rest = match.group(1), match.group(2)
    if keyword == STATUS:
        if rest is None:
            return UnknownLine(text)
        return _status(rest.lstrip())
    if keyword == DELIVERABLE:
        if rest is None:
            return UnknownLine(text)
        return DeliverableEvent(rest.strip())
    detail = rest.strip() if rest is not None else ""
    if keyword == DONE:
        return DoneEvent(detail or None)
    return ErrorEvent(detail or None)


def _status(rest: str) -> StatusEvent:
    match = _PERCENT.match(rest)
    if match is None:
        return StatusEvent(None, rest)
    return StatusEvent(min(int(match.group(1)), 100), rest[match.end() :])


def validate_deliverable_path(path: str, workdir: str) -> str:
    """The absolute, normalised form of ``path`` (relative to ``workdir``, or absolute).

    Purely lexical: symlinks are not resolved here (the session resolves them
    on the host). ``ValueError`` if the path is empty, contains a NUL, or is
    outside ``workdir``; ``workdir`` itself must be absolute.
    """
    if not workdir.startswith("/"):
        raise ValueError(f"workdir must be an absolute path, got {workdir!r}")
    if not path:
        raise ValueError("deliverable path is empty")
    try:
        return resolve_inside(workdir, path)
    except ValueError:
        raise ValueError(f"deliverable path {path!r} is outside the workdir {workdir}") from None


def relativize_deliverable_path(absolute_path: str, workdir: str) -> str:
    """``absolute_path`` relative to ``<workdir>/deliverables/``.

    ``ValueError`` unless the (normalised) path is strictly under that folder.
    A relative path is taken relative to ``workdir``, as in
    ``validate_deliverable_path``.
    """
    resolved = validate_deliverable_path(absolute_path, workdir)
    folder = posixpath.join(posixpath.normpath(workdir), DELIVERABLES_DIR)
    if resolved == folder or not path_inside(resolved, folder):
        raise ValueError(f"deliverable path {absolute_path!r} is not under {folder}/")
    return resolved[len(folder) + 1 :]
