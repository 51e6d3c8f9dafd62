"""STUB - replaced by the protocol work (issue 4)."""

from __future__ import annotations

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


class StatusEvent: ...


class DeliverableEvent: ...


class DoneEvent: ...


class ErrorEvent: ...


class UnknownLine: ...


LogEvent = StatusEvent | DeliverableEvent | DoneEvent | ErrorEvent | UnknownLine


def parse_log_line(line: str) -> LogEvent:
    raise NotImplementedError


def validate_deliverable_path(path: str, workdir: str) -> str:
    raise NotImplementedError


def relativize_deliverable_path(absolute_path: str, workdir: str) -> str:
    raise NotImplementedError
