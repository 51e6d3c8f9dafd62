"""Restoring hostile archives: the security review's findings (issue 12: 1, 2, 6, 7, 8) on both hosts."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import os
import tarfile
import time
import zlib
from collections.abc import AsyncIterator, Callable

import pytest

from optio_host.archive import consume_workdir_archive
from optio_host.host.base import Host

from ._support import from_list

pytestmark = pytest.mark.timeout(120)

Build = Callable[[tarfile.TarFile], None]


def tar_bytes(build: Build, *, compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        build(tar)
    raw = buffer.getvalue()
    return gzip.compress(raw, 1) if compress else raw


def add(
    tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: object
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


async def listing(host: Host, folder: str | None = None) -> dict[str, str]:
    """Every path under ``folder`` (default: the workdir) with its type, mode, size and link target."""
    result = await host.run(
        ["find", ".", "-mindepth", "1", "-printf", "%P\\t%y %m %s %l\\0"], cwd=folder or host.workdir
    )
    return dict(line.split("\t", 1) for line in result.stdout.split("\0") if line)


async def outside_state(host: Host) -> dict[str, str]:
    """What a restore must never change: the taskdir's parent, except the workdir's own contents."""
    parent = os.path.dirname(host.taskdir)
    state = await host.run(  # (a folder's time changes when a staging folder comes and goes)
        [
            "find",
            parent,
            "-path",
            f"{host.workdir}/*",
            "-prune",
            "-o",
            "-type",
            "d",
            "-printf",
            "%p\\td %m\\0",
            "-o",
            "-printf",
            "%p\\t%y %m %T@ %s %l\\0",
        ],
        cwd="/",
    )
    lines = [
        line for line in state.stdout.split("\0") if not os.path.basename(line.split("\t")[0]).startswith(".")
    ]
    return dict(line.split("\t", 1) for line in lines if line)


async def prepare(host: Host) -> tuple[dict[str, str], dict[str, str]]:
    """An old workdir with content and a file outside it; their state before the restore."""
    await host.write_text("old/keep.txt", "old content")
    await host.write_text("top.txt", "top")
    outside = os.path.join(os.path.dirname(host.taskdir), "outside.txt")
    odd = os.path.join(os.path.dirname(host.taskdir), "odd\nname.txt")  # (other tests leave such names)
    script = 'echo secret > "$1" && chmod 600 "$1" && touch -d @1000000 "$1" && touch "$2"'
    await host.run(["sh", "-c", script, "sh", outside, odd])
    return await listing(host), await outside_state(host)


async def assert_refused_changes_nothing(host: Host, archive: bytes, match: str | None = None) -> None:
    before, outside = await prepare(host)
    with pytest.raises(ValueError, match=match):
        await host.restore_workdir(from_list([archive[i : i + 4096] for i in range(0, len(archive), 4096)]))
    assert await listing(host) == before
    assert await outside_state(host) == outside
    assert await host.fetch_bytes_from_host(f"{host.workdir}/old/keep.txt") == b"old content"


# ------------------------------------------------------------------ finding 1


async def test_name_restored_as_a_link_then_hardlinked_is_refused(host: Host) -> None:
    outside = os.path.join(os.path.dirname(host.taskdir), "outside.txt")

    def build(tar: tarfile.TarFile) -> None:
        add(tar, "d1/d2/x", data=b"innocent")
        add(tar, "d1/d2/x", tarfile.SYMTYPE, linkname=os.path.relpath(outside, f"{host.workdir}/d1/d2"))
        add(tar, "h", tarfile.LNKTYPE, linkname="d1/d2/x", mode=0o755, mtime=86400)

    await assert_refused_changes_nothing(host, tar_bytes(build), "into a link|another type")


async def test_hardlink_to_a_name_not_in_the_archive_is_refused(host: Host) -> None:
    await assert_refused_changes_nothing(
        host, tar_bytes(lambda t: add(t, "h", tarfile.LNKTYPE, linkname="top.txt")), "earlier regular file"
    )


# ------------------------------------------------------------------ finding 2


@pytest.mark.parametrize(
    "chain",
    [
        [("a", "."), ("p", "a/.."), ("q", "p/.."), ("r", "q/..")],
        [("d/s", ".."), ("t", "d/s/..")],
        [("x", "y/.."), ("y", ".")],  # a name used by an earlier link's target becomes a link later
        [("loop", "loop/x"), ("out", "loop/..")],
    ],
    ids=["dot-chain", "nested-parent", "late-link", "loop"],
)
async def test_symlink_chains_that_lead_out_are_refused(host: Host, chain: list[tuple[str, str]]) -> None:
    def build(tar: tarfile.TarFile) -> None:
        for name, target in chain:
            add(tar, name, tarfile.SYMTYPE, linkname=target)

    await assert_refused_changes_nothing(host, tar_bytes(build), "link")


async def test_links_that_stay_inside_are_kept(host: Host) -> None:
    def build(tar: tarfile.TarFile) -> None:
        add(tar, "a", tarfile.SYMTYPE, linkname=".")
        add(tar, "d/f", data=b"f")
        add(tar, "p", tarfile.SYMTYPE, linkname="a/d/../d/f")
        add(tar, "d/up", tarfile.SYMTYPE, linkname="../a/d/f")

    await host.restore_workdir(from_list([tar_bytes(build)]))
    for name in ("p", "d/up"):
        assert await host.fetch_bytes_from_host(f"{host.workdir}/{name}") == b"f"


# ------------------------------------------------------------------ finding 8


def _ten_files(tar: tarfile.TarFile) -> None:
    for index in range(10):
        add(tar, f"f{index}.txt", data=b"%d" % index * 700)


def _cut_at_member(count: int) -> bytes:
    raw = tar_bytes(_ten_files, compress=False)
    offset, seen = 0, 0
    while seen < count:
        size = int(raw[offset + 124 : offset + 135], 8)
        offset += 512 + -(-size // 512) * 512
        seen += 1
    return gzip.compress(raw[:offset], 1)


def _bad_crc() -> bytes:
    data = bytearray(tar_bytes(_ten_files))
    data[-8] ^= 0xFF
    return bytes(data)


def _bad_data() -> bytes:
    data = bytearray(tar_bytes(_ten_files))
    data[len(data) // 2] ^= 0x55
    return bytes(data)


BROKEN = {
    "cut-at-member": lambda: _cut_at_member(5),
    "no-gzip-trailer": lambda: tar_bytes(_ten_files)[:-8],
    "cut-inside-deflate": lambda: tar_bytes(_ten_files)[:200],
    "bad-crc": _bad_crc,
    "corrupt-deflate": _bad_data,
    "trailing-garbage": lambda: tar_bytes(_ten_files) + b"garbage",
    "not-gzip": lambda: tar_bytes(_ten_files, compress=False),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_truncated_or_corrupt_archives_are_refused(host: Host, case: str) -> None:
    await assert_refused_changes_nothing(host, BROKEN[case](), "truncated|corrupt|refused")


async def test_0_1_2_and_tar_czf_archives_restore(host: Host, tmp_path: os.PathLike[str]) -> None:
    source = os.path.join(tmp_path, "src")
    os.makedirs(os.path.join(source, "d"))
    for name, text in (("a.txt", "a"), ("d/b.txt", "b")):
        with open(os.path.join(source, name), "w") as handle:
            handle.write(text)
    os.symlink("d/b.txt", os.path.join(source, "link"))
    czf = os.path.join(tmp_path, "czf.tgz")
    proc = await asyncio.create_subprocess_exec("tar", "czf", czf, "-C", source, ".")
    assert await proc.wait() == 0
    old_style = io.BytesIO()  # 0.1.2: Python tarfile, PAX format, members named "a.txt", "d", "d/b.txt"
    with (
        gzip.GzipFile(fileobj=old_style, mode="wb", compresslevel=1, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in ("a.txt", "d", "d/b.txt", "link"):
            tar.add(os.path.join(source, name), arcname=name, recursive=False)
    with open(czf, "rb") as handle:
        archives = [handle.read(), old_style.getvalue()]
    for archive in archives:
        await host.write_text("stale.txt", "x")
        await host.restore_workdir(from_list([archive]))
        assert set(await listing(host)) == {"a.txt", "d", "d/b.txt", "link"}
        assert await host.fetch_bytes_from_host(f"{host.workdir}/link") == b"b"


# ------------------------------------------------------------------ finding 7: bounds, linear cost


async def test_bounds_on_expanded_size_and_member_count(host: Host) -> None:
    many = tar_bytes(lambda t: [add(t, f"f{i}") for i in range(50)])
    before, _ = await prepare(host)
    with pytest.raises(ValueError, match="max_members"):
        await host.restore_workdir(from_list([many]), max_members=20)
    with pytest.raises(ValueError, match="max_bytes"):
        await host.restore_workdir(
            from_list([tar_bytes(lambda t: add(t, "z", data=bytes(1 << 20)))]), max_bytes=1 << 19
        )
    assert await listing(host) == before


async def test_zip_bomb_cost_is_linear(tmp_path: os.PathLike[str]) -> None:
    def bomb(size: int) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            info = tarfile.TarInfo("zeros")
            info.size = size
            tar.addfile(info, _Zeros(size))
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        return compressor.compress(raw.getvalue()) + compressor.flush()

    timings = []
    for size in (32 << 20, 128 << 20):
        dest = os.path.join(tmp_path, f"d{size}")
        started = time.process_time()
        await consume_workdir_archive(from_list([bomb(size)]), dest)
        timings.append(time.process_time() - started)
        assert os.path.getsize(os.path.join(dest, "zeros")) == size
    # 4x the data: well under the 60 s that 64 MiB took before; about 4x the time, never 16x.
    assert timings[1] < 10 * max(timings[0], 0.05), timings


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self._left = size

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._left)
        buffer[:count] = bytes(count)
        self._left -= count
        return count


async def _endless_zeros() -> AsyncIterator[bytes]:
    """A gzip'd empty tar whose stream goes on with zeros after the end marker, forever."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    yield compressor.compress(bytes(10240)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    zeros = bytes(8 << 20)
    while True:
        yield compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
        await asyncio.sleep(0)


