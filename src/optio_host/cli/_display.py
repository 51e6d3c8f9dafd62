"""Output: rich live bars on a terminal, plain lines (no control codes) anywhere else.

Worker text (its log lines, its output, names it chose) reaches a terminal only
through ``for_terminal``: control characters are shown escaped, so OSC/CSI
sequences cannot retitle the window, move the cursor or hide text.
"""

from __future__ import annotations

import contextlib
import os
import re
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

from optio_host._lines import DEFAULT_LINE_LIMIT, Line, LineSplitter, decode_line, pieces
from optio_host._streams import ProgressCallback

__all__ = [
    "SessionView",
    "for_terminal",
    "human_rate",
    "is_live",
    "is_quiet",
    "set_quiet",
    "transfer_progress",
]

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


# C0 (tab aside), DEL, C1, and the invisible marks that reorder or split text (Trojan Source).
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def for_terminal(text: str) -> str:
    """``text`` with control characters shown escaped (``\\x1b``, ``\\u202e``): safe to print."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


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
    task = progress.add_task(escape(for_terminal(label)), total=max(total, 1))

    def update(percent: float | None, message: str | None) -> None:
        if percent is not None:
            progress.update(task, completed=total * percent / 100)
        if message:
            progress.console.print(escape(for_terminal(message)))

    with progress:
        yield update


class SessionView:
    """What a session shows: status lines, the worker's own output, notes, a bar on a terminal.

    Plain mode writes status lines and notes to stdout and the worker's output
    to stderr, unchanged unless stderr is a terminal. Live mode prints them above
    a bar driven by the percents of STATUS lines. Whatever reaches a terminal
    goes through ``for_terminal``; an output line is cut at ``DEFAULT_LINE_LIMIT``.
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
        self._raw_output = not self.live and not sys.stderr.isatty()
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
            self._task = self._progress.add_task(escape(for_terminal(title)), total=None)

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
            if rest and not self._raw_output:
                self._print_output([rest], err)
        if not self._raw_output:
            self._summarise_not_shown()
        if self._progress is not None:
            self._progress.stop()

    def progress(self, percent: float | None, message: str | None) -> None:
        """A report from the session (STATUS lines, deliverables, other log lines)."""
        if percent is not None:
            self._percent = max(0.0, min(100.0, float(percent)))
        shown = f"{self._percent:3.0f}%" if percent is not None else "    "
        text = for_terminal(message) if message else ""
        if self._progress is not None and self._task is not None:
            if percent is not None:
                self._progress.update(self._task, total=100, completed=self._percent)
            if text:
                self._progress.update(self._task, description=escape(_shorten(text, 50)))
                self._progress.console.print(f"[dim]{shown}[/dim] {escape(text)}")
        elif text and not _quiet:
            print(f"{shown} {text}", flush=True)

    def complete(self) -> None:
        """The session ended with DONE: a full bar saying so (not the last message, maybe a skip)."""
        self._percent = 100.0
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=100, completed=100, description="done")

    def note(self, text: str) -> None:
        """One line of our own (a saved deliverable, an upload)."""
        if self._progress is not None:
            self._progress.console.print(f"[green]{escape(for_terminal(text))}[/green]")
        elif not _quiet:
            print(for_terminal(text), flush=True)

    def output(self, chunk: bytes, *, err: bool) -> None:
        """Output of the worker process: passed through to stderr, or shown line by line, escaped."""
        if self._raw_output:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            return
        lines: list[Line] = []
        for piece in pieces(chunk):
            lines += self._decoders[err].feed_raw(piece)
        shown = self._budget.take(len(lines))
        self._not_shown += len(lines) - shown
        if shown:
            self._print_output([_LineDecoder.text(line) for line in lines[:shown]], err)

    def _print_output(self, lines: list[str], err: bool) -> None:
        """Lines above the bar (or on stderr), escaped, drawn at once, after a note of any left out."""
        texts = [for_terminal(line) for line in lines]
        self._summarise_not_shown()
        if self._progress is not None:
            style = "red" if err else "dim"
            self._progress.console.print("\n".join(f"[{style}]│ {escape(text)}[/{style}]" for text in texts))
        else:
            print("\n".join(texts), file=sys.stderr, flush=True)

    def _summarise_not_shown(self) -> None:
        if not self._not_shown:
            return
        count, self._not_shown = self._not_shown, 0
        note = (
            f"… {count} line(s) of the worker's output not shown "
            f"(more than {OUTPUT_LINES_PER_SECOND} a second)"
        )
        if self._progress is not None:
            self._progress.console.print(f"[yellow]{note}[/yellow]")
        else:
            print(note, file=sys.stderr, flush=True)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class _LineDecoder:
    """Bytes in any split to complete text lines (invalid UTF-8 replaced, long lines cut)."""

    def __init__(self) -> None:
        self._splitter = LineSplitter(limit=DEFAULT_LINE_LIMIT)

    def feed(self, chunk: bytes) -> list[str]:
        return [self.text(line) for line in self.feed_raw(chunk)]

    def feed_raw(self, chunk: bytes) -> list[Line]:
        """The complete lines, undecoded (decoding costs time for lines that will not be shown)."""
        return self._splitter.feed(chunk)

    @staticmethod
    def text(line: Line) -> str:
        return decode_line(line.raw).rstrip("\r") + (f" … ({line.cut} more bytes cut)" if line.cut else "")

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
