"""pytest plugin (registered as ``optio_host`` through the ``pytest11`` entry point).

Fixtures:

- ``optio_sshd`` (session): a real OpenSSH server on 127.0.0.1 (``SshServer``).
  Skipped with a reason when ``sshd`` is not installed, unless ``CI=true`` or
  ``OPTIO_HOST_REQUIRE_SSHD=1``, in which case the test fails instead.
- ``local_host`` / ``remote_host``: connected hosts with a fresh taskdir and a
  ready workdir, disconnected afterwards.
- ``host``: parametrised over both (ids ``local`` and ``remote``).

No configuration needed: an ``async def`` test that takes one of these fixtures
as an argument is marked ``asyncio`` here, so it runs without
``asyncio_mode = auto``. ``-p optio_host.testing`` loads the plugin where
plugin autoloading is off. Run as root, the remote fixtures log in as a
dedicated account (see ``optio_host.testing.sshd``); the run's header says so.
"""

from __future__ import annotations

import inspect
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from optio_host.host.local import LocalHost
from optio_host.host.remote import RemoteHost
from optio_host.testing.sshd import SshdUnavailable, SshServer, account_note

__all__ = ["host", "local_host", "optio_sshd", "remote_host", "sshd_required"]

_task_numbers = itertools.count()

if TYPE_CHECKING:
    import pytest_asyncio
    from pytest_asyncio import fixture as _async_fixture
else:
    try:
        import pytest_asyncio

        _async_fixture = pytest_asyncio.fixture
    except ImportError:  # this plugin loads in every pytest run once optio-host is installed: never break it

        def _async_fixture(func: Any = None, **kwargs: Any) -> Any:
            """Without pytest-asyncio, the host fixtures exist but fail with what to install."""

            def wrap(async_func: Any) -> Any:
                @pytest.fixture(name=async_func.__name__, **kwargs)
                def missing(request: pytest.FixtureRequest) -> None:
                    pytest.fail(
                        f"{async_func.__name__}: optio-host's host fixtures need pytest-asyncio "
                        "(pip install pytest-asyncio)"
                    )

                return missing

            return wrap(func) if func is not None else wrap

        pytest_asyncio = None

#: The fixtures that make an ``async def`` test an asyncio test by themselves.
_HOST_FIXTURES = frozenset({"host", "local_host", "remote_host", "optio_sshd"})


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str, obj: Any) -> None:
    """Mark ``async def`` tests that take our fixtures ``asyncio`` (no ``asyncio_mode = auto`` needed).

    Runs before pytest-asyncio looks at the test, so its strict mode sees the mark.
    """
    if pytest_asyncio is None or not inspect.iscoroutinefunction(obj) or not collector.funcnamefilter(name):
        return
    if any(mark.name == "asyncio" for mark in getattr(obj, "pytestmark", [])):
        return
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return
    if _HOST_FIXTURES.intersection(parameters):
        pytest.mark.asyncio(obj)


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say which account the remote fixtures log in as when that is not the current user."""
    return account_note()


#: How long a test's command channels get to close after it ended, before they count as leaked.
CHANNEL_CLOSE_WAIT = 5.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "optio_host_check_channels",
        type="bool",
        default=False,
        help="fail a test that leaves a RemoteHost command channel (an SSH session slot) open",
    )


async def _release(request: pytest.FixtureRequest, host: LocalHost | RemoteHost) -> None:
    """Disconnect ``host``; first, if asked to, fail the test when it leaked a session slot."""
    try:
        if isinstance(host, RemoteHost) and request.config.getini("optio_host_check_channels"):
            leaked = await host.wait_channels_closed(CHANNEL_CLOSE_WAIT)
            if leaked or host.slots_in_use:
                pytest.fail(
                    f"{len(leaked)} command channel(s) still open {CHANNEL_CLOSE_WAIT:g}s after the "
                    f"test ({host.slots_in_use} session slot(s) in use): {leaked}. End each process "
                    "(read its output to the end, or terminate_subprocess) before the test returns.",
                    pytrace=False,
                )
    finally:
        await host.disconnect()


def sshd_required() -> bool:
    """Whether a missing sshd must fail the run rather than skip (CI, or asked for)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get(
        "OPTIO_HOST_REQUIRE_SSHD", ""
    ) not in ("", "0")


@pytest.fixture(scope="session")
def optio_sshd() -> Iterator[SshServer]:
    """A real OpenSSH ``sshd`` on loopback for the whole test session."""
    try:
        # Its own folder under the system temp dir: pytest's tmp folders are private to
        # the current user, and the server may log in as another (see SshServer).
        server = SshServer()
    except SshdUnavailable as exc:
        if sshd_required():
            pytest.fail(f"{exc}; remote tests must run here (CI=true / OPTIO_HOST_REQUIRE_SSHD)")
        pytest.skip(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.close()


def _fresh_taskdir(base: Path | str) -> str:
    return os.path.join(str(base), f"task-{next(_task_numbers)}")


@_async_fixture
async def local_host(tmp_path: Path) -> AsyncIterator[LocalHost]:
    """A connected ``LocalHost`` with a fresh taskdir and workdir."""
    host = LocalHost(_fresh_taskdir(tmp_path))
    await host.connect()
    await host.setup_workdir()
    try:
        yield host
    finally:
        await host.disconnect()


async def _remote(server: SshServer) -> RemoteHost:
    host = RemoteHost(server.ssh_config(), _fresh_taskdir(server.scratch))
    await host.connect()
    await host.setup_workdir()
    return host


@_async_fixture
async def remote_host(request: pytest.FixtureRequest, optio_sshd: SshServer) -> AsyncIterator[RemoteHost]:
    """A connected ``RemoteHost`` (to ``optio_sshd``) with a fresh taskdir and workdir."""
    host = await _remote(optio_sshd)
    try:
        yield host
    finally:
        await _release(request, host)


@_async_fixture(params=["local", "remote"])
async def host(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LocalHost | RemoteHost]:
    """Each test using it runs once on a ``LocalHost`` and once on a ``RemoteHost``."""
    made: LocalHost | RemoteHost
    if request.param == "local":
        made = LocalHost(_fresh_taskdir(tmp_path))
        await made.connect()
        await made.setup_workdir()
    else:
        made = await _remote(request.getfixturevalue("optio_sshd"))
    try:
        yield made
    finally:
        await _release(request, made)
