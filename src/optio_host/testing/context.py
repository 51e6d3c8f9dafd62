"""``RecordingContext``: a small stand-in for optio-core's ``ProcessContext``.

It records progress, lets a test cancel, runs child tasks inline and serves
blobs from memory, with no database. Tests assert on ``.progress``; an
``on_progress`` callback sees every report as it happens. (The ``optio-host``
CLI has its own stand-in, which keeps no record: a long session would grow it.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from bson import ObjectId

__all__ = ["BlobReader", "RecordingContext"]

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


class RecordingContext:
    """Records ``report_progress`` calls; a controllable ``should_continue``; inline children.

    - ``progress``: every ``(percent, message)`` reported, in order; ``messages``
      just the non-``None`` messages.
    - ``cancel()`` makes ``should_continue()`` false and sets ``cancellation_flag``.
    - ``run_child_task(task)`` runs ``task.execute`` at once with a child
      ``RecordingContext`` (id ``task.process_id``; it shares this context's
      cancellation, blobs and ``on_progress``), advancing the child counter
      first as optio-core does. The child's exception is re-raised unless
      ``survive_failure``. Tasks run are in ``children``, their contexts in
      ``child_contexts``.
    - ``add_blob(data)`` returns an ``ObjectId`` that ``load_blob`` serves.
    """

    def __init__(
        self,
        process_id: str = "test",
        params: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        on_progress: ProgressListener | None = None,
    ) -> None:
        self.process_id = process_id
        self.params: dict[str, Any] = params if params is not None else {}
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}
        self.progress: list[tuple[float | None, str | None]] = []
        self.children: list[Any] = []
        self.child_contexts: list[RecordingContext] = []
        self._on_progress = on_progress
        self._child_counter: dict[str, int] = {}
        self._cancellation_flag = asyncio.Event()
        self._blobs: dict[ObjectId, bytes] = {}

    def __repr__(self) -> str:
        return f"RecordingContext({self.process_id!r})"

    # ---------------------------------------------------------------- progress

    def report_progress(self, percent: float | None, message: str | None = None, **_: Any) -> None:
        """Record the call (extra keywords such as optio-core's ``level`` are accepted)."""
        self.progress.append((percent, message))
        if self._on_progress is not None:
            self._on_progress(percent, message)

    @property
    def messages(self) -> list[str]:
        """The reported messages, in order, without the percent-only calls."""
        return [message for _, message in self.progress if message is not None]

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
        from optio_core.models import ChildOutcome

        order = self._child_counter.get("next", 0)
        self._child_counter["next"] = order + 1
        child = RecordingContext(
            task.process_id,
            dict(getattr(task, "params", None) or {}),
            self.metadata,
            on_progress=self._on_progress,
        )
        child._cancellation_flag = self._cancellation_flag
        child._blobs = self._blobs
        self.children.append(task)
        self.child_contexts.append(child)
        try:
            await task.execute(child)
        except Exception as exc:
            if survive_failure:
                return ChildOutcome(state="failed", original_exception=exc)
            raise
        if not child.should_continue():
            return ChildOutcome(state="cancelled")
        return ChildOutcome(state="done")

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
            raise FileNotFoundError(f"no blob {file_id} in this RecordingContext") from None
        yield BlobReader(data)