async def test_cancel_during_a_large_expansion_acts_within_a_second(host: Host) -> None:
    before, _ = await prepare(host)
    task = asyncio.ensure_future(host.restore_workdir(_endless_zeros()))
    await asyncio.sleep(1.5)
    assert not task.done()
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    assert await listing(host) == before


# ------------------------------------------------------------------ finding 6: cancellation


async def test_cancelled_restore_leaves_old_or_new_complete(host: Host) -> None:
    new = tar_bytes(lambda t: [add(t, f"new/{i:04d}", data=b"n" * 3000) for i in range(600)])
    chunks = [new[i : i + 8192] for i in range(0, len(new), 8192)]
    before, _ = await prepare(host)

    async def paced() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(0.002)

    started = time.monotonic()
    await host.restore_workdir(paced())
    whole = time.monotonic() - started
    after = await listing(host)
    assert len(after) == 601
    outcomes = set()
    for fraction in (0.05, 0.3, 0.6, 0.85, 0.95, 0.99, 1.05):
        await host.restore_workdir(
            from_list([tar_bytes(lambda t: add(t, "old/keep.txt", data=b"old content"))])
        )
        previous = await listing(host)
        task = asyncio.ensure_future(host.restore_workdir(paced()))
        await asyncio.sleep(whole * fraction)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # (late fractions: it may have finished first)
        now = await listing(host)
        assert now in (previous, after), fraction
        outcomes.add("old" if now == previous else "new")
        leftovers = await host.run(["ls", "-A", host.taskdir])
        assert leftovers.stdout.split() == ["workdir"]
    assert "old" in outcomes
    assert before  # the first old workdir had content: the swap replaced a real folder


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
async def test_long_names_and_link_targets_restore(host: Host, fmt: int) -> None:
    deep = "/".join([f"segment-{i:02d}-" + "x" * 20 for i in range(8)])  # ~240 characters

    def build(tar: tarfile.TarFile) -> None:
        add(tar, f"{deep}/file.txt", data=b"deep")
        add(tar, "short", tarfile.SYMTYPE, linkname=f"{deep}/file.txt")
        add(tar, f"{deep}/hard.txt", tarfile.LNKTYPE, linkname=f"{deep}/file.txt")

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        build(tar)
    await host.restore_workdir(from_list([gzip.compress(buffer.getvalue(), 1)]))
    for name in ("short", f"{deep}/hard.txt"):
        assert await host.fetch_bytes_from_host(f"{host.workdir}/{name}") == b"deep"


