"""What only a remote host has: host keys, authentication, SSH config, channel limits, secrecy."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import uuid

import pytest

from optio_host import (
    AuthenticationFailed,
    HostConnectionError,
    HostKeyChanged,
    HostKeyError,
    HostKeyRevoked,
    HostKeyUnknown,
    HostNotConnected,
    KeyFileError,
    RemoteHost,
    SSHConfig,
    UnsafeTaskdir,
    make_host,
)
from optio_host.paths import task_dir
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
    os.mkdir(os.path.join(str(tmp_path), "ssh"))  # only ~/.ssh is created when missing
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
    assert isinstance(caught.value, HostKeyChanged) and caught.value.reason == "changed"
    with open(known) as handle:
        assert handle.read() == recorded  # the changed key was not recorded


async def test_a_missing_known_hosts_folder_is_named_and_only_ssh_is_created(
    optio_sshd: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    typo = os.path.join(str(tmp_path), "typo", "known_hosts")
    with pytest.raises(HostKeyUnknown, match="cannot be recorded") as caught:
        await _whoami(optio_sshd.ssh_config(host_key_policy="accept-new", known_hosts=typo))
    message = str(caught.value)
    assert f"mkdir -p {os.path.dirname(typo)}" in message and "ssh-keyscan" not in message
    assert caught.value.fingerprint is not None and caught.value.fingerprint in message
    assert not os.path.exists(os.path.dirname(typo))  # an explicit path's folder is never made up
    with pytest.raises(HostKeyUnknown, match="does not exist, nor does its folder") as caught:
        await _whoami(optio_sshd.ssh_config(known_hosts=typo))  # strict
    assert "ssh-keyscan" not in str(caught.value)
    # The default ~/.ssh is created, as OpenSSH does.
    home = os.path.join(str(tmp_path), "home")
    os.mkdir(home)
    monkeypatch.setenv("HOME", home)
    assert (
        await _whoami(optio_sshd.ssh_config(host_key_policy="accept-new", known_hosts=None))
        == optio_sshd.user
    )
    assert os.path.isfile(os.path.join(home, ".ssh", "known_hosts"))


def _key_line(server: SshServer, marker: str = "", pattern: str | None = None, key: str | None = None) -> str:
    kind, data = (key or server.host_public_key()).split()[:2]
    where = pattern or f"[{server.host}]:{server.port}"
    return f"{marker + ' ' if marker else ''}{where} {kind} {data}\n"


@pytest.mark.parametrize("policy", ["strict", "accept-new", "off"])
@pytest.mark.parametrize("pattern", ["exact", "wildcard"])
async def test_a_revoked_key_is_refused_in_every_policy(
    server: SshServer, tmp_path: object, policy: str, pattern: str
) -> None:
    known = os.path.join(str(tmp_path), "known_hosts")
    content = _key_line(server, "@revoked", "*" if pattern == "wildcard" else None)
    with open(known, "w") as handle:
        handle.write(content)
    with pytest.raises(HostKeyRevoked) as caught:
        await _whoami(server.ssh_config(host_key_policy=policy, known_hosts=known))
    assert "REVOKED" in str(caught.value) and caught.value.fingerprint in str(caught.value)
    with open(known) as handle:
        assert handle.read() == content  # accept-new did not record it


async def test_revoked_wins_over_a_line_that_trusts_the_key(server: SshServer, tmp_path: object) -> None:
    known = os.path.join(str(tmp_path), "known_hosts")
    with open(known, "w") as handle:
        handle.write(_key_line(server) + _key_line(server, "@revoked"))
    with pytest.raises(HostKeyRevoked):
        await _whoami(server.ssh_config(known_hosts=known))


async def test_a_changed_key_in_strict_says_changed_not_unknown(server: SshServer) -> None:
    server.restart(new_host_key=True)  # its known_hosts still holds the old key
    with pytest.raises(HostKeyChanged) as caught:
        await _whoami(server.ssh_config(host_key_policy="strict"))
    message = str(caught.value)
    assert "CHANGED" in message and "intercepting" in message
    assert f"ssh-keygen -R '[{server.host}]:{server.port}'" in message
    assert "ssh-keyscan" not in message


def _rsa_key(directory: str) -> str:
    path = os.path.join(directory, "rsa_host_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", path], check=True)
    return path


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
async def test_a_recorded_key_of_another_type_is_changed_not_a_handshake_error(
    server: SshServer, tmp_path: object, policy: str
) -> None:
    # known_hosts has only an RSA key for the host; the server has only its ed25519 key. Offering
    # only RSA made sshd hang up mid-handshake ("overloaded?"); OpenSSH's order shows the key.
    with open(_rsa_key(str(tmp_path)) + ".pub") as handle:
        rsa = handle.read()
    known = os.path.join(str(tmp_path), "known_hosts")
    with open(known, "w") as handle:
        handle.write(_key_line(server, key=rsa))
    with pytest.raises(HostKeyChanged) as caught:
        await _whoami(server.ssh_config(host_key_policy=policy, known_hosts=known))
    message = str(caught.value)
    assert "ssh-ed25519 key SHA256:" in message and "(it records ssh-rsa)" in message
    with open(known) as handle:
        assert handle.read() == _key_line(server, key=rsa)  # nothing recorded


async def test_a_server_with_two_keys_is_checked_against_the_recorded_type(tmp_path: object) -> None:
    rsa_path = _rsa_key(str(tmp_path))
    with SshServer(extra_config=f"HostKey {rsa_path}") as sshd:
        with open(rsa_path + ".pub") as handle:
            rsa = handle.read()
        known = os.path.join(str(tmp_path), "known_hosts")
        with open(known, "w") as handle:
            handle.write(_key_line(sshd, key=rsa))  # only the RSA key is known
        assert await _whoami(sshd.ssh_config(known_hosts=known)) == sshd.user


async def test_policy_off_connects_to_a_changed_key_but_warns(
    server: SshServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.restart(new_host_key=True)
    assert await _whoami(server.ssh_config(host_key_policy="off")) == server.user
    assert "CHANGED" in caplog.text


def _sign_host_key(server: SshServer, directory: str) -> str:
    """Make a CA, certify the server's host key for 127.0.0.1 with it; return the CA's public key line."""
    ca = os.path.join(directory, "ca")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ca], check=True)
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            ca,
            "-I",
            "test-host",
            "-h",
            "-n",
            server.host,
            server.host_key_path + ".pub",
        ],
        check=True,
        capture_output=True,
    )
    server.extra_config = f"HostCertificate {server.host_key_path}-cert.pub"
    with open(ca + ".pub") as handle:
        return handle.read().strip()


async def test_cert_authority_lines_are_honoured_and_a_revoked_ca_refused(tmp_path: object) -> None:
    with SshServer() as server:
        ca_key = _sign_host_key(server, str(tmp_path))
        server.restart()
        known = os.path.join(str(tmp_path), "known_hosts")
        with open(known, "w") as handle:
            handle.write(_key_line(server, "@cert-authority", "*", ca_key))  # no plain host key at all
        assert await _whoami(server.ssh_config(known_hosts=known)) == server.user
        with open(known, "a") as handle:
            handle.write(_key_line(server, "@revoked", "*", ca_key))
        for policy in ("strict", "accept-new", "off"):
            with pytest.raises(HostKeyRevoked):
                await _whoami(server.ssh_config(known_hosts=known, host_key_policy=policy))


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


async def test_alias_alone_is_enough_and_known_hosts_come_from_the_alias(
    optio_sshd: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home_with_alias("box", optio_sshd, tmp_path, monkeypatch)
    with open(os.path.join(home, ".ssh", "config"), "a") as handle:
        handle.write(f"  UserKnownHostsFile {optio_sshd.known_hosts}\n")
    monkeypatch.delenv("OPTIO_HOST_KEY_POLICY", raising=False)
    assert await _whoami(SSHConfig(host="box")) == optio_sshd.user  # user and key_path from the config
    assert await _whoami(SSHConfig("box", "", "")) == optio_sshd.user  # the 0.1.2 positional form


async def test_alias_errors_name_the_resolved_host_and_port(
    optio_sshd: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    _home_with_alias("box", optio_sshd, tmp_path, monkeypatch)
    empty = os.path.join(str(tmp_path), "empty_known_hosts")
    with pytest.raises(HostKeyUnknown) as caught:
        await _whoami(SSHConfig(host="box", known_hosts=empty, host_key_policy="strict"))
    message = str(caught.value)
    assert f"box ({optio_sshd.host} port {optio_sshd.port})" in message
    assert f"ssh-keyscan -p {optio_sshd.port} {optio_sshd.host}" in message
    assert caught.value.port == optio_sshd.port and "port 22" not in message


def test_cli_names_where_an_alias_leads(
    optio_sshd: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home_with_alias("box", optio_sshd, tmp_path, monkeypatch)
    empty = os.path.join(home, "empty_known_hosts")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OPTIO_")}
    result = subprocess.run(
        [sys.executable, "-m", "optio_host", "run", "--ssh", "box", "--known-hosts", empty, "--", "true"],
        capture_output=True,
        text=True,
        env={**env, "HOME": home},
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 255
    assert f"box ({optio_sshd.host} port {optio_sshd.port})" in result.stderr
    assert (
        f"ssh-keyscan -p {optio_sshd.port} {optio_sshd.host}" in result.stderr
        and "--accept-new" in result.stderr
    )


async def test_a_bad_identity_file_in_the_config_is_a_key_file_error(
    optio_sshd: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home_with_alias("box", optio_sshd, tmp_path, monkeypatch)
    config_path = os.path.join(home, ".ssh", "config")
    with open(config_path) as handle:
        text = handle.read().replace(optio_sshd.key_path, optio_sshd.key_path + ".pub")
    with open(config_path, "w") as handle:
        handle.write(text)
    with pytest.raises(KeyFileError, match="IdentityFile"):
        await _whoami(SSHConfig(host="box", known_hosts=optio_sshd.known_hosts))


async def test_an_unreachable_alias_names_its_real_address(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        home = str(tmp_path)
        os.makedirs(os.path.join(home, ".ssh"))
        with open(os.path.join(home, ".ssh", "config"), "w") as handle:
            handle.write(f"Host gone\n  HostName 127.0.0.1\n  Port {port}\n  User nobody\n")
        monkeypatch.setenv("HOME", home)
        with pytest.raises(HostConnectionError, match=rf"gone \(127\.0\.0\.1:{port}\)"):
            await _whoami(SSHConfig(host="gone", host_key_policy="off", connect_timeout=5))


@pytest.mark.parametrize(
    ("setting", "policy"), [("accept-new", "accept-new"), ("no", "off"), ("yes", "strict")]
)
async def test_strict_host_key_checking_from_the_alias_sets_the_policy(
    optio_sshd: SshServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch, setting: str, policy: str
) -> None:
    home = _home_with_alias("box", optio_sshd, tmp_path, monkeypatch)
    known = os.path.join(home, "recorded_known_hosts")
    with open(os.path.join(home, ".ssh", "config"), "a") as handle:
        handle.write(f"  UserKnownHostsFile {known}\n  StrictHostKeyChecking {setting}\n")
    monkeypatch.delenv("OPTIO_HOST_KEY_POLICY", raising=False)
    if policy == "strict":
        with pytest.raises(HostKeyUnknown):
            await _whoami(SSHConfig(host="box"))
        return
    assert await _whoami(SSHConfig(host="box")) == optio_sshd.user
    assert os.path.exists(known) == (policy == "accept-new")  # off records nothing
    # An explicit policy still beats the config.
    with pytest.raises(HostKeyError):
        await _whoami(SSHConfig(host="box", host_key_policy="strict", known_hosts=known + ".none"))


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


# ------------------------------------------------------------------ private taskdirs


def _mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


async def test_default_remote_taskdir_is_private(optio_sshd: SshServer) -> None:
    consumer = f"optio-test-{uuid.uuid4().hex[:8]}"
    taskdir = task_dir(ssh=optio_sshd.ssh_config(), process_id="p1", consumer_name=consumer)
    assert taskdir == f"/tmp/{consumer}/p1"  # the 0.1.2 string is unchanged
    try:
        async with RemoteHost(optio_sshd.ssh_config(), taskdir) as host:
            await host.setup_workdir()
            await host.setup_workdir()  # idempotent
        assert _mode(f"/tmp/{consumer}") == _mode(taskdir) == _mode(taskdir + "/workdir") == 0o700
    finally:
        subprocess.run(["rm", "-rf", f"/tmp/{consumer}"], check=True)


@pytest.mark.parametrize("trap", ["symlink", "other-owner", "open-parent"])
async def test_a_taskdir_another_user_could_swap_is_refused(optio_sshd: SshServer, trap: str) -> None:
    base = os.path.join(optio_sshd.scratch, f"trap-{uuid.uuid4().hex[:8]}")
    taskdir = os.path.join(base, "task")
    os.makedirs(base)
    os.chown(base, optio_sshd.account.uid, optio_sshd.account.gid)
    if trap == "symlink":
        elsewhere = os.path.join(optio_sshd.scratch, f"elsewhere-{uuid.uuid4().hex[:8]}")
        os.makedirs(elsewhere)
        os.chown(elsewhere, optio_sshd.account.uid, optio_sshd.account.gid)
        os.symlink(elsewhere, taskdir)
        culprit = taskdir
    elif trap == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("needs a second account: run as root (as CI does)")
        os.makedirs(taskdir, mode=0o777)
        os.chmod(taskdir, 0o777)  # made first by someone else, open enough that ours would fit inside
        culprit = taskdir
    else:
        os.chmod(base, 0o777)  # anyone may rename entries in it
        culprit = base
    async with RemoteHost(optio_sshd.ssh_config(), taskdir) as host:
        with pytest.raises(UnsafeTaskdir) as caught:
            await host.setup_workdir()
    assert caught.value.path == culprit and culprit in str(caught.value)
    assert isinstance(caught.value, PermissionError)


async def test_a_private_taskdir_left_by_a_lost_connection_is_reported_then_removed(
    server: SshServer, caplog: pytest.LogCaptureFixture
) -> None:
    host = make_host(ssh=server.ssh_config())
    await host.connect()
    taskdir = host.taskdir
    server.stop()  # the connection drops and the host stays unreachable during disconnect()
    await host.disconnect()
    assert os.path.isdir(taskdir) and host.left_behind_taskdir == taskdir
    assert taskdir in caplog.text
    server.start()
    await host.connect()
    try:
        assert not os.path.exists(taskdir) and host.taskdir != taskdir
        assert host.left_behind_taskdir is None
    finally:
        await host.disconnect()
