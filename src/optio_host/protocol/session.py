"""STUB - replaced by the protocol work (issue 4)."""

from __future__ import annotations

from typing import Any

from optio_host.errors import SessionFailed

_SessionFailed = SessionFailed
DELIVERABLE_QUEUE_BOUND = 64
DeliverableCallback = Any
HookCallback = Any


async def fetch_deliverable_text(host: Any, absolute_path: str) -> str:
    raise NotImplementedError


async def run_log_protocol_session(host: Any, ctx: Any, **kw: Any) -> None:
    raise NotImplementedError


__all__ = [
    "DELIVERABLE_QUEUE_BOUND",
    "DeliverableCallback",
    "HookCallback",
    "SessionFailed",
    "_SessionFailed",
    "fetch_deliverable_text",
    "run_log_protocol_session",
]
