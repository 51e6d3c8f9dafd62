"""The Host contract is documented once, on the interface, and both hosts show it as their own."""

from __future__ import annotations

import inspect
import pydoc
from pathlib import Path
from typing import Any

import pytest

from optio_host import Host, LocalHost, RemoteHost, SSHConfig
from optio_host.host._core import HostCore

pytestmark = pytest.mark.timeout(30)

#: Every member of the protocol: its public names and the two it has for ``async with``.
MEMBERS = sorted(
    name for name in vars(Host) if not name.startswith("_") or name in ("__aenter__", "__aexit__")
)
HOSTS = [LocalHost, RemoteHost]

#: The 0.1.2 methods and the later ones the SPEC names: the walk above must find them all.
_SPEC_NAMES = {
    "taskdir", "workdir", "connect", "disconnect", "setup_workdir", "write_text", "establish_tunnel",
    "tail_file", "cleanup_taskdir", "launch_subprocess", "terminate_subprocess", "remove_file",
    "put_file_to_host", "fetch_bytes_from_host", "run_command", "resolve_host_home", "archive_workdir",
    "restore_workdir", "run", "glob", "fetch_file_from_host", "realpath", "tail_bytes", "launch_detached",
    "__aenter__", "__aexit__",
}  # fmt: skip


def _own_doc(owner: type, name: str) -> str | None:
    """The docstring ``owner`` itself writes for ``name`` (a property's is its getter's)."""
    value = vars(owner)[name]
    if isinstance(value, property):
        value = value.fget
    doc: str | None = getattr(value, "__doc__", None)
    return doc


def _defined_in(cls: type, name: str) -> type:
    return next(owner for owner in cls.__mro__ if name in vars(owner))


def test_the_member_list_is_the_whole_protocol() -> None:
    assert set(MEMBERS) >= _SPEC_NAMES
    assert all(callable(vars(Host)[name]) or isinstance(vars(Host)[name], property) for name in MEMBERS)


@pytest.mark.parametrize("name", MEMBERS)
def test_every_member_carries_its_contract_on_the_interface(name: str) -> None:
    doc = _own_doc(Host, name)
    assert doc is not None and len(doc.strip()) > 20, f"Host.{name} has no contract docstring"


@pytest.mark.parametrize("cls", HOSTS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("name", MEMBERS)
def test_both_hosts_implement_every_member(cls: type, name: str) -> None:
    # HostCore subclasses the protocol: a member a host forgot would be Host's empty body.
    assert getattr(cls, name) is not getattr(Host, name)
    assert _defined_in(cls, name) not in (Host, *Host.__mro__)


@pytest.mark.parametrize("cls", HOSTS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("name", MEMBERS)
def test_hosts_show_the_contract_and_keep_no_copy(cls: type, name: str) -> None:
    assert inspect.getdoc(getattr(cls, name)) == inspect.getdoc(getattr(Host, name))
    for owner in cls.__mro__[: cls.__mro__.index(Host)]:
        if name in vars(owner):
            assert _own_doc(owner, name) is None, (
                f"{owner.__module__}.{owner.__qualname__}.{name} repeats or rewrites the contract: "
                "document it on Host (a note on how this host does it is a # comment)"
            )


def test_help_shows_the_contract() -> None:
    first_line = (inspect.getdoc(Host.run) or "-").splitlines()[0]
    assert first_line in pydoc.render_doc(LocalHost.run, renderer=pydoc.plaintext)
    upload = (inspect.getdoc(Host.put_file_to_host) or "-").splitlines()[0]
    assert upload in pydoc.render_doc(RemoteHost.put_file_to_host, renderer=pydoc.plaintext)


def test_hosts_are_hosts(tmp_path: Path) -> None:
    # Given a taskdir: without one, reading ``taskdir`` (as isinstance does) raises before connect().
    hosts: list[Any] = [LocalHost(tmp_path), RemoteHost(SSHConfig("127.0.0.1", "nobody", ""), "/tmp/t")]
    for made in hosts:
        assert isinstance(made, Host)
        assert isinstance(made, HostCore)
        assert Host in type(made).__mro__


def test_a_structural_host_needs_no_subclassing() -> None:
    # The protocol stays structural: an object with every member is a Host without inheriting.
    methods = {name: _nothing for name in MEMBERS if name not in ("taskdir", "workdir")}
    fake = type("Fake", (), {**methods, "taskdir": "/t", "workdir": "/t/workdir"})
    assert isinstance(fake(), Host)
    del methods["run"]
    assert not isinstance(type("Partial", (), methods)(), Host)


def _nothing(*args: object, **kwargs: object) -> None:
    return None
