"""The log protocol: a worker writes STATUS/DELIVERABLE/DONE/ERROR lines, a session driver follows them."""

from optio_host.protocol.deliverable import Deliverable
from optio_host.protocol.parser import (
    DeliverableEvent,
    DoneEvent,
    ErrorEvent,
    LogEvent,
    StatusEvent,
    UnknownLine,
    parse_log_line,
    relativize_deliverable_path,
    validate_deliverable_path,
)
from optio_host.protocol.session import (
    DELIVERABLE_QUEUE_BOUND,
    DeliverableCallback,
    DeliverableFileCallback,
    HookCallback,
    SessionFailed,
    fetch_deliverable_text,
    run_log_protocol_session,
)

__all__ = [
    "DELIVERABLE_QUEUE_BOUND",
    "Deliverable",
    "DeliverableCallback",
    "DeliverableFileCallback",
    "DeliverableEvent",
    "DoneEvent",
    "ErrorEvent",
    "HookCallback",
    "LogEvent",
    "SessionFailed",
    "StatusEvent",
    "UnknownLine",
    "fetch_deliverable_text",
    "parse_log_line",
    "relativize_deliverable_path",
    "run_log_protocol_session",
    "validate_deliverable_path",
]
