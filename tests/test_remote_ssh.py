"""What only a remote host has: host keys, authentication, SSH config, channel limits, secrecy."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

from optio_host import (
    AuthenticationFailed,
    HostConnectionError,
    HostKeyError,
    HostNotConnected,
    RemoteHost,
    SSHConfig,
    make_host,
)
from optio_host.testing.sshd import SshServer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def server() -> object:
    """A private sshd per test, for tests that restart it or change its keys."""
    with SshServer() as sshd:
        yield sshd


async def _whoami(config: SSHConfig) -> str:
    async with make_host(ssh=config) as host:
        return (await host.run(["id", "-un"])).stdout.strip()


# ------------------------------------------------------------------ host keys


async def test_strict_refuses_an_unknown_key_and_names_fingerprint_and_fix(
    server: SshServer, tmp_path: object
) -> None:
    empty = os.path.join(str(tmp_path), "known_hosts")
    with pytest.raises(HostKeyError) as caught:
        await _whoami(server.ssh_config(known_hosts=empty))
    message = str(caught.value)
    fingerprint = caught.value.fingerprint
    assert fingerprint is not None and fingerprint.startswith("SHA256:")
    assert fingerprint in message and server.host in message and str(server.port) in message
    assert "accept-new" in message and "OPTIO_HOST_KEY_POLICY" in message and "known_hosts" in message
    assert isinstance(caught.value, ConnectionError)
    assert not os.path.exists(empty)  # strict never writes


async def test_strict_accepts_a_known_key(server: SshServer) -> None:
    assert await _whoami(server.ssh_config()) == server.user


async def test_default_policy_is_strict(
    server: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPTIO_HOST_KEY_POLICY", raising=False)
    config = server.ssh_config(host_key_policy=None, known_hosts=os.path.join(str(tmp_path), "kh"))
    with pytest.raises(HostKeyError):
        await _whoami(config)


async def test_accept_new_records_then_refuses_a_changed_key(server: SshServer, tmp_path: object) -> None:
    known = os.path.join(str(tmp_path), "ssh", "known_hosts")
    config = server.ssh_config(host_key_policy="accept-new", known_hosts=known)
    assert await _whoami(config) == server.user
    with open(known) as handle:
        recorded = handle.read()
    assert f"[{server.host}]:{server.port}" in recorded
    assert server.host_public_key().split()[1] in recorded
    assert await _whoami(config) == server.user  # known now: accepted again
    server.restart(new_host_key=True)  # same port, another host key
    with pytest.raises(HostKeyError) as caught:
        await _whoami(config)
    assert "CHANGED" in str(caught.value) and "ssh-keygen -R" in str(caught.value)
    with open(known) as handle:
        assert handle.read() == recorded  # the changed key was not recorded


async def test_environment_sets_the_default_policy(
    server: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = os.path.join(str(tmp_path), "kh")
    monkeypatch.setenv("OPTIO_HOST_KEY_POLICY", "accept-new")
    assert await _whoami(server.ssh_config(host_key_policy=None, known_hosts=known)) == server.user
    assert os.path.exists(known)
    # An explicit value beats the environment.
    with pytest.raises(HostKeyError):
        await _whoami(server.ssh_config(host_key_policy="strict", known_hosts=known + ".other"))


async def test_policy_off_checks_nothing(server: SshServer, tmp_path: object) -> None:
    config = server.ssh_config(host_key_policy="off", known_hosts=os.path.join(str(tmp_path), "none"))
    assert await _whoami(config) == server.user


def test_invalid_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="host_key_policy"):
        SSHConfig(host="h", user="u", key_path="k", host_key_policy="trust-me")


# ------------------------------------------------------------------ connection errors


async def test_refused_credentials(server: SshServer, tmp_path: object) -> None:
    other_key = os.path.join(str(tmp_path), "other")
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other_key}")
    with pytest.raises(AuthenticationFailed) as caught:
        await _whoami(server.ssh_config(key_path=other_key))
    assert server.user in str(caught.value) and isinstance(caught.value, ConnectionError)


async def test_unreachable_host_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused
        config = SSHConfig(host="127.0.0.1", user="nobody", key_path="", port=port, connect_timeout=5)
        with pytest.raises(HostConnectionError, match=f"127.0.0.1:{port}"):
            await _whoami(config)


async def test_methods_before_connect_raise_a_clear_error(optio_sshd: SshServer) -> None:
    host = RemoteHost(optio_sshd.ssh_config(), optio_sshd.scratch + "/never")
    with pytest.raises(HostNotConnected, match="connect"):
        await host.run(["true"])
    with pytest.raises(RuntimeError):
        await host.fetch_bytes_from_host("/etc/hostname")
    await host.disconnect()  # harmless


async def test_private_taskdir_is_made_and_removed(optio_sshd: SshServer) -> None:
    async with make_host(ssh=optio_sshd.ssh_config()) as host:
        taskdir = host.taskdir
        assert (await host.run(["pwd"])).stdout.strip() == host.workdir
    async with make_host(ssh=optio_sshd.ssh_config()) as checker:
        assert await checker.file_size(taskdir) is None


async def test_relative_remote_taskdir_is_rejected(optio_sshd: SshServer) -> None:
    with pytest.raises(ValueError, match="absolute"):
        RemoteHost(optio_sshd.ssh_config(), "relative/dir")


def _home_with_alias(alias: str, server: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh $HOME whose ~/.ssh/config names ``server`` as ``alias`` (with its key); returns it."""
    home = str(tmp_path)
    os.makedirs(os.path.join(home, ".ssh"))
    with open(os.path.join(home, ".ssh", "config"), "w") as handle:
        handle.write(
            f"Host {alias}\n  HostName {server.host}\n  Port {server.port}\n"
            f"  User {server.user}\n  IdentityFile {server.key_path}\n"
        )
    monkeypatch.setenv("HOME", home)
    return home


