"""What only the local host has: no connection needed, private taskdirs, inotify bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from optio_host import HostNotConnected, LocalHost, make_host

pytestmark = pytest.mark.timeout(30)


async def test_make_host_without_taskdir_makes_and_removes_a_private_one() -> None:
    async with make_host(ssh=None) as host:
        assert isinstance(host, LocalHost)
        taskdir = host.taskdir
        assert os.path.isdir(host.workdir)
        assert os.stat(taskdir).st_mode & 0o777 == 0o700
        result = await host.run(["uname", "-a"])  # the seed example
        assert result.exit_code == 0 and result.stdout
    assert not os.path.exists(taskdir)


async def test_auto_taskdir_before_connect_is_a_clear_error() -> None:
    host = LocalHost()
    with pytest.raises(HostNotConnected, match="connect"):
        _ = host.workdir


async def test_explicit_taskdir_works_without_connect(tmp_path: os.PathLike[str]) -> None:
    host = LocalHost(os.path.join(tmp_path, "t"))
    await host.setup_workdir()
    assert (await host.run_command("pwd")).stdout.strip() == host.workdir
    await host.disconnect()
    assert os.path.isdir(host.workdir)  # a given taskdir is the caller's: never removed


async def test_relative_taskdir_is_made_absolute(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert LocalHost("rel").taskdir == os.path.join(str(tmp_path), "rel")


def _inotify_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "inotify" in os.readlink(f"/proc/self/fd/{fd}"):
                count += 1
        except OSError:
            pass
    return count


async def test_tails_release_their_inotify_instance(tmp_path: os.PathLike[str]) -> None:
    before = _inotify_fds()
    host = LocalHost(os.path.join(tmp_path, "t"))
    await host.setup_workdir()
    await host.write_text("log", "line\n")

    async def first_line() -> str:
        async with contextlib.aclosing(host.tail_file("log")) as lines:
            async for line in lines:
                return line
        return ""

    lines = await asyncio.gather(*(first_line() for _ in range(200)))
    assert lines == ["line"] * 200
    assert _inotify_fds() == before
