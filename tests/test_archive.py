"""Workdir archives: round trips on both hosts, exclude rules, and refusal of unsafe archives."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optio_host.archive import (
    DEFAULT_WORKDIR_EXCLUDES,
    consume_workdir_archive,
    find_prune_expression,
    is_excluded,
    yield_workdir_archive,
)
from optio_host.host.base import Host

from ._support import HOSTILE_NAMES, from_list

pytestmark = pytest.mark.timeout(60)

_TREE = {
    "src/app.py": "print('hi')\n",
    "src/app.pyc": "compiled",
    "src/__pycache__/x.pyc": "cache",
    ".git/HEAD": "ref",
    "node_modules/pkg/index.js": "js",
    "docs/readme.md": "# docs\n",
    "build/out.bin": "binary",
    ".env": "SECRET=1",
}


async def _populate(host: Host) -> None:
    for path, content in _TREE.items():
        await host.write_text(path, content)
    await host.run(["chmod", "755", "src/app.py"])
    await host.run(["ln", "-s", "src/app.py", "link-to-app"])


async def _listing(host: Host) -> set[str]:
    result = await host.run(["find", ".", "-mindepth", "1", "-printf", "%P\\n"])
    return set(result.stdout.split("\n")) - {""}


async def _archive_bytes(host: Host, exclude: list[str] | None) -> bytes:
    return b"".join([chunk async for chunk in host.archive_workdir(exclude)])


def _names(archive: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {member.name.removeprefix("./") for member in tar.getmembers()}


async def test_default_excludes(host: Host) -> None:
    await _populate(host)
    names = _names(await _archive_bytes(host, None))
    assert names == {
        "src",
        "src/app.py",
        "docs",
        "docs/readme.md",
        "build",
        "build/out.bin",
        ".env",
        "link-to-app",
    }


async def test_empty_exclude_list_keeps_everything(host: Host) -> None:
    await _populate(host)
    names = _names(await _archive_bytes(host, []))
    assert names == await _listing(host)


async def test_custom_excludes_replace_the_defaults(host: Host) -> None:
    await _populate(host)
    names = _names(await _archive_bytes(host, ["build", "docs/*.md"]))
    assert ".git/HEAD" in names and "src/app.pyc" in names  # defaults not merged in
    assert not any(name.startswith("build") for name in names)
    assert "docs/readme.md" not in names and "docs" in names


async def test_round_trip_restores_contents_modes_and_links(host: Host) -> None:
    await _populate(host)
    for name in HOSTILE_NAMES:
        await host.write_text(f"odd/{name}", name)
    archive = await _archive_bytes(host, [])
    before = await _listing(host)
    await host.write_text("extra-file-after-archive.txt", "must disappear")
    await host.restore_workdir(from_list([archive[i : i + 1000] for i in range(0, len(archive), 1000)]))
    assert await _listing(host) == before
    assert (await host.run(["stat", "-c", "%a", "src/app.py"])).stdout.strip() == "755"
    assert (await host.run(["readlink", "link-to-app"])).stdout.strip() == "src/app.py"
    for name in HOSTILE_NAMES:
        assert await host.fetch_bytes_from_host(f"{host.workdir}/odd/{name}") == name.encode()


async def test_archive_of_one_host_restores_on_the_other(local_host: Host, remote_host: Host) -> None:
    await _populate(remote_host)
    await local_host.restore_workdir(remote_host.archive_workdir([]))
    assert await _listing(local_host) == await _listing(remote_host)
    await remote_host.write_text("new-on-remote", "x")
    await remote_host.restore_workdir(local_host.archive_workdir(None))
    assert ".git" not in await _listing(remote_host)
    assert "new-on-remote" not in await _listing(remote_host)


# ------------------------------------------------------------------ unsafe archives


def _tar(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        build(tar)
    return buffer.getvalue()


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def _device(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


UNSAFE = {
    "dotdot": lambda t: (_file(t, "ok.txt"), _file(t, "../escaped.txt")),
    "nested-dotdot": lambda t: _file(t, "a/../../escaped.txt"),
    "absolute": lambda t: _file(t, "/tmp/optio-absolute-escape.txt"),
    "symlink-escape-then-write": lambda t: (_link(t, "out", "../.."), _file(t, "out/escaped.txt")),
    "absolute-symlink": lambda t: _link(t, "etc", "/etc"),
    "symlink-to-parent": lambda t: _link(t, "up", ".."),
    "hardlink-outside": lambda t: _link(t, "hard", "../../etc/passwd", tarfile.LNKTYPE),
    "device": lambda t: _device(t, "null"),
    "replace-symlink": lambda t: (_link(t, "inner", "a"), _file(t, "inner")),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
async def test_unsafe_archives_are_refused_and_change_nothing(host: Host, case: str) -> None:
    await host.write_text("precious.txt", "keep me")
    archive = _tar(UNSAFE[case])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await host.restore_workdir(from_list([archive]))
    assert await _listing(host) == {"precious.txt"}  # staged, so nothing changed
    parent = os.path.dirname(host.taskdir)
    for name in ("escaped.txt", "optio-absolute-escape.txt"):
        assert await host.file_size(f"{parent}/{name}") is None
        assert await host.file_size(f"{host.taskdir}/{name}") is None
    assert await host.file_size("/tmp/optio-absolute-escape.txt") is None
    leftovers = await host.run(["ls", "-A", host.taskdir])
    assert leftovers.stdout.split() == ["workdir"]  # no staging folder left behind


async def test_internal_links_are_allowed(host: Host) -> None:
    def build(tar: tarfile.TarFile) -> None:
        _file(tar, "dir/file.txt", b"content")
        _link(tar, "dir/alias.txt", "file.txt")
        _link(tar, "top-alias", "dir/file.txt")
        _link(tar, "hard.txt", "dir/file.txt", tarfile.LNKTYPE)

    await host.restore_workdir(from_list([_tar(build)]))
    for name in ("dir/alias.txt", "top-alias", "hard.txt"):
        assert await host.fetch_bytes_from_host(f"{host.workdir}/{name}") == b"content"


async def test_garbage_is_refused(host: Host) -> None:
    await host.write_text("precious.txt", "keep me")
    with pytest.raises(ValueError):
        await host.restore_workdir(from_list([b"this is not a tar archive" * 100]))
    assert await _listing(host) == {"precious.txt"}


# ------------------------------------------------------------------ the standalone functions


async def test_yield_and_consume_workdir_archive(tmp_path: os.PathLike[str]) -> None:
    source = os.path.join(tmp_path, "src")
    os.makedirs(os.path.join(source, "a", "__pycache__"))
    with open(os.path.join(source, "a", "f.txt"), "w") as handle:
        handle.write("f")
    with open(os.path.join(source, "a", "__pycache__", "c.pyc"), "w") as handle:
        handle.write("c")
    dest = os.path.join(tmp_path, "dest")
    await consume_workdir_archive(yield_workdir_archive(source), dest)
    assert sorted(os.listdir(os.path.join(dest, "a"))) == ["f.txt"]


async def test_archive_streams_in_bounded_chunks(tmp_path: os.PathLike[str]) -> None:
    source = os.path.join(tmp_path, "big")
    os.makedirs(source)
    with open(os.path.join(source, "random.bin"), "wb") as handle:
        handle.write(os.urandom(8 * 1024 * 1024))
    sizes = [len(chunk) async for chunk in yield_workdir_archive(source)]
    assert len(sizes) > 8 and max(sizes) <= 1024 * 1024


def test_default_excludes_are_the_documented_list() -> None:
    assert DEFAULT_WORKDIR_EXCLUDES == [".git", "node_modules", "__pycache__", ".venv", "*.pyc", ".DS_Store"]


@pytest.mark.parametrize(
    ("path", "patterns", "expected"),
    [
        ("a/.git/config", [".git"], True),
        ("x.pyc", ["*.pyc"], True),
        ("deep/er/x.pyc", ["*.pyc"], True),
        ("docs/readme.md", ["docs/*.md"], True),
        ("other/docs/readme.md", ["docs/*.md"], False),
        ("gitignore", [".git"], False),
        ("a/b", [], False),
    ],
)
def test_is_excluded(path: str, patterns: list[str], expected: bool) -> None:
    assert is_excluded(path, patterns) is expected


_SEGMENTS = ["a", "b", "ab", ".h", "x.py", "x.pyc", "d d", "[x]"]
_PATTERNS = st.lists(
    st.sampled_from(["a", "*.pyc", ".h", "a/*", "*b", "d d", "[x]", "[!a]", "?", "a/b", "*/x.py", "x.*"]),
    max_size=3,
)


@settings(max_examples=40, deadline=None)
@given(patterns=_PATTERNS)
def test_find_expression_selects_what_is_excluded_selects(
    tmp_path_factory: pytest.TempPathFactory, patterns: list[str]
) -> None:
    root = str(tmp_path_factory.mktemp("tree"))
    paths = []
    for first in _SEGMENTS:
        for second in ("", *_SEGMENTS[:4]):
            relative = os.path.join(first, second) if second else first
            paths.append(relative)
    for relative in paths:
        full = os.path.join(root, relative)
        if relative.count("/") == 0:
            os.makedirs(full, exist_ok=True)
        else:
            with open(full, "w"):
                pass
    expected = set()
    for relative in paths:
        parts = relative.split("/")
        if not any(is_excluded("/".join(parts[: i + 1]), patterns) for i in range(len(parts))):
            expected.add(relative)
    prune = ["(", *find_prune_expression(patterns), ")", "-prune", "-o"] if patterns else []
    found = subprocess.run(
        ["find", ".", "-mindepth", "1", *prune, "-printf", "%P\\n"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert set(found) - {""} == expected


@pytest.mark.parametrize(
    ("tar_says", "kind"),
    [
        # What GNU tar printed when the red team's 20 MiB tmpfs filled up during a restore.
        ("tar: blob.bin: Wrote only 4608 of 10240 bytes tar: Exiting with failure status", OSError),
        ("tar: f: Cannot write: No space left on device", OSError),
        ("tar: f: Cannot open: Disk quota exceeded", OSError),
        ("tar: f: Cannot open: Read-only file system", OSError),
        ("tar: Skipping to next header tar: Exiting with failure status", ValueError),
    ],
)
def test_a_full_disk_is_an_os_error_not_a_refused_archive(tar_says: str, kind: type[Exception]) -> None:
    from optio_host.archive import unpack_failure

    failure = unpack_failure(f"tar refused the archive (exit 2): {tar_says}", "/w/.staging")
    assert type(failure) is kind
    assert tar_says in str(failure)
    if kind is OSError:
        assert "/w/.staging" in str(failure) and "disk is full" in str(failure)
