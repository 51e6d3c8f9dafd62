"""One containment rule: the CLI, HookContext, the download task and the worker agree on any path.

``optio_host.worker`` holds the rule (``resolve_from``, ``resolve_inside``, ``path_inside``,
``home_relative``); the others call it. These properties check that, for any path typed,
their answers are the worker's.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from optio_host.cli._paths import host_path
from optio_host.cli._session import shown_path
from optio_host.context import HookContext
from optio_host.download import _Download
from optio_host.worker import home_relative, path_inside, resolve_from, resolve_inside

pytestmark = pytest.mark.timeout(120)

_SEGMENT = st.sampled_from(["a", "b c", ".", "..", "", "~", "~x", "-x", "$HOME", "d\nn", "..e", "ab"])
_TYPED = st.builds(
    lambda lead, segments, trailing: lead + "/".join(segments) + trailing,
    st.sampled_from(["", "", "/", "//", "~", "~/", "~//", "./", "../"]),
    st.lists(_SEGMENT, min_size=0, max_size=6),
    st.sampled_from(["", "/"]),
).filter(bool)
_ROOT = st.sampled_from(["/home/me", "/", "/srv/x y", "/home/me/a/b", "/home/m"])


class _Host:
    """Just enough of a host for the path rules: a home folder and a workdir."""

    def __init__(self, home: str, workdir: str) -> None:
        self.home = home
        self.workdir = workdir

    async def resolve_host_home(self) -> str:
        return self.home


def _cli(home: str, typed: str, *, local: bool = False) -> str:
    return asyncio.run(host_path(_Host(home, "/unused"), typed, local=local))  # type: ignore[arg-type]


def _hook(home: str, workdir: str, typed: str) -> str:
    return asyncio.run(HookContext(None, _Host(home, workdir))._resolve(typed))  # type: ignore[arg-type]


@given(typed=_TYPED, home=_ROOT)
@example(typed="../me2/x", home="/home/me")  # a sibling whose name starts like the home's
@example(typed="~//etc/passwd", home="/home/me")
def test_the_cli_rule_is_the_worker_rule(typed: str, home: str) -> None:
    cli = _cli(home, typed)
    rest = home_relative(typed)
    assert cli == resolve_from(home, rest if rest is not None else typed)
    if rest is not None:
        return  # ~ and ~/... are the home, resolved by the same rule ("~/../x" may leave it, as in ssh)
    try:
        bounded = resolve_inside(home, typed)
    except ValueError:
        assert not path_inside(cli, home)  # refused by the worker exactly when the CLI leaves home
    else:
        assert bounded == cli and path_inside(cli, home)


@given(typed=_TYPED, home=_ROOT, workdir=_ROOT)
def test_hook_context_and_the_cli_agree_wherever_both_accept(typed: str, home: str, workdir: str) -> None:
    try:
        hooked = _hook(home, workdir, typed)
    except ValueError:
        # HookContext is stricter for workdir-relative paths (no '..' segment, not the workdir
        # itself, no ~user), never more permissive than the worker's bound.
        relative = not typed.startswith(("/", "~"))
        if relative and ".." not in typed.split("/"):
            assert resolve_from(workdir, typed) == posixpath.normpath(workdir)
        return
    if typed.startswith("/"):
        assert hooked == typed  # used as given
    elif home_relative(typed) is not None:
        assert hooked == _cli(home, typed)  # ~ means the same in both
    else:
        # Workdir-relative: what the CLI would resolve against the workdir, and inside it.
        assert hooked == _cli(workdir, typed) == resolve_inside(workdir, typed)
        assert hooked != posixpath.normpath(workdir)


@given(typed=_TYPED.filter(lambda typed: not typed.startswith("~")))
def test_a_local_path_is_the_worker_rule_from_the_current_folder(typed: str) -> None:
    local = _cli("/home/me", typed, local=True)
    assert local == resolve_from(os.getcwd(), typed) == os.path.abspath(typed)  # as before


def test_tilde_double_slash_stays_in_the_home_in_both() -> None:
    # Fixed: "~//etc/passwd" used to resolve to /etc/passwd (posixpath.join of home and "/etc/passwd");
    # a shell reads it as $HOME/etc/passwd.
    assert _cli("/home/me", "~//etc/passwd") == "/home/me/etc/passwd"
    assert _hook("/home/me", "/w", "~//etc/passwd") == "/home/me/etc/passwd"
    assert _cli("/home/me", "~") == _cli("/home/me", "~/") == _hook("/home/me", "/w", "~") == "/home/me"


_NAME = st.sampled_from(["f", "a", "..", ".", "", "w", "w2", "b c"])


@given(
    workdir=st.sampled_from(["/w", "/w/", "/w/x", "/", "/w2", "/a/../w"]),
    lead=st.sampled_from(["/w/", "/w2/", "/", "/w/../", "//w/", "/w/./x/"]),
    names=st.lists(_NAME, min_size=0, max_size=4),
)
@example(workdir="/w/", lead="/w/", names=[])  # fixed: a workdir with a trailing slash was unbounded
def test_the_download_walks_from_the_workdir_exactly_when_the_worker_rule_says_inside(
    workdir: str, lead: str, names: list[str]
) -> None:
    target = lead + "/".join(names) + ("/" if names else "") + "file.bin"
    download = _Download("http://127.0.0.1/x", target, _Host("/home/me", workdir), True, None, ("http",))  # type: ignore[arg-type]
    root, count, *parts = download._folder()
    folder = posixpath.dirname(posixpath.normpath(target))
    inside = path_inside(folder, workdir)
    assert root == (posixpath.normpath(workdir) if inside else "/")
    assert int(count) == len(parts) and ".." not in parts and "." not in parts
    assert _canonical(posixpath.join(root, *parts)) == _canonical(folder)


def _canonical(path: str) -> str:
    # POSIX lets "//w" differ from "/w"; Linux does not, and the walk from "/" names "w".
    return "/" + posixpath.normpath(path).lstrip("/")


def test_shown_path_is_relative_only_inside_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path.resolve() / "a"
    here.mkdir()
    tmp_path = here.parent
    monkeypatch.chdir(here)
    assert shown_path(str(here / "out" / "f.txt")) == os.path.join("out", "f.txt")
    assert shown_path(str(here / "..f")) == "..f"  # a name starting with '..' is still inside
    assert shown_path(str(here)) == "."
    for outside in (tmp_path / "ab" / "f", tmp_path / "f"):  # a sibling sharing the prefix, the parent
        assert shown_path(str(outside)) == str(outside)


@pytest.mark.parametrize(
    ("root", "path", "match"),
    [
        ("relative", "x", "must be an absolute path"),
        ("/w", "", "empty or contains a NUL"),
        ("/w", "a\0b", "empty or contains a NUL"),
    ],
)
def test_the_rule_refuses_what_it_cannot_place(root: str, path: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_from(root, path)
    with pytest.raises(ValueError, match=match):
        resolve_inside(root, path)


def test_home_relative_reads_tilde_as_a_shell_does() -> None:
    assert [home_relative(path) for path in ("~", "~/", "~/a/b", "~//a", "~x", "a/~", "/~")] == [
        ".",
        ".",
        "a/b",
        "a",
        None,
        None,
        None,
    ]
