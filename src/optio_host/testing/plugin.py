"""pytest plugin (registered as ``optio_host`` through the ``pytest11`` entry point).

Fixtures:

- ``optio_sshd`` (session): a real OpenSSH server on 127.0.0.1 (``SshServer``).
  Skipped with a reason when ``sshd`` is not installed, unless ``CI=true`` or
  ``OPTIO_HOST_REQUIRE_SSHD=1``, in which case the test fails instead.
- ``local_host`` / ``remote_host``: connected hosts with a fresh taskdir and a
  ready workdir, disconnected afterwards.
- ``host``: parametrised over both (ids ``local`` and ``remote``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from optio_host.host.local import LocalHost
from optio_host.host.remote import RemoteHost
from optio_host.testing.sshd import SshdUnavailable, SshServer

__all__ = ["host", "local_host", "optio_sshd", "remote_host", "sshd_required"]

_task_numbers = itertools.count()

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


@pytest_asyncio.fixture
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


@pytest_asyncio.fixture
async def remote_host(request: pytest.FixtureRequest, optio_sshd: SshServer) -> AsyncIterator[RemoteHost]:
    """A connected ``RemoteHost`` (to ``optio_sshd``) with a fresh taskdir and workdir."""
    host = await _remote(optio_sshd)
    try:
        yield host
    finally:
        await _release(request, host)


@pytest_asyncio.fixture(params=["local", "remote"])
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