async def test_ssh_config_alias_is_honoured(
    optio_sshd: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    _home_with_alias("worker-alias", optio_sshd, tmp_path, monkeypatch)
    config = SSHConfig(
        host="worker-alias",
        user="",
        key_path="",
        known_hosts=optio_sshd.known_hosts,
        host_key_policy="strict",
    )
    assert await _whoami(config) == optio_sshd.user


async def test_proxy_jump(optio_sshd: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # Jump through the same server: the second hop is a direct-tcpip channel from it.
    home = _home_with_alias("jump", optio_sshd, tmp_path, monkeypatch)
    with open(optio_sshd.known_hosts) as source, open(os.path.join(home, ".ssh", "known_hosts"), "w") as dest:
        dest.write(source.read())
    assert await _whoami(optio_sshd.ssh_config(proxy_jump="jump")) == optio_sshd.user


# ------------------------------------------------------------------ channels and load


async def test_concurrency_beyond_max_sessions_never_fails(remote_host: RemoteHost) -> None:
    results = await asyncio.gather(*(remote_host.run("sleep 0.2; echo $0", check=True) for _ in range(100)))
    assert len(results) == 100 and all(r.exit_code == 0 for r in results)


async def test_thousand_concurrent_commands(remote_host: RemoteHost) -> None:
    results = await asyncio.gather(*(remote_host.run(["echo", str(n)]) for n in range(1000)))
    assert [r.stdout for r in results] == [f"{n}\n" for n in range(1000)]


async def test_long_lived_channels_do_not_block_short_commands(remote_host: RemoteHost) -> None:
    sleepers = [await remote_host.launch_subprocess("sleep 30") for _ in range(12)]
    try:
        result = await asyncio.wait_for(remote_host.run(["echo", "through"]), 30)
        assert result.stdout == "through\n"
    finally:
        await asyncio.gather(*(remote_host.terminate_subprocess(s, aggressive=True) for s in sleepers))


async def test_env_secrets_stay_off_command_lines_and_logs(
    remote_host: RemoteHost, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    caplog.set_level(logging.DEBUG)
    handle = await remote_host.launch_subprocess("echo started; sleep 5", env={"TOKEN": secret})
    assert await anext(handle.stdout) == b"started\n"
    processes = await remote_host.run(["ps", "-eo", "args"])
    assert "sleep 5" in processes.stdout and secret not in processes.stdout
    await remote_host.terminate_subprocess(handle, aggressive=True)
    assert secret not in caplog.text
