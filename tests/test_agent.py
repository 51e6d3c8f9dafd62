"""Keys from an ssh-agent are used when neither SSHConfig nor ~/.ssh/config names one."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess

import pytest

from optio_host import SSHConfig, make_host
from optio_host.testing.sshd import SshServer

pytestmark = pytest.mark.timeout(60)


async def test_agent_keys_are_used(
    optio_sshd: SshServer, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent/ssh-add are not installed")
    socket_path = os.path.join(tmp_path, "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", socket_path], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(socket_path):
                break
            await asyncio.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": socket_path}
        subprocess.run(["ssh-add", "-q", optio_sshd.key_path], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", socket_path)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/config, no default keys
        config = SSHConfig(
            host=optio_sshd.host,
            user=optio_sshd.user,
            key_path="",
            port=optio_sshd.port,
            known_hosts=optio_sshd.known_hosts,
            host_key_policy="strict",
        )
        async with make_host(ssh=config) as host:
            assert (await host.run(["id", "-un"])).stdout.strip() == optio_sshd.user
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(5)
