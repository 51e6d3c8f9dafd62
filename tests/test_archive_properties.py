"""Property: whatever archive a restore is given, nothing outside the destination changes, no link
inside it leads out, and a refused archive leaves the old content exactly as it was."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import shutil
import tarfile
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optio_host.archive import consume_workdir_archive

from ._support import from_list

pytestmark = pytest.mark.timeout(300)

_SEGMENTS = st.sampled_from(["a", "b", "c", "..", ".", "", "outside.txt", "sib"])
_NAMES = st.builds("/".join, st.lists(_SEGMENTS, min_size=1, max_size=3)) | st.sampled_from(
    ["/abs", "/", "./a"]
)
_TARGETS = st.builds("/".join, st.lists(_SEGMENTS, min_size=1, max_size=4)) | st.sampled_from(
    ["/", "/etc", "../outside.txt", "../sib", "a/../..", "."]
)
_KINDS = st.sampled_from(
    [tarfile.REGTYPE] * 4 + [tarfile.DIRTYPE] * 2 + [tarfile.SYMTYPE] * 3 + [tarfile.LNKTYPE] * 2
    + [tarfile.CHRTYPE, tarfile.FIFOTYPE]
)  # fmt: skip
_MEMBERS = st.lists(
    st.tuples(_KINDS, _NAMES, _TARGETS, st.sampled_from([0o644, 0o755, 0o4755, 0o000, 0o1777])), max_size=8
)
_DAMAGE = st.sampled_from(["none"] * 4 + ["truncate", "flip", "cut-tar"])


def _build(members: list[tuple[bytes, str, str, int]], fmt: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for kind, name, target, mode in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 86400
            data = None
            if kind == tarfile.REGTYPE:
                payload = name.encode() * 3
                info.size, data = len(payload), io.BytesIO(payload)
            elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = target
            tar.addfile(info, data)
    return buffer.getvalue()


def _damage(raw: bytes, how: str, where: int) -> bytes:
    if how == "cut-tar":
        return gzip.compress(raw[: where % max(1, len(raw))], 1)
    packed = gzip.compress(raw, 1)
    if how == "truncate":
        return packed[: where % len(packed)]
    if how == "flip":
        flipped = bytearray(packed)
        flipped[where % len(flipped)] ^= 1 << (where % 8)
        return bytes(flipped)
    return packed


def _snapshot(root: str, skip: str | None = None) -> dict[str, tuple[object, ...]]:
    """Every path under ``root`` (except ``skip`` and its contents) with what must not change."""
    seen: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(root):
        if skip is not None and folder == root:
            dirs[:] = [name for name in dirs if os.path.join(root, name) != skip]
            files = [name for name in files if os.path.join(root, name) != skip]
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            link = os.readlink(path) if os.path.islink(path) else None
            content = None
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    content = handle.read()
            seen[os.path.relpath(path, root)] = (info.st_mode, info.st_nlink, info.st_mtime_ns, link, content)
    return seen


def _links_inside(dest: str) -> None:
    root = os.path.realpath(dest)
    for folder, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                resolved = os.path.realpath(path)
                assert resolved == root or resolved.startswith(root + os.sep), (path, os.readlink(path))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=_MEMBERS, fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]), damage=_DAMAGE,
       where=st.integers(0, 1 << 20))  # fmt: skip
def test_restore_invariant(
    members: list[tuple[bytes, str, str, int]], fmt: int, damage: str, where: int
) -> None:
    with tempfile.TemporaryDirectory() as base:
        os.makedirs(os.path.join(base, "sib"))
        with open(os.path.join(base, "outside.txt"), "w") as handle:
            handle.write("outside")
        os.chmod(os.path.join(base, "outside.txt"), 0o600)
        dest = os.path.join(base, "work")
        os.makedirs(os.path.join(dest, "old"))
        with open(os.path.join(dest, "old", "keep.txt"), "w") as handle:
            handle.write("old")
        outside, old = _snapshot(base, skip=dest), _snapshot(dest)
        archive = _damage(_build(members, fmt), damage, where)
        try:
            asyncio.run(consume_workdir_archive(from_list([archive[:100], archive[100:]]), dest))
        except ValueError:
            assert _snapshot(dest) == old
        else:
            _links_inside(dest)
        assert _snapshot(base, skip=dest) == outside
        assert sorted(os.listdir(base)) == ["outside.txt", "sib", "work"]  # no staging or old copy left
        shutil.rmtree(dest, ignore_errors=True)
