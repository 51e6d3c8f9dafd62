"""STUB - replaced by the download task work (issue 4)."""

from __future__ import annotations

from typing import Any

from optio_host.errors import DownloadFailed


def create_download_task(process_id: str, name: str, **kw: Any) -> Any:
    raise NotImplementedError


__all__ = ["DownloadFailed", "create_download_task"]
