"""Output: rich live bars on a terminal, plain lines (no control codes) anywhere else."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from types import TracebackType

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from optio_host._lines import LineSplitter, decode_line
from optio_host._streams import ProgressCallback

__all__ = ["SessionView", "human_rate", "is_live", "is_quiet", "set_quiet", "transfer_progress"]

_quiet = False

#: Live mode shows at most this many lines of the worker's own output a second (after a burst of
#: ``_OUTPUT_BURST``): drawing a line above the bar costs a redraw, and a worker flooding its
#: output must not starve the session. Lines beyond are counted and summarised.
OUTPUT_LINES_PER_SECOND = 100
_OUTPUT_BURST = 300


def set_quiet(quiet: bool) -> None:
    """``-q``: no bars, no progress or summary lines (errors and the worker's own output still show)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def is_live() -> bool:
    """Whether stdout is a terminal that can show live bars (never with ``-q``)."""
    return not _quiet and sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb"


def human_rate(size: int, seconds: float) -> str:
    """``1.2 MB in 0.3 s (4.0 MB/s)``."""
    rate = f", {decimal(int(size / seconds))}/s" if seconds > 0.01 else ""
    return f"{decimal(size)} in {seconds:.1f} s{rate}"


@contextlib.contextmanager
def transfer_progress(label: str, total: int) -> Iterator[ProgressCallback]:
    """A ``progress_cb`` for a transfer of ``total`` bytes: a bar with bytes and rate on a terminal."""
    if not is_live():
        yield lambda percent, message: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(highlight=False),
        transient=True,
    )
    task = progress.add_task(escape(label), total=max(total, 1))

    def update(percent: float | None, message: str | None) -> None:
        if percent is not None:
            progress.update(task, completed=total * percent / 100)
        if message:
            progress.console.print(escape(message))

    with progress:
        yield update


class SessionView:
    """What a session shows: status lines, the worker's own output, notes, a bar on a terminal.

    Plain mode writes status lines and notes to stdout and the worker's output
    to stderr, unchanged. Live mode prints them above a bar driven by the
    percents of STATUS lines.
    """

    def __init__(self, title: str) -> None:
        self.live = is_live()
        self._percent: float | None = None
        self._decoders = {False: _LineDecoder(), True: _LineDecoder()}
        self._budget = _Budget(OUTPUT_LINES_PER_SECOND, _OUTPUT_BURST)
        self._not_shown = 0
        self._console = Console(highlight=False) if self.live else None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self._console is not None:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._task = self._progress.add_task(escape(title), total=None)

    def __enter__(self) -> SessionView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for err, decoder in self._decoders.items():
            rest = decoder.flush()
            if rest and self._progress is not None:
                self._print_output([rest], err)
        if self._progress is not None:
            self._summarise_not_shown()
            self._progress.stop()

    def progress(self, percent: float | None, message: str | None) -> None:
        """A report from the session (STATUS lines, deliverables, other log lines)."""
        if percent is not None:
            self._percent = max(0.0, min(100.0, float(percent)))
        if self._progress is not None and self._task is not None:
            if percent is not None:
                self._progress.update(self._task, total=100, completed=self._percent)
            if message:
                self._progress.update(self._task, description=escape(_shorten(message, 50)))
                shown = f"{self._percent:3.0f}%" if percent is not None else "    "
                self._progress.console.print(f"[dim]{shown}[/dim] {escape(message)}")
        elif message and not _quiet:
            shown = f"{self._percent:3.0f}%" if percent is not None else "    "
            print(f"{shown} {message}", flush=True)

    def note(self, text: str) -> None:
        """One line of our own (a saved deliverable, an upload)."""
        if self._progress is not None:
            self._progress.console.print(f"[green]{escape(text)}[/green]")
        elif not _quiet:
            print(text, flush=True)

    def output(self, chunk: bytes, *, err: bool) -> None:
        """Output of the worker process: passed through to stderr, or shown above the bar."""
        if self._progress is None:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            return
        raw = self._decoders[err].feed_raw(chunk)
        shown = self._budget.take(len(raw))
        self._not_shown += len(raw) - shown
        if shown:
            self._print_output([decode_line(line) for line in raw[:shown]], err)

    def _print_output(self, lines: list[str], err: bool) -> None:
        """Lines above the bar, drawn at once (one redraw), after a note of any left out before."""
        if self._progress is not None:
            self._summarise_not_shown()
            style = "red" if err else "dim"
            self._progress.console.print("\n".join(f"[{style}]│ {escape(line)}[/{style}]" for line in lines))

    def _summarise_not_shown(self) -> None:
        if self._progress is not None and self._not_shown:
            count, self._not_shown = self._not_shown, 0
            self._progress.console.print(
                f"[yellow]… {count} line(s) of the worker's output not shown "
                f"(more than {OUTPUT_LINES_PER_SECOND} a second)[/yellow]"
            )


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class _LineDecoder:
    """Bytes in any split to complete text lines (invalid UTF-8 replaced)."""

    def __init__(self) -> None:
        self._splitter = LineSplitter()

    def feed(self, chunk: bytes) -> list[str]:
        return [decode_line(raw) for raw in self.feed_raw(chunk)]

    def feed_raw(self, chunk: bytes) -> list[bytes]:
        """The complete lines, undecoded (decoding costs time for lines that will not be shown)."""
        return [raw for raw, _ in self._splitter.feed(chunk)]

    def flush(self) -> str:
        """The last line if it had no newline, else ``""``."""
        return "".join(self.feed(b"\n")) if self._splitter.pending else ""


class _Budget:
    """A token bucket: ``take(n)`` grants up to ``n`` of ``rate`` a second, ``burst`` at most at once."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self, wanted: int) -> int:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted
