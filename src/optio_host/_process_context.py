"""``StandInContext``: optio-core's ``ProcessContext`` surface, without its engine or database.

The one implementation behind both stand-ins: ``optio_host.testing.RecordingContext``
(which adds a record of every call, for tests) and the ``optio-host`` CLI's context
(which reports to the terminal and keeps nothing per call, so a long session does not
grow). It offers what optio-host and task hooks use of a ``ProcessContext``:
``process_id``, ``params``, ``metadata``, ``report_progress``, ``should_continue``,
``cancellation_flag``, ``run_child_task`` (inline) and ``load_blob`` (from memory).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from bson import ObjectId

__all__ = ["BlobReader", "ProgressListener", "StandInContext"]

#: ``on_progress(percent, message)``: told of every report as it happens.
ProgressListener = Callable[[float | None, str | None], object]


class BlobReader:
    """The value of ``load_blob``: ``await read(size=-1)`` like a GridFS download stream."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0
        self.length = len(data)

    async def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._position + size
        chunk = self._data[self._position : end]
        self._position += len(chunk)
        return chunk


class StandInContext:
    """A ``ProcessContext`` stand-in that keeps nothing per call.

    - ``report_progress(percent, message)`` goes to ``on_progress`` (if any);
      extra keywords such as optio-core's ``level`` are accepted.
    - ``cancel()`` makes ``should_continue()`` false and sets ``cancellation_flag``.
    - ``run_child_task(task)`` runs ``task.execute`` at once with a child context
      (id ``task.process_id``, sharing this one's cancellation and blobs),
      advancing ``_child_counter`` first as optio-core does; the child's exception
      is re-raised unless ``survive_failure``. ``on_child_progress`` is accepted
      and not called.
    - ``add_blob(data)`` returns an ``ObjectId`` that ``load_blob`` serves.
    """

    def __init__(
        self,
        process_id: str,
        params: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        on_progress: ProgressListener | None = None,
    ) -> None:
        self.process_id = process_id
        self.params: dict[str, Any] = params if params is not None else {}
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}
        self._on_progress = on_progress
        self._child_counter: dict[str, int] = {}
        self._cancellation_flag = asyncio.Event()
        self._blobs: dict[ObjectId, bytes] = {}

    # ---------------------------------------------------------------- progress

    def report_progress(self, percent: float | None, message: str | None = None, **_: Any) -> None:
        """Tell ``on_progress`` (extra keywords such as optio-core's ``level`` are accepted)."""
        if self._on_progress is not None:
            self._on_progress(percent, message)

    # ---------------------------------------------------------------- cancellation

    @property
    def cancellation_flag(self) -> asyncio.Event:
        """Set once cancellation was requested (as ``ProcessContext.cancellation_flag``)."""
        return self._cancellation_flag

    def cancel(self) -> None:
        """Request cancellation: ``should_continue()`` is false from now on."""
        self._cancellation_flag.set()

    def should_continue(self) -> bool:
        return not self._cancellation_flag.is_set()

    # ---------------------------------------------------------------- children

    async def run_child_task(
        self,
        task: Any,
        *,
        survive_failure: bool = False,
        survive_cancel: bool = False,
        on_child_progress: Callable[..., object] | None = None,
    ) -> Any:
        """Run ``task.execute(child_ctx)`` now; return an optio-core ``ChildOutcome``."""
        from optio_core.models import ChildOutcome  # optio-core is slow to import: only when needed

        order = self._child_counter.get("next", 0)
        self._child_counter["next"] = order + 1
        child = self._new_child(task.process_id, dict(getattr(task, "params", None) or {}))
        child._cancellation_flag = self._cancellation_flag
        child._blobs = self._blobs
        self._started_child(task, child)
        try:
            await task.execute(child)
        except Exception as exc:
            if survive_failure:
                return ChildOutcome(state="failed", original_exception=exc)
            raise
        if not child.should_continue():
            return ChildOutcome(state="cancelled")
        return ChildOutcome(state="done")

    def _new_child(self, process_id: str, params: dict[str, Any]) -> StandInContext:
        """The context a child task runs with (its cancellation and blobs are then shared)."""
        return StandInContext(process_id, params, self.metadata, on_progress=self._on_progress)

    def _started_child(self, task: Any, child: StandInContext) -> None:
        """Called before a child runs; a recording subclass records it."""

    # ---------------------------------------------------------------- blobs

    def add_blob(self, data: bytes) -> ObjectId:
        """Store ``data``; ``load_blob`` with the returned id reads it back."""
        blob_id = ObjectId()
        self._blobs[blob_id] = bytes(data)
        return blob_id

    @asynccontextmanager
    async def load_blob(self, file_id: ObjectId) -> AsyncIterator[BlobReader]:
        """An async context manager whose value has ``await read(size=-1)``."""
        try:
            data = self._blobs[file_id]
        except KeyError:
            raise FileNotFoundError(self._no_blob(file_id)) from None
        yield BlobReader(data)

    def _no_blob(self, file_id: ObjectId) -> str:
        """The message of the ``FileNotFoundError`` for a blob this context does not hold."""
        return f"no blob {file_id} in this {type(self).__name__}"
