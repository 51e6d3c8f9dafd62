"""The SSH error boundary: every exception asyncssh exports maps into optio-host's tree.

Modelled on httpx's ``test_httpcore_all_exceptions_mapped``: a new asyncssh
exception class fails here until the map says what it means.
"""

from __future__ import annotations

import builtins
import inspect
import os
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

import optio_host.errors as errors
from optio_host import LocalHost, RemoteHost, make_host
from optio_host.errors import (
    AuthenticationFailed,
    ChannelRefused,
    CommandTimeout,
    CwdNotAccessible,
    CwdNotADirectory,
    CwdNotFound,
    HostCommandError,
    HostConnectionError,
    HostKeyError,
    KeyFileError,
    ProgramNotExecutable,
    ProgramNotFound,
)
from optio_host.host._ssh_errors import load_client_keys, map_error, translate_errors
from optio_host.host.interface import Host
from optio_host.testing.sshd import SshServer
from optio_host.types import SSHConfig

pytestmark = pytest.mark.timeout(60)


def _exported_exceptions() -> list[type[BaseException]]:
    found = []
    for name in dir(asyncssh):
        value = getattr(asyncssh, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            found.append(value)
    return found


def _instance(kind: type[BaseException]) -> BaseException:
    """An instance of ``kind``, its constructor's required arguments filled with plausible values."""
    args: list[object] = []
    for parameter in list(inspect.signature(kind.__init__).parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is not parameter.empty:
            continue
        name = parameter.name
        if name in ("code", "msec", "width", "height", "pixwidth", "pixheight"):
            args.append(1)
        elif name in ("env", "exit_signal", "subsystem"):
            args.append(None)
        elif name in ("exit_status", "returncode"):
            args.append(3)
        else:
            args.append(f"{name} text")
    return kind(*args)


EXPORTED = _exported_exceptions()


def test_asyncssh_exports_exceptions_at_all() -> None:
    assert len(EXPORTED) > 40  # the walk below really covers something


@pytest.mark.parametrize("kind", EXPORTED, ids=lambda kind: kind.__name__)
def test_every_asyncssh_exception_is_mapped(kind: type[BaseException]) -> None:
    mapped = map_error(_instance(kind), "user@box:22", "testing")
    assert mapped is not None
    module = type(mapped).__module__
    assert module in (errors.__name__, builtins.__name__), f"{kind.__name__} -> {type(mapped)!r}"
    assert not isinstance(mapped, (asyncssh.Error, asyncssh.KeyImportError))
    assert isinstance(mapped, (OSError, HostCommandError)), f"{kind.__name__} -> {type(mapped)!r}"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (asyncssh.SFTPNoSuchFile("gone"), FileNotFoundError),
        (asyncssh.SFTPNoSuchPath("gone"), FileNotFoundError),
        (asyncssh.SFTPPermissionDenied("no"), PermissionError),
        (asyncssh.SFTPFileAlreadyExists("there"), FileExistsError),
        (asyncssh.SFTPNotADirectory("file"), NotADirectoryError),
        (asyncssh.SFTPFileIsADirectory("dir"), IsADirectoryError),
        (asyncssh.SFTPConnectionLost("cut"), HostConnectionError),
        (asyncssh.ConnectionLost("cut"), HostConnectionError),
        (asyncssh.PermissionDenied("denied"), AuthenticationFailed),
        (asyncssh.HostKeyNotVerifiable("bad key"), HostKeyError),
        (asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, "full"), ChannelRefused),
        (asyncssh.KeyImportError("bad key"), KeyFileError),
        (BrokenPipeError(), HostConnectionError),
        (ConnectionResetError(), HostConnectionError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value.__name__,
)
def test_meaning_is_kept_in_the_type(exc: BaseException, expected: type[BaseException]) -> None:
    mapped = map_error(exc, "user@box:22", "reading /x")
    assert isinstance(mapped, expected)
    assert "box" in str(mapped) or isinstance(mapped, KeyFileError)


def test_channel_refusal_says_whether_a_retry_can_help() -> None:
    full = map_error(asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, "full"), "box", "x")
    wrong = map_error(asyncssh.ChannelOpenError(asyncssh.OPEN_UNKNOWN_CHANNEL_TYPE, "what"), "box", "x")
    assert isinstance(full, ChannelRefused) and full.retryable
    assert isinstance(wrong, ChannelRefused) and not wrong.retryable


def test_process_errors_keep_exit_code_and_output() -> None:
    failed = asyncssh.ProcessError(None, "false", None, 1, None, 1, "out", "err")
    timed_out = asyncssh.TimeoutError(None, "sleep 9", None, None, None, None, b"so far", b"")
    mapped = map_error(failed, "box", "x")
    assert isinstance(mapped, HostCommandError) and mapped.exit_code == 1 and mapped.stderr == "err"
    assert isinstance(map_error(timed_out, "box", "x"), CommandTimeout)


def test_other_exceptions_pass_unchanged() -> None:
    for exc in (ValueError("mine"), FileNotFoundError(2, "local", "/x"), HostConnectionError("ours")):
        assert map_error(exc, "box", "x") is exc


def test_translate_errors_raises_the_mapped_exception_with_the_cause() -> None:
    config = SSHConfig(host="127.0.0.1", user="u", port=2222)
    with pytest.raises(FileNotFoundError) as caught, translate_errors(config, "/data/x"):
        raise asyncssh.SFTPNoSuchFile("no such file")
    assert caught.value.filename == "/data/x" and "127.0.0.1:2222" in str(caught.value)
    assert isinstance(caught.value.__cause__, asyncssh.SFTPNoSuchFile)
    with pytest.raises(BrokenPipeError), translate_errors(config, "input", keep=(BrokenPipeError,)):
        raise BrokenPipeError
    with pytest.raises(HostConnectionError), translate_errors(config, "input"):
        raise BrokenPipeError