# ------------------------------------------------------------------ red team (second pass)


def _pax_record(text: bytes) -> bytes:
    """One pax record ``<len> <text>``; ``text`` carries its own key, value and newline."""
    length = len(text) + 2
    while len(str(length)) + 1 + len(text) != length:
        length = len(str(length)) + 1 + len(text)
    return str(length).encode() + b" " + text


def _raw_header(name: str, kind: bytes, size: int = 0, linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, linkname
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pax_member(records: bytes, name: str, kind: bytes, linkname: str = "") -> bytes:
    pax = _raw_header("PaxHeader", tarfile.XHDTYPE, len(records))
    return pax + records + bytes(-len(records) % 512) + _raw_header(name, kind, linkname=linkname)


@pytest.mark.parametrize("blanks", [b" ", b"\t"], ids=["two-blanks", "blank-tab"])
async def test_a_pax_keyword_tar_reads_differently_is_refused(host: Host, blanks: bytes) -> None:
    # GNU tar skips blanks around a pax keyword: read leniently, " linkpath" hid a link out.
    records = _pax_record(blanks + b"path=s\n") + _pax_record(blanks + b"linkpath=../../outside\n")
    archive = gzip.compress(_pax_member(records, "innocent", tarfile.SYMTYPE, "ok") + bytes(1024))
    await assert_refused_changes_nothing(host, archive, match="malformed pax header")


async def test_a_pax_size_in_other_digits_is_refused(host: Host) -> None:
    records = _pax_record("size=\u0661\u0660\u0662\u0664\n".encode())
    archive = gzip.compress(_pax_member(records, "f", tarfile.REGTYPE) + bytes(1024))
    await assert_refused_changes_nothing(host, archive, match="malformed pax size")


@pytest.mark.timeout(30)
async def test_a_link_chain_that_doubles_at_each_link_is_refused_at_once(host: Host) -> None:
    # b1 -> a/a, b2 -> b1/b1, ... : resolving b34 would follow 2^34 links (a depth of only 34).
    def build(tar: tarfile.TarFile) -> None:
        add(tar, "a", tarfile.SYMTYPE, linkname=".")
        previous = "a"
        for k in range(1, 35):
            add(tar, f"b{k}", tarfile.SYMTYPE, linkname=f"{previous}/{previous}")
            previous = f"b{k}"

    started = time.monotonic()
    await assert_refused_changes_nothing(host, tar_bytes(build), match="too many links")
    assert time.monotonic() - started < 10


async def test_an_overlong_name_is_refused(host: Host) -> None:
    def build(tar: tarfile.TarFile) -> None:
        add(tar, "a/" * 24000 + "f", data=b"x")

    await assert_refused_changes_nothing(host, tar_bytes(build), match="longer than")


async def test_a_refused_archive_with_a_read_only_folder_leaves_no_staging(host: Host) -> None:
    def build(tar: tarfile.TarFile) -> None:
        add(tar, "ro", tarfile.DIRTYPE, mode=0o500)
        add(tar, "ro/inner.txt", data=b"x")
        add(tar, "../evil", data=b"x")

    await assert_refused_changes_nothing(host, tar_bytes(build))
    entries = await host.run(["ls", "-A", host.taskdir])
    assert entries.stdout.split() == ["workdir"]  # no staging folder left beside it
