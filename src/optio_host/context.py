"""STUB - replaced by the HookContext work (issue 4)."""

from __future__ import annotations

from typing import Any, Protocol

from optio_host.errors import HostCommandError
from optio_host.process import RunResult


class HookContextProtocol(Protocol): ...


class HookContext:
    def __init__(self, ctx: Any, host: Any) -> None: ...


__all__ = ["HookContext", "HookContextProtocol", "HostCommandError", "RunResult"]
