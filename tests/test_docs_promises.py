"""Promises the docs make about the API, checked on both hosts."""

from __future__ import annotations

import posixpath

import pytest

from optio_host import Host, LocalHost, RemoteHost
from optio_host.testing import SshServer


async def test_put_file_to_host_says_whether_it_wrote(host: Host) -> None:
    target = host.workdir + "/skip.txt"
    calls: list[tuple[float | None, str | None]] = []
    assert await host.put_file_to_host(b"one", target, skip_if_unchanged=True) is True
    assert (
        await host.put_file_to_host(
            b"one", target, skip_if_unchanged=True, progress_cb=lambda p, m: calls.append((p, m))
        )
        is False
    )
    assert calls == [(None, "already up to date")]
    assert await host.put_file_to_host(b"one", target) is True  # no skip asked: always written


@pytest.mark.parametrize("kind", ["local", "remote"])
async def test_run_before_setup_workdir_says_to_call_it(
    kind: str, tmp_path: object, optio_sshd: SshServer
) -> None:
    made: LocalHost | RemoteHost
    if kind == "local":
        made = LocalHost(posixpath.join(str(tmp_path), "task"))
    else:
        made = RemoteHost(optio_sshd.ssh_config(), posixpath.join(optio_sshd.scratch, f"never-{kind}"))
    async with made as host:
        with pytest.raises(FileNotFoundError, match=r"setup_workdir\(\)") as caught:
            await host.run(["true"])
        assert host.workdir in str(caught.value)
        await host.setup_workdir()
        assert (await host.run(["pwd"])).stdout.strip() == host.workdir
        # A cwd of the caller's that is missing is not the workdir: no setup_workdir hint.
        with pytest.raises(FileNotFoundError) as other:
            await host.run(["true"], cwd="/nonexistent-folder")
        assert "setup_workdir" not in str(other.value)
