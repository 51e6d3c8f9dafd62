"""``RecordingContext``: a small stand-in for optio-core's ``ProcessContext``.

It records progress, lets a test cancel, runs child tasks inline and serves
blobs from memory, with no database. Tests assert on ``.progress``; an
``on_progress`` callback sees every report as it happens. (The ``optio-host``
CLI builds on the same stand-in, ``optio_host._process_context``, without the
record: a long session would grow it.)
"""

from __future__ import annotations

from typing import Any, cast

from bson import ObjectId

from optio_host._process_context import BlobReader, ProgressListener, StandInContext

__all__ = ["BlobReader", "RecordingContext"]


class RecordingContext(StandInContext):
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
        super().__init__(process_id, params, metadata, on_progress=on_progress)
        self.progress: list[tuple[float | None, str | None]] = []
        self.children: list[Any] = []
        self.child_contexts: list[RecordingContext] = []

    def __repr__(self) -> str:
        return f"RecordingContext({self.process_id!r})"

    def report_progress(self, percent: float | None, message: str | None = None, **kwargs: Any) -> None:
        """Record the call (extra keywords such as optio-core's ``level`` are accepted)."""
        self.progress.append((percent, message))
        super().report_progress(percent, message, **kwargs)

    @property
    def messages(self) -> list[str]:
        """The reported messages, in order, without the percent-only calls."""
        return [message for _, message in self.progress if message is not None]

    def _new_child(self, process_id: str, params: dict[str, Any]) -> RecordingContext:
        return RecordingContext(process_id, params, self.metadata, on_progress=self._on_progress)

    def _started_child(self, task: Any, child: StandInContext) -> None:
        self.children.append(task)
        self.child_contexts.append(cast(RecordingContext, child))  # made by _new_child

    def _no_blob(self, file_id: ObjectId) -> str:
        return f"no blob {file_id} in this RecordingContext"
