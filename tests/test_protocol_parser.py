"""The log-line parser and the deliverable path checks: pure functions, no host."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

import optio_host.protocol as protocol
from optio_host._lines import LineSplitter, decode_line
from optio_host.protocol import parser
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

EVENT_TYPES = (StatusEvent, DeliverableEvent, DoneEvent, ErrorEvent, UnknownLine)

ROWS: list[tuple[str, LogEvent]] = [
    # STATUS: text, with and without a percent
    ("STATUS: compiling", StatusEvent(None, "compiling")),
    ("STATUS: 42% compiling", StatusEvent(42, "compiling")),
    ("STATUS: 0% start", StatusEvent(0, "start")),
    ("STATUS: 5% x", StatusEvent(5, "x")),
    ("STATUS: 100% done", StatusEvent(100, "done")),
    ("STATUS: 150% over", StatusEvent(100, "over")),
    ("STATUS: 999% way over", StatusEvent(100, "way over")),
    ("STATUS: 007% leading zeros", StatusEvent(7, "leading zeros")),
    ("STATUS: 1234% four digits", StatusEvent(None, "1234% four digits")),
    ("STATUS: 50%", StatusEvent(50, "")),
    ("STATUS: 50%   ", StatusEvent(50, "")),
    ("STATUS: 50%x", StatusEvent(None, "50%x")),
    ("STATUS: -5% negative", StatusEvent(None, "-5% negative")),
    ("STATUS: 12.5% fraction", StatusEvent(None, "12.5% fraction")),
    ("STATUS: 50%\tafter tab", StatusEvent(50, "after tab")),
    ("STATUS: half 50% way", StatusEvent(None, "half 50% way")),
    ("STATUS: ", StatusEvent(None, "")),
    ("STATUS:", StatusEvent(None, "")),
    ("STATUS:no space", StatusEvent(None, "no space")),
    ("STATUS:    many spaces  ", StatusEvent(None, "many spaces")),
    ("STATUS: keeps  inner   spaces", StatusEvent(None, "keeps  inner   spaces")),
    ("STATUS: colon: inside", StatusEvent(None, "colon: inside")),
    ("STATUS: ünïcødé ✓", StatusEvent(None, "ünïcødé ✓")),
    # DELIVERABLE
    ("DELIVERABLE: deliverables/report.md", DeliverableEvent("deliverables/report.md")),
    ("DELIVERABLE:   spaced.txt   ", DeliverableEvent("spaced.txt")),
    ("DELIVERABLE:/abs/path", DeliverableEvent("/abs/path")),
    ("DELIVERABLE: with inner space.txt", DeliverableEvent("with inner space.txt")),
    ("DELIVERABLE:", DeliverableEvent("")),
    # DONE
    ("DONE", DoneEvent(None)),
    ("DONE: all good", DoneEvent("all good")),
    ("DONE:all good", DoneEvent("all good")),
    ("DONE:", DoneEvent(None)),
    ("DONE:   ", DoneEvent(None)),
    ("DONE   ", DoneEvent(None)),
    # ERROR
    ("ERROR", ErrorEvent(None)),
    ("ERROR: it broke", ErrorEvent("it broke")),
    ("ERROR:it broke", ErrorEvent("it broke")),
    ("ERROR:", ErrorEvent(None)),
    ("ERROR:   ", ErrorEvent(None)),
    # everything else
    ("", UnknownLine("")),
    ("   ", UnknownLine("")),
    ("hello world", UnknownLine("hello world")),
    ("trailing   ", UnknownLine("trailing")),
    ("  indented", UnknownLine("  indented")),
    ("  DONE", UnknownLine("  DONE")),
    ("done", UnknownLine("done")),
    ("Status: 5% lower case", UnknownLine("Status: 5% lower case")),
    ("STATUS", UnknownLine("STATUS")),
    ("STATUS foo", UnknownLine("STATUS foo")),
    ("STATUSES: x", UnknownLine("STATUSES: x")),
    ("DELIVERABLE", UnknownLine("DELIVERABLE")),
    ("DELIVERABLE x", UnknownLine("DELIVERABLE x")),
    ("DONE x", UnknownLine("DONE x")),
    ("DONEX", UnknownLine("DONEX")),
    ("ERRORS: x", UnknownLine("ERRORS: x")),
    ("ERROR x", UnknownLine("ERROR x")),
]


@pytest.mark.parametrize(("line", "expected"), ROWS, ids=[repr(row[0]) for row in ROWS])
def test_spec_rows(line: str, expected: LogEvent) -> None:
    assert parse_log_line(line) == expected
    # A trailing newline (either kind) changes nothing.
    assert parse_log_line(line + "\n") == expected
    assert parse_log_line(line + "\r\n") == expected


def test_events_are_frozen_dataclasses() -> None:
    events = (StatusEvent(1, "a"), DeliverableEvent("p"), DoneEvent(None), ErrorEvent("e"), UnknownLine("x"))
    for event in events:
        assert dataclasses.is_dataclass(event)
        first = dataclasses.fields(event)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, first, "changed")


def test_field_names_and_positions() -> None:
    assert StatusEvent(percent=3, message="m") == StatusEvent(3, "m")
    assert DeliverableEvent(path="p").path == "p"
    assert DoneEvent(summary="s").summary == "s"
    assert ErrorEvent(message="m").message == "m"
    assert UnknownLine(text="t").text == "t"


def test_percent_is_an_int() -> None:
    event = parse_log_line("STATUS: 7% x")
    assert isinstance(event, StatusEvent)
    assert type(event.percent) is int


def test_non_ascii_digits_are_not_a_percent() -> None:
    # Arabic-Indic digits are \d to Python's re but not a percent for the protocol.
    digits = "\u0665\u0660"
    assert parse_log_line(f"STATUS: {digits}% x") == StatusEvent(None, f"{digits}% x")


def test_module_exports_are_the_same_objects() -> None:
    for name in parser.__all__:
        assert getattr(protocol, name) is getattr(parser, name)
    assert set(parser.__all__) <= set(protocol.__all__)


@given(st.text())
def test_fuzz_never_raises_and_always_returns_an_event(line: str) -> None:
    event = parse_log_line(line)
    assert isinstance(event, EVENT_TYPES)


@given(st.text(alphabet=st.sampled_from("STAUDONERLIVB:% 0123456789\t\r\nx-/.")))
def test_fuzz_protocol_alphabet(line: str) -> None:
    event = parse_log_line(line)
    assert isinstance(event, EVENT_TYPES)
    if isinstance(event, StatusEvent) and event.percent is not None:
        assert 0 <= event.percent <= 100
    if isinstance(event, UnknownLine):
        assert event.text == line.rstrip()
    if isinstance(event, (DoneEvent, ErrorEvent)):
        detail = event.summary if isinstance(event, DoneEvent) else event.message
        assert detail is None or (detail and detail == detail.strip())


# ------------------------------------------------------------------ fed every way

LOG = (
    "STATUS: 10% start\n"
    "plain output line\n"
    "\n"
    "STATUS: ünïcødé ✓ message\r\n"
    "DELIVERABLE: deliverables/a.txt\n"
    "STATUS: 99% almost\n"
    "DONE: finished\n"
    "STATUS: after the end, partial"
).encode()


def _events(chunks: list[bytes]) -> tuple[list[LogEvent], LineSplitter]:
    splitter = LineSplitter()
    events = []
    for chunk in chunks:
        for line in splitter.feed(chunk):
            events.append(parse_log_line(decode_line(line.raw)))
    return events, splitter


def test_same_events_whole_byte_by_byte_and_with_partial_tail() -> None:
    whole, splitter = _events([LOG])
    assert whole == [
        StatusEvent(10, "start"),
        UnknownLine("plain output line"),
        UnknownLine(""),
        StatusEvent(None, "ünïcødé ✓ message"),
        DeliverableEvent("deliverables/a.txt"),
        StatusEvent(99, "almost"),
        DoneEvent("finished"),
    ]
    # The unterminated last line is held back, and the offset stops before it.
    assert splitter.pending == len(b"STATUS: after the end, partial")
    assert splitter.offset == len(LOG) - splitter.pending

    bytewise, bytewise_splitter = _events([LOG[i : i + 1] for i in range(len(LOG))])
    assert bytewise == whole
    assert bytewise_splitter.offset == splitter.offset

    # Split at awkward places: inside a multi-byte character and between \r and \n.
    cut_char = LOG.index("ü".encode()) + 1
    cut_crlf = LOG.index(b"\r\n") + 1
    pieces = [LOG[:cut_char], LOG[cut_char:cut_crlf], LOG[cut_crlf:]]
    assert _events(pieces)[0] == whole

    # Completing the partial line yields exactly one more event.
    more, _ = _events([LOG, b" now complete\n"])
    assert more == [*whole, StatusEvent(None, "after the end, partial now complete")]


@given(st.lists(st.integers(min_value=0, max_value=len(LOG)), max_size=12))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [LOG[a:b] for a, b in zip([0, *points], [*points, len(LOG)], strict=True)]
    assert _events(pieces)[0] == _events([LOG])[0]


# ------------------------------------------------------------------ deliverable paths

WORKDIR = "/srv/task/workdir"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("deliverables/a.txt", "/srv/task/workdir/deliverables/a.txt"),
        ("./deliverables//a.txt", "/srv/task/workdir/deliverables/a.txt"),
        ("deliverables/sub/../a.txt", "/srv/task/workdir/deliverables/a.txt"),
        ("notes.txt", "/srv/task/workdir/notes.txt"),
        ("/srv/task/workdir/deliverables/b.md", "/srv/task/workdir/deliverables/b.md"),
        ("/srv/task/workdir/x/../deliverables/c", "/srv/task/workdir/deliverables/c"),
        (".", "/srv/task/workdir"),
    ],
)
def test_validate_accepts_paths_inside_the_workdir(path: str, expected: str) -> None:
    assert validate_deliverable_path(path, WORKDIR) == expected
    assert validate_deliverable_path(path, WORKDIR + "/") == expected


@pytest.mark.parametrize(
    "path",
    [
        "../outside.txt",
        "deliverables/../../outside.txt",
        "/etc/passwd",
        "/srv/task/workdir-sibling/a.txt",
        "/srv/task",
        "",
        "deliverables/nul\0byte",
    ],
)
def test_validate_refuses_paths_outside_the_workdir(path: str) -> None:
    with pytest.raises(ValueError, match="deliverable path"):
        validate_deliverable_path(path, WORKDIR)


def test_validate_needs_an_absolute_workdir() -> None:
    with pytest.raises(ValueError, match="absolute"):
        validate_deliverable_path("a", "relative/workdir")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/srv/task/workdir/deliverables/a.txt", "a.txt"),
        ("/srv/task/workdir/deliverables/sub/dir/b.json", "sub/dir/b.json"),
        ("/srv/task/workdir/deliverables/x/../c.txt", "c.txt"),
        ("deliverables/relative.txt", "relative.txt"),
    ],
)
def test_relativize(path: str, expected: str) -> None:
    assert relativize_deliverable_path(path, WORKDIR) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/srv/task/workdir/deliverables",
        "/srv/task/workdir/deliverables/",
        "/srv/task/workdir/deliverables-other/a.txt",
        "/srv/task/workdir/notes.txt",
        "/srv/task/workdir/deliverables/../a.txt",
        "/etc/passwd",
    ],
)
def test_relativize_refuses_anything_not_strictly_under_deliverables(path: str) -> None:
    with pytest.raises(ValueError, match="deliverable"):
        relativize_deliverable_path(path, WORKDIR)


@given(st.text(), st.sampled_from([WORKDIR, "/", "/w"]))
def test_fuzz_path_checks_raise_only_value_error(path: str, workdir: str) -> None:
    try:
        absolute = validate_deliverable_path(path, workdir)
    except ValueError:
        return
    assert absolute.startswith("/")
    root = workdir.rstrip("/")
    assert absolute == (root or "/") or absolute.startswith(root + "/")
    try:
        relative = relativize_deliverable_path(absolute, workdir)
    except ValueError:
        return
    assert relative
    assert not relative.startswith("/")
    assert ".." not in relative.split("/")