def test_only_the_boundary_catches_asyncssh_exceptions() -> None:
    """No ``except asyncssh...`` outside ``host/_ssh_errors.py`` (the one place)."""
    src = Path(errors.__file__).parent
    offenders = []
    for path in src.rglob("*.py"):
        if path.name == "_ssh_errors.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip().startswith("except") and "asyncssh." in line:
                offenders.append(f"{path.relative_to(src)}:{number}: {line.strip()}")
    assert offenders == []


# ------------------------------------------------------------------ key files


def _keygen(path: Path, passphrase: str = "") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)


@pytest.mark.parametrize("problem", ["missing", "unreadable", "public-key", "encrypted", "invalid"])
def test_unusable_key_files_name_the_file_and_the_fix(tmp_path: Path, problem: str) -> None:
    key = tmp_path / "id_test"
    if problem == "unreadable":
        key.mkdir()  # reading a folder fails even for root
    elif problem == "public-key":
        _keygen(key)
        key = tmp_path / "id_test.pub"
    elif problem == "encrypted":
        _keygen(key, passphrase="secret words")
    elif problem == "invalid":
        key.write_text("not a key at all\n")
    with pytest.raises(KeyFileError) as caught:
        load_client_keys(str(key))
    assert caught.value.problem == problem and caught.value.path == str(key)
    message = str(caught.value)
    assert str(key) in message
    fixes = {
        "missing": "check -i",
        "unreadable": "is a folder; give the key file itself",  # (the folder stands in: root reads all)
        "public-key": str(tmp_path / "id_test") + ")",
        "encrypted": "ssh-add",
        "invalid": "not a private key",
    }
    assert fixes[problem] in message


async def test_a_public_key_as_key_path_fails_at_connect_as_key_file_error(
    optio_sshd: SshServer,
) -> None:
    config = optio_sshd.ssh_config(key_path=optio_sshd.key_path + ".pub")
    with pytest.raises(KeyFileError, match=r"client_key\.pub.*public key") as caught:
        async with make_host(ssh=config):
            pass
    assert isinstance(caught.value, ConnectionError) and caught.value.problem == "public-key"


def test_cli_reports_a_public_key_with_its_file(optio_sshd: SshServer) -> None:
    target = f"{optio_sshd.user}@{optio_sshd.host}:{optio_sshd.port}"
    key = optio_sshd.key_path + ".pub"
    args = ["run", "--ssh", target, "-i", key, "--known-hosts", optio_sshd.known_hosts, "--", "true"]
    env = {name: value for name, value in os.environ.items() if not name.startswith("OPTIO_")}
    result = subprocess.run(
        [sys.executable, "-m", "optio_host", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 255
    assert key in result.stderr and "public key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ commands that cannot start


async def test_missing_program_and_one_that_cannot_run_are_told_apart(host: Host) -> None:
    with pytest.raises(ProgramNotFound) as missing:
        await host.run(["no-such-program-optio"])
    assert isinstance(missing.value, FileNotFoundError) and missing.value.path == "no-such-program-optio"
    with pytest.raises(ProgramNotFound):
        await host.run([host.workdir + "/absent-tool"])
    await host.write_text("tool.sh", "echo hi\n")  # written without the execute bit
    for program in (host.workdir + "/tool.sh", host.workdir):
        with pytest.raises(ProgramNotExecutable) as denied:
            await host.run([program])
        assert isinstance(denied.value, PermissionError) and denied.value.path == program
        assert "cannot be run" in str(denied.value) and program in str(denied.value)


async def test_missing_cwd_and_a_file_as_cwd(host: Host) -> None:
    with pytest.raises(CwdNotFound) as missing:
        await host.run(["true"], cwd="no-such-dir")
    assert (
        isinstance(missing.value, FileNotFoundError) and missing.value.path == host.workdir + "/no-such-dir"
    )
    assert "setup_workdir" not in str(missing.value)
    await host.write_text("plain.txt", "x")
    with pytest.raises(CwdNotADirectory) as not_dir:
        await host.run(["true"], cwd="plain.txt")
    assert isinstance(not_dir.value, NotADirectoryError) and "plain.txt" in str(not_dir.value)


async def test_a_cwd_that_cannot_be_entered_is_not_command_not_found(host: Host, tmp_path: Path) -> None:
    locked = host.workdir + "/locked"
    os.mkdir(locked, 0o700)
    if isinstance(host, LocalHost):
        if os.geteuid() == 0:
            pytest.skip("root enters every folder; the remote variant covers this case")
        os.chmod(locked, 0o000)
    # On the remote host (another account when run as root) a root-owned 0700 folder is closed.
    elif os.geteuid() != 0:
        os.chmod(locked, 0o000)
    try:
        with pytest.raises(CwdNotAccessible) as caught:
            await host.run(["true"], cwd="locked")
        assert isinstance(caught.value, PermissionError) and caught.value.path == locked
        assert "cannot be entered" in str(caught.value)
    finally:
        os.chmod(locked, 0o700)


@pytest.mark.parametrize("kind", ["local", "remote"])
async def test_run_before_setup_workdir_says_to_call_it(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "local":
        made: Host = LocalHost(str(tmp_path / "never-set-up"))
    else:
        server: SshServer = request.getfixturevalue("optio_sshd")
        made = RemoteHost(server.ssh_config(), f"{server.scratch}/never-set-up-{os.getpid()}")
    async with made:
        with pytest.raises(CwdNotFound, match=r"setup_workdir\(\)"):
            await made.run(["true"])
