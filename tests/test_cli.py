"""The ``optio-host`` command, driven for real as a subprocess, on this machine and over SSH."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optio_host.cli import _demo_chart, main
from optio_host.cli._display import _Budget
from optio_host.cli._paths import host_path
from optio_host.cli._session import _plain_exception, _Saver
from optio_host.cli._target import hoist_host_options, parse_ssh_target
from optio_host.testing import SshServer

CLI = [sys.executable, "-m", "optio_host"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPTIO_")}
    env.update(extra or {})
    return env


def cli(
    *args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the command with pipes (so: not a terminal) and capture everything."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(env),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def cli_many(*commands: list[str], cwd: Path | str | None = None) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent command lines at once (each start costs most of a second)."""
    processes = [
        subprocess.Popen(
            [*CLI, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=cwd,
            env=_env(),
        )
        for args in commands
    ]
    results = []
    for args, process in zip(commands, processes, strict=True):
        with process:
            stdout, stderr = process.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return results


def ssh_args(sshd: SshServer, *, known_hosts: str | None = None) -> list[str]:
    return [
        "--ssh",
        f"{sshd.user}@127.0.0.1:{sshd.port}",
        "-i",
        sshd.key_path,
        "--known-hosts",
        known_hosts or sshd.known_hosts,
    ]


def assert_plain(*texts: str) -> None:
    for text in texts:
        assert "\x1b" not in text, f"control codes in non-terminal output: {text!r}"


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert stderr.endswith("\n"), f"not one line: {stderr!r}"
    assert stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr


@dataclass
class Target:
    """A host for the CLI: its options and a folder there the login may write to."""

    args: list[str]
    folder: str
    remote: bool

    def path(self, name: str) -> str:
        # Remote tests share one scratch folder owned by the sshd account: names must be unique.
        return os.path.join(self.folder, f"{uuid.uuid4().hex[:8]}-{name}")


@pytest.fixture(params=["local", "remote"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "local":
        folder = tmp_path / "host"
        folder.mkdir()
        return Target([], str(folder), remote=False)
    sshd: SshServer = request.getfixturevalue("optio_sshd")
    return Target(ssh_args(sshd), sshd.scratch, remote=True)


def unique_sleep() -> str:
    """A ``sleep`` argument nothing else on the machine uses, to find the process with pgrep."""
    return f"4000.{random.randrange(10**8, 10**9)}"


def _pgrep(pattern: str) -> str:
    return subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False).stdout


def processes_matching(pattern: str, within: float = 5.0) -> str:
    """``pgrep -af pattern`` once it is empty, or its last output after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (found := _pgrep(pattern)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def wait_running(pattern: str, within: float = 10.0) -> str:
    """``pgrep -af pattern`` once something matches (empty if nothing did within ``within`` s)."""
    deadline = time.monotonic() + within
    while not (found := _pgrep(pattern)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


# ---------------------------------------------------------------- command line


def test_console_script_and_module_both_work() -> None:
    script = shutil.which("optio-host", path=os.path.dirname(sys.executable)) or shutil.which("optio-host")
    if script is None:
        pytest.skip("the optio-host console script is not installed next to this Python")
    version = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0
    assert version.stdout.startswith("optio-host, version ")
    listing, unknown = cli_many(["--help"], ["frobnicate"])
    assert listing.returncode == 0
    for command in ("run", "put", "get", "session", "tunnel", "demo"):
        assert re.search(rf"^\s+{command}\s", listing.stdout, re.MULTILINE)
    assert unknown.returncode == 2
    assert_one_line_error(unknown.stderr, "frobnicate", "optio-host --help")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("me@box", ("me", "box", 22)),
        ("me@box:2222", ("me", "box", 2222)),
        ("box", ("", "box", 22)),
        ("box:2200", ("", "box", 2200)),
        ("me@[::1]:2222", ("me", "::1", 2222)),
        ("::1", ("", "::1", 22)),
        ("a@b@box", ("a@b", "box", 22)),
    ],
)
def test_ssh_target_forms(value: str, expected: tuple[str, str, int]) -> None:
    assert parse_ssh_target(value) == expected


@pytest.mark.parametrize(
    "value", ["", "@box", "me@", "me@box:", "me@box:0", "me@box:70000", "me@box:x", "-oProxy"]
)
def test_bad_ssh_targets_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"PORT|port|user|IPv6"):
        parse_ssh_target(value)


USAGE_ERRORS = [
    (["run"], "Missing argument"),
    (["run", "--env", "1X=2", "--", "true"], "--env"),
    (["run", "--ssh", "me@box:0", "--", "true"], "--ssh"),
    (["run", "--accept-new", "--", "true"], "--ssh"),
    (["put", "--sha256", "abc", "a", "b"], "--sha256"),
    (["tunnel", "99999"], "REMOTE_PORT"),
    (["frobnicate"], "frobnicate"),
]


@pytest.mark.parametrize(("args", "fragment"), USAGE_ERRORS)
def test_usage_errors_exit_2_with_one_line(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process (parsing only, nothing runs); the console script's own path is checked above.
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, fragment)


# ---------------------------------------------------------------- run


def test_run_streams_both_outputs_and_returns_the_exit_code(target: Target) -> None:
    # Without "--" too: everything after the command's name is its own, options included.
    result = cli("run", *target.args, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_run_passes_argv_verbatim(target: Target) -> None:
    args = ["a b", "$HOME", "it's", ";ls", "`id`", "-n", ""]
    result = cli("run", *target.args, "--", "printf", "<%s>", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"<{arg}>" for arg in args)


def _home_of(target: Target) -> str:
    """Where a relative path points under the one rule: the login's home remotely, here: the cwd."""
    if target.remote:
        return cli("run", *target.args, "--", "sh", "-c", 'printf %s "$HOME"').stdout
    return target.folder


def test_relative_paths_follow_one_rule_in_every_subcommand(target: Target, tmp_path: Path) -> None:
    name = f"{uuid.uuid4().hex[:8]}-rule.txt"
    (tmp_path / name).write_text("same place\n")
    home = _home_of(target)
    try:
        put = cli("put", *target.args, str(tmp_path / name), ".", cwd=target.folder)
        assert put.returncode == 0, put.stderr
        assert Path(home, name).read_text() == "same place\n"  # the remote host is this machine
        ran = cli("run", *target.args, "--", "cat", name, cwd=target.folder)
        assert (ran.returncode, ran.stdout) == (0, "same place\n"), ran.stderr
        pwd = cli("run", *target.args, "--", "pwd", cwd=target.folder)
        assert os.path.realpath(pwd.stdout.strip()) == os.path.realpath(home)
        got = cli("get", *target.args, name, str(tmp_path / "back.txt"), cwd=target.folder)
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "back.txt").read_text() == "same place\n"
        if target.remote:  # here, ~ is this machine's home, not the test's folder
            tilde = cli("run", *target.args, "--cwd", "~", "--", "cat", name, cwd=target.folder)
            assert tilde.stdout == "same place\n"
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(home, name))


def test_run_with_cwd_and_env(target: Target) -> None:
    result = cli(
        "run",
        *target.args,
        "--cwd",
        target.folder,
        "--env",
        "GREETING=hi there",
        "--env",
        "EMPTY=",
        "--",
        "sh",
        "-c",
        'pwd; printf "%s|%s\\n" "$GREETING" "$EMPTY"',
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{target.folder}\nhi there|\n"


def test_run_errors_are_one_line(target: Target) -> None:
    missing_cwd, unknown = cli_many(
        ["run", *target.args, "--cwd", "/no/such/folder", "--", "true"],
        ["run", *target.args, "--", "no-such-program-optio"],
    )
    assert missing_cwd.returncode == 1
    assert_one_line_error(missing_cwd.stderr, "/no/such/folder")
    assert unknown.returncode == 127
    assert_one_line_error(unknown.stderr, "no-such-program-optio", "not found")


@pytest.mark.timeout(30)
def test_run_timeout_kills_the_tree_and_exits_124(target: Target) -> None:
    sleep = unique_sleep()
    result = cli("run", *target.args, "--timeout", "0.5", "--", "sh", "-c", f"sleep {sleep} & wait")
    assert result.returncode == 124
    assert_one_line_error(result.stderr, "timed out after 0.5 s")
    assert processes_matching(re.escape(sleep)) == ""


# ---------------------------------------------------------------- connection errors


@pytest.mark.timeout(30)
def test_unknown_host_key_names_the_fingerprint_and_accept_new_records_it(
    optio_sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    listed = subprocess.run(
        ["ssh-keygen", "-lf", optio_sshd.host_key_path + ".pub"], capture_output=True, text=True, check=True
    )
    fingerprint = listed.stdout.split()[1]
    assert fingerprint.startswith("SHA256:")

    refused = cli("run", *ssh_args(optio_sshd, known_hosts=str(known_hosts)), "--", "true")
    assert refused.returncode == 255
    assert_one_line_error(refused.stderr, fingerprint, "--accept-new", "not trusted")
    assert known_hosts.read_text() == ""

    accepted = cli("run", *ssh_args(optio_sshd, known_hosts=str(known_hosts)), "--accept-new", "--", "true")
    assert accepted.returncode == 0, accepted.stderr
    assert optio_sshd.host_public_key().split()[1] in known_hosts.read_text()

    other = tmp_path / "other_known_hosts"
    by_env = cli(
        "run",
        *ssh_args(optio_sshd, known_hosts=str(other)),
        "--",
        "true",
        env={"OPTIO_HOST_KEY_POLICY": "accept-new"},
    )
    assert by_env.returncode == 0, by_env.stderr
    assert other.exists()


@pytest.mark.timeout(30)
def test_authentication_failure_is_one_line_255(optio_sshd: SshServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    args = ssh_args(optio_sshd)
    args[args.index("-i") + 1] = str(stranger)
    result = cli("run", *args, "--", "true")
    assert result.returncode == 255
    assert_one_line_error(result.stderr, "refused authentication")


def test_connection_refused_is_one_line_255(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    result = cli("run", "--ssh", f"nobody@127.0.0.1:{port}", "--", "true")
    assert result.returncode == 255
    assert_one_line_error(result.stderr, "could not connect", str(port))


def test_ssh_accepts_an_alias_from_ssh_config(optio_sshd: SshServer, tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        f"Host testbox\n  HostName 127.0.0.1\n  Port {optio_sshd.port}\n"
        f"  User {optio_sshd.user}\n  IdentityFile {optio_sshd.key_path}\n"
    )
    result = cli(
        "run", "--ssh", "testbox", "--known-hosts", optio_sshd.known_hosts, "--", "id", "-un",
        env={"HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{optio_sshd.user}\n"


def test_every_unusable_identity_file_is_one_line_and_exit_255(tmp_path: Path) -> None:
    # (Unreadable is the same path in the code; this suite runs as root, who reads everything.)
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(locked)], check=True)
    cases = {
        str(tmp_path / "nope"): ["does not exist", "-i"],
        str(tmp_path): ["is a folder", "the key file itself"],
        f"{key}.pub": ["public key", f"({key})"],
        str(locked): ["encrypted", f"ssh-add {locked}"],
    }
    # Nothing listens on port 1: every one of these fails before dialling.
    results = cli_many(*[["run", "--ssh", "me@127.0.0.1:1", "-i", path, "--", "true"] for path in cases])
    for (path, fragments), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 255, result.stderr
        assert_one_line_error(result.stderr, f"private key file {path}", *fragments)


@pytest.mark.timeout(60)
def test_a_missing_known_hosts_file_is_named_with_a_fix_that_works(
    optio_sshd: SshServer, tmp_path: Path
) -> None:
    absent = tmp_path / "kh"
    no_folder = tmp_path / "nowhere" / "kh"
    strict_absent, strict_no_folder, accept_no_folder = cli_many(
        ["run", *ssh_args(optio_sshd, known_hosts=str(absent)), "--", "true"],
        ["run", *ssh_args(optio_sshd, known_hosts=str(no_folder)), "--", "true"],
        ["run", *ssh_args(optio_sshd, known_hosts=str(no_folder)), "--accept-new", "--", "true"],
    )
    assert strict_absent.returncode == 255
    assert_one_line_error(strict_absent.stderr, f"{absent} does not exist", "ssh-keyscan", "--accept-new")
    assert strict_no_folder.returncode == 255
    assert_one_line_error(
        strict_no_folder.stderr,
        f"known_hosts file {no_folder} does not exist, nor does its folder {no_folder.parent}",
        "--known-hosts",
        f"mkdir -p {no_folder.parent}",
    )
    assert "ssh-keyscan" not in strict_no_folder.stderr
    assert accept_no_folder.returncode == 255
    assert_one_line_error(
        accept_no_folder.stderr, "cannot be recorded", f"folder {no_folder.parent}", "does not exist"
    )
    assert not no_folder.parent.exists()  # an explicit path's folder is never made up


# ---------------------------------------------------------------- put / get


def test_put_and_get_round_trip_with_checksums(target: Target, tmp_path: Path) -> None:
    data = random.randbytes(700_000)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    remote = target.path("payload.bin")

    put = cli("put", *target.args, "--sha256", digest, str(source), remote)
    assert put.returncode == 0, put.stderr
    assert Path(remote).read_bytes() == data  # reading is fine: the remote host is this machine
    assert put.stdout.count("\n") == 1
    assert remote in put.stdout
    assert "700.0 kB" in put.stdout

    back = tmp_path / "back" / "payload.bin"
    got = cli("get", *target.args, "--sha256", digest.upper(), remote, str(back))
    assert got.returncode == 0, got.stderr
    assert back.read_bytes() == data
    assert_plain(put.stdout, put.stderr, got.stdout, got.stderr)


def test_put_into_a_folder_keeps_the_name(target: Target, tmp_path: Path) -> None:
    name = f"{uuid.uuid4().hex[:8]}-named.txt"
    source = tmp_path / name
    source.write_text("hello\n")
    result = cli("put", *target.args, str(source), target.folder + "/")
    assert result.returncode == 0, result.stderr
    assert Path(target.folder, name).read_text() == "hello\n"


def test_checksum_mismatch_leaves_no_file_behind(target: Target, tmp_path: Path) -> None:
    source = tmp_path / "data.txt"
    source.write_text("the real content\n")
    wrong = "0" * 64
    remote = target.path("data.txt")
    original = target.path("original.txt")
    put, put_original = cli_many(
        ["put", *target.args, "--sha256", wrong, str(source), remote],
        ["put", *target.args, str(source), original],
    )
    assert put_original.returncode == 0
    assert put.returncode == 1
    assert_one_line_error(put.stderr, wrong, hashlib.sha256(b"the real content\n").hexdigest())
    assert not os.path.exists(remote)
    assert [name for name in os.listdir(target.folder) if "data.txt" in name] == []

    landing = tmp_path / "landing"
    landing.mkdir()
    got = cli("get", *target.args, "--sha256", wrong, original, str(landing / "copy.txt"))
    assert got.returncode == 1
    assert_one_line_error(got.stderr, "mismatch", wrong)
    assert os.listdir(landing) == []


def test_missing_files_are_one_line_errors(target: Target, tmp_path: Path) -> None:
    missing_remote, missing_local = cli_many(
        ["get", *target.args, target.path("absent.txt"), str(tmp_path / "x")],
        ["put", *target.args, str(tmp_path / "absent-here.txt"), target.path("x")],
    )
    assert missing_remote.returncode == 1
    assert_one_line_error(missing_remote.stderr, "absent.txt", "no such file")
    assert missing_local.returncode == 1
    assert_one_line_error(missing_local.stderr, "absent-here.txt")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- session

WORKER = r"""#!/bin/sh
log=${OPTIO_LOG:?OPTIO_LOG is not set}
echo "worker says hi"
echo "worker warns" >&2
printf 'STATUS: 10%% starting\n' >> "$log"
printf 'STATUS: half way there\n' >> "$log"
mkdir -p deliverables/sub
printf 'alpha\n' > deliverables/a.txt
printf 'b\303\251ta \342\234\223\n' > deliverables/sub/b.txt
echo "DELIVERABLE: deliverables/a.txt" >> "$log"
echo "DELIVERABLE: deliverables/sub/b.txt" >> "$log"
printf 'STATUS: 90%% wrapping up\n' >> "$log"
echo "DONE: all fine" >> "$log"
"""


@pytest.fixture
def worker_script(tmp_path: Path) -> Path:
    path = tmp_path / "worker.sh"
    path.write_text(WORKER)
    return path


def test_session_reports_progress_and_saves_deliverables(
    target: Target, tmp_path: Path, worker_script: Path
) -> None:
    out = tmp_path / "out"
    result = cli(
        "session",
        *target.args,
        "--out",
        str(out),
        "--upload",
        str(worker_script),
        "--",
        "sh",
        "worker.sh",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[:2] == [" 10% starting", "     half way there"]
    assert " 90% wrapping up" in lines
    assert "     all fine" in lines
    assert "saved out/a.txt (6 bytes)" in lines
    assert lines[-1] == "done: 2 deliverable(s) saved in out"
    assert (out / "a.txt").read_text() == "alpha\n"
    assert (out / "sub" / "b.txt").read_text() == "béta ✓\n"
    # The worker's own output goes to stderr, as it came.
    assert "worker says hi\n" in result.stderr
    assert "worker warns\n" in result.stderr


def test_session_failures_exit_1_with_one_line(target: Target, tmp_path: Path) -> None:
    reports_error = (
        'printf "STATUS: 5%% trying\\n" >> "$OPTIO_LOG"; echo "ERROR: disk on fire" >> "$OPTIO_LOG"'
    )
    exits_early = 'echo "STATUS: 50% half" >> "$OPTIO_LOG"; exit 3'
    out = str(tmp_path / "o")
    error, early, missing = cli_many(
        ["session", *target.args, "--out", out, "--", "sh", "-c", reports_error + "; exit 1"],
        ["session", *target.args, "--out", out, "--", "sh", "-c", exits_early],
        ["session", *target.args, "--out", out, "--", "./no-such-worker"],
    )
    assert error.returncode == 1
    assert_one_line_error(error.stderr, "disk on fire")
    assert error.stdout == "  5% trying\n"
    assert early.returncode == 1
    assert_one_line_error(early.stderr, "the worker exited (code 3) before writing DONE", "--keep")
    assert "/" not in early.stderr.split("DONE", 1)[1]  # no path of a workdir already deleted
    assert missing.returncode == 1
    assert_one_line_error(missing.stderr, "no-such-worker", "not found")
    assert not (tmp_path / "o").exists()


def test_session_missing_upload_is_one_line(tmp_path: Path) -> None:
    result = cli("session", "--upload", str(tmp_path / "gone.sh"), "--", "true")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "gone.sh")


def test_deliverables_are_never_written_outside_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    saver = _Saver(str(out), None)  # type: ignore[arg-type]
    for bad in ("../escape.txt", "/etc/passwd-copy", "sub/../../escape.txt"):
        with pytest.raises(ValueError, match="outside"):
            saver.target_for(bad)
    out.mkdir(exist_ok=True)
    (out / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="symlink"):
        saver.target_for("link/sub/file.txt")
    assert list(outside.iterdir()) == []
    assert saver.target_for("fine/ok.txt") == str(out / "fine" / "ok.txt")


BINARY_WORKER = r"""
head -c 300000 /dev/urandom > deliverables/blob.bin
printf '\377\376\000\r\n' > deliverables/odd.dat
printf 'text\n' > deliverables/t.txt
for name in blob.bin odd.dat t.txt; do echo "DELIVERABLE: deliverables/$name" >> "$OPTIO_LOG"; done
sha256sum deliverables/blob.bin deliverables/odd.dat
echo "DONE" >> "$OPTIO_LOG"
"""


def test_session_saves_binary_deliverables_byte_for_byte(target: Target, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("session", *target.args, "--out", str(out), "--", "sh", "-c", BINARY_WORKER, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sums = dict(reversed(line.split()) for line in result.stderr.splitlines() if "deliverables/" in line)
    assert hashlib.sha256((out / "blob.bin").read_bytes()).hexdigest() == sums["deliverables/blob.bin"]
    assert (out / "odd.dat").read_bytes() == b"\xff\xfe\x00\r\n"
    assert (out / "t.txt").read_bytes() == b"text\n"
    assert "saved out/blob.bin (300000 bytes)" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == "done: 3 deliverable(s) saved in out"


SKIPPING_WORKER = r"""
printf ok > deliverables/ok.txt
mkfifo deliverables/pipe
echo "DELIVERABLE: deliverables/ok.txt" >> "$OPTIO_LOG"
echo "DELIVERABLE: deliverables/missing.bin" >> "$OPTIO_LOG"
echo "DELIVERABLE: deliverables/pipe" >> "$OPTIO_LOG"
echo "DELIVERABLE: ../../etc/passwd" >> "$OPTIO_LOG"
echo "DONE" >> "$OPTIO_LOG"
"""


def test_session_names_each_skipped_deliverable_and_exits_3(target: Target, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("session", *target.args, "--out", str(out), "--", "sh", "-c", SKIPPING_WORKER, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr, "3 deliverable(s) were skipped", "missing.bin", "pipe", "passwd")
    lines = result.stdout.splitlines()
    assert "skipped missing.bin: not found" in lines
    assert any(
        line.startswith("skipped pipe: fetch failed: ") and "not a regular file" in line for line in lines
    )
    assert not any("Error(" in line for line in lines), lines  # messages, not reprs
    assert "skipped ../../etc/passwd: invalid deliverable path '../../etc/passwd'" in lines
    assert (out / "ok.txt").read_bytes() == b"ok"
    assert not (out / "pipe").exists()


def test_session_names_absolute_outputs_as_given_and_says_when_there_are_none(
    target: Target, tmp_path: Path
) -> None:
    out = tmp_path / "elsewhere" / "out"
    inside = tmp_path / "inside"
    inside.mkdir()
    one = (
        'echo 1 > deliverables/one.txt; printf "DELIVERABLE: deliverables/one.txt\\nDONE\\n" >> "$OPTIO_LOG"'
    )
    saved, nothing = cli_many(
        ["session", *target.args, "--out", str(out), "--", "sh", "-c", one],
        ["session", *target.args, "--out", str(out), "--", "sh", "-c", 'echo DONE >> "$OPTIO_LOG"'],
        cwd=inside,
    )
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.splitlines()[-2:] == [
        f"saved {out}/one.txt (2 bytes)",
        f"done: 1 deliverable(s) saved in {out}",
    ]
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.splitlines() == ["done: no deliverables"]


@pytest.mark.parametrize(
    ("reported", "shown"),
    [
        ("fetch failed: PermissionError(13, 'Permission denied')", "fetch failed: Permission denied"),
        ("Deliverable d: fetch failed: ValueError('not a regular file'), skipping",
         "Deliverable d: fetch failed: not a regular file, skipping"),
        ("fetch failed: TimeoutError()", "fetch failed: TimeoutError"),
        ("fetch failed: Odd(object())", "fetch failed: Odd(object())"),  # not a literal: as it is
        ("not found", "not found"),
    ],
)  # fmt: skip
def test_skip_reasons_show_the_exception_message_not_its_repr(reported: str, shown: str) -> None:
    assert _plain_exception(reported) == shown


@given(st.text())
def test_skip_reason_rendering_never_raises_and_keeps_plain_text(text: str) -> None:
    shown = _plain_exception(text)
    assert isinstance(shown, str)
    if "(" not in text:
        assert shown == text


def test_session_keep_names_a_log_that_exists(target: Target, tmp_path: Path) -> None:
    script = 'echo "STATUS: 50% half" >> "$OPTIO_LOG"; exit 7'
    result = cli("session", *target.args, "--keep", "--out", str(tmp_path / "o"), "--", "sh", "-c", script)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "the worker exited (code 7) before writing DONE", "kept")
    log = re.search(r"log (/\S+/optio\.log)", result.stderr)
    assert log is not None, result.stderr
    try:
        assert Path(log.group(1)).read_text() == "STATUS: 50% half\n"
    finally:
        shutil.rmtree(Path(log.group(1)).parent.parent, ignore_errors=True)


def test_session_shows_the_output_written_just_before_done(target: Target, tmp_path: Path) -> None:
    script = (
        'i=0; while [ $i -lt 200 ]; do echo "line $i"; i=$((i+1)); done; '
        'echo "last words"; echo DONE >> "$OPTIO_LOG"'
    )
    runs = cli_many(*[["session", *target.args, "--out", str(tmp_path / "o"), "--", "sh", "-c", script]] * 3)
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert run.stderr.endswith("line 199\nlast words\n"), run.stderr[-200:]


# ---------------------------------------------------------------- demo


@pytest.mark.timeout(60)
def test_demo_runs_the_bundled_worker(target: Target, tmp_path: Path) -> None:
    result = cli("demo", *target.args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout, result.stderr)
    out = tmp_path / "demo-deliverables"
    assert sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()) == [
        "chart.png",
        "data.csv",
        "meta/summary.json",
        "report.txt",
    ]
    # The chart is binary and saved byte for byte: the same as drawing it here from the same CSV.
    chart = (out / "chart.png").read_bytes()
    assert chart.startswith(b"\x89PNG\r\n\x1a\n")
    redrawn = tmp_path / "redrawn.png"
    assert _demo_chart.main([str(out / "data.csv"), "square", str(redrawn)]) == 0
    assert redrawn.read_bytes() == chart
    assert (out / "data.csv").read_text().splitlines()[:3] == ["n,square,cube", "1,1,1", "2,4,8"]
    assert "sum 1..20:   210" in (out / "report.txt").read_text()
    statuses = [line for line in result.stdout.splitlines() if re.match(r"^\s*\d+% Step", line)]
    assert len(statuses) == 10
    assert statuses[-1] == "100% Step 10/10: finished"
    assert result.stdout.splitlines()[-1] == "done: 4 deliverable(s) saved in demo-deliverables"


# ---------------------------------------------------------------- tunnel


@pytest.fixture
def greeting_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that greets each connection; yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"hello through the tunnel\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        server.close()
        thread.join(5)


@pytest.mark.timeout(30)
def test_tunnel_forwards_until_interrupted(target: Target, greeting_server: int) -> None:
    with subprocess.Popen(
        [*CLI, "tunnel", *target.args, str(greeting_server)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    ) as process:
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline())
            if target.remote:
                assert port != greeting_server
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                received = b""
                while not received.endswith(b"\n") and (chunk := connection.recv(100)):
                    received += chunk
            assert received == b"hello through the tunnel\n"
            process.send_signal(signal.SIGINT)
            assert process.wait(15) == 0
        finally:
            if process.poll() is None:
                process.kill()
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()


# ---------------------------------------------------------------- on a terminal


def spawn(*args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "optio_host", *args],
        env=_env({"TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}),
        dimensions=(30, 100),
        timeout=30,
    )


@pytest.mark.timeout(60)
def test_session_on_a_terminal_shows_a_live_bar_and_ctrl_c_stops_the_worker_tree(
    target: Target, tmp_path: Path
) -> None:
    sleep = unique_sleep()
    script = f"printf 'STATUS: 25%% phase one\\n' >> \"$OPTIO_LOG\"; echo worker-output; sleep {sleep} & wait"
    child = spawn("session", *target.args, "--out", str(tmp_path / "o"), "--", "sh", "-c", script)
    child.expect("worker-output")
    child.expect("phase one")
    child.expect("25%")
    child.expect("━".encode())  # the bar itself
    shown = child.before + child.after
    assert b"\x1b[" in shown  # a live display, not plain lines
    assert wait_running(re.escape(sleep)) != ""
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert b"interrupted" in child.before
    assert b"Traceback" not in child.before
    assert processes_matching(re.escape(sleep)) == ""


@pytest.mark.timeout(30)
def test_session_on_a_terminal_finishes_with_a_summary(tmp_path: Path, worker_script: Path) -> None:
    child = spawn(
        "session", "--out", str(tmp_path / "out"), "--upload", str(worker_script), "--", "sh", "worker.sh"
    )
    child.expect("starting")
    child.expect("saved .*a.txt")
    child.expect("done: 2 deliverable")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (tmp_path / "out" / "sub" / "b.txt").exists()


def test_output_budget_grants_a_burst_then_its_rate() -> None:
    now = [0.0]
    budget = _Budget(100, 300, clock=lambda: now[0])
    assert budget.take(1000) == 300  # the burst, then nothing until time passes
    assert budget.take(5) == 0
    now[0] = 0.5
    assert budget.take(1000) == 50
    now[0] = 100.0
    assert budget.take(1000) == 300  # never more than the burst, however long it was idle


@pytest.mark.timeout(90)
def test_session_on_a_terminal_ends_promptly_while_the_worker_floods_its_output(
    target: Target, tmp_path: Path
) -> None:
    # Drawing every line above the bar used to starve the session: DONE went unseen for minutes.
    mark = unique_sleep()
    script = (
        '(sleep 1; printf \'STATUS: 50%% flooded\\n\' >> "$OPTIO_LOG"; echo DONE >> "$OPTIO_LOG") & '
        f"yes 'flood {mark}' & yes 'errflood {mark}' >&2"
    )
    child = spawn("session", *target.args, "--out", str(tmp_path / "o"), "--", "sh", "-c", script)
    started = time.monotonic()
    child.expect(pexpect.EOF, timeout=60)
    elapsed = time.monotonic() - started
    child.close()
    shown = child.before
    assert child.exitstatus == 0, shown[-2000:]
    assert b"flooded" in shown and b"flood " + mark.encode() in shown
    assert b"not shown" in shown  # the lines left out are counted, not silently lost
    assert elapsed < 20, f"the session took {elapsed:.1f} s after a DONE written at 1 s"
    assert processes_matching(re.escape(mark)) == ""  # the worker's tree is stopped


@pytest.mark.timeout(30)
def test_session_on_a_terminal_ends_with_done_after_a_skipped_deliverable(tmp_path: Path) -> None:
    script = (
        'echo "STATUS: 50% working" >> "$OPTIO_LOG"; '
        'printf "DELIVERABLE: deliverables/gone\\nDONE\\n" >> "$OPTIO_LOG"'
    )
    child = spawn("session", "--out", str(tmp_path / "out"), "--", "sh", "-c", script)
    child.expect("skipped gone: not found")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    shown = child.before.decode()
    last_bar = shown[: shown.rindex("100%")].rsplit("\r", 1)[-1].rsplit("\n", 1)[-1]
    assert "done" in last_bar and "not found" not in last_bar, repr(last_bar)


@pytest.mark.timeout(30)
def test_put_on_a_terminal_shows_bytes_and_rate(tmp_path: Path) -> None:
    source = tmp_path / "two-megabytes.bin"
    source.write_bytes(random.randbytes(2_000_000))
    child = spawn("put", str(source), str(tmp_path / "copy.bin"))
    child.expect(rb"put two-megabytes\.bin .*2\.0/2\.0 MB.*B/s")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()


@pytest.mark.timeout(60)
def test_run_on_a_terminal_streams_and_ctrl_c_stops_the_tree(target: Target) -> None:
    sleep = unique_sleep()
    child = spawn("run", *target.args, "--", "sh", "-c", f"echo ready; sleep {sleep} & wait")
    child.expect("ready")  # shown while the command still runs
    assert wait_running(re.escape(sleep)) != ""
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert b"Traceback" not in child.before
    assert processes_matching(re.escape(sleep)) == ""


# ---------------------------------------------------------------- ssh/scp habits


def cli_input(*args: str, data: bytes, cwd: Path | str | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the command with ``data`` on its stdin (a pipe)."""
    return subprocess.run(
        [*CLI, *args], input=data, capture_output=True, cwd=cwd, env=_env(), timeout=60, check=False
    )


def test_dash_is_stdin_for_put_and_stdout_for_get(target: Target) -> None:
    data = random.randbytes(300_000) + b"\n\x00end"
    remote = target.path("from-stdin.bin")
    put = cli_input("put", *target.args, "-", remote, data=data)
    assert put.returncode == 0, put.stderr
    assert Path(remote).read_bytes() == data
    assert b"stdin -> " in put.stdout
    got = cli_input("get", *target.args, remote, "-", data=b"")
    assert got.returncode == 0, got.stderr
    assert got.stdout == data  # nothing but the bytes on stdout
    digest = hashlib.sha256(data).hexdigest()
    checked = cli_input("get", *target.args, "--sha256", "0" * 64, remote, "-", data=b"")
    assert checked.returncode == 1
    assert digest.encode() in checked.stderr
    folder = cli_input("put", *target.args, "-", target.folder, data=b"x")
    assert folder.returncode == 1
    assert b"name the file" in folder.stderr


def test_run_forwards_stdin_from_a_pipe_and_not_from_dev_null(target: Target) -> None:
    piped = cli_input("run", *target.args, "--", "cat", data=b"piped\n")
    assert (piped.returncode, piped.stdout) == (0, b"piped\n"), piped.stderr
    big = random.randbytes(2_000_000)
    counted = cli_input("run", *target.args, "--", "sha256sum", data=big)
    assert counted.stdout.split()[0].decode() == hashlib.sha256(big).hexdigest()
    empty = cli("run", *target.args, "--", "cat")  # stdin is /dev/null: cat ends at once
    assert (empty.returncode, empty.stdout) == (0, "")
    not_forwarded = cli_input("run", *target.args, "-n", "--", "cat", data=b"ignored")
    assert (not_forwarded.returncode, not_forwarded.stdout) == (0, b"")


@pytest.mark.timeout(30)
def test_run_on_a_terminal_does_not_wait_for_stdin(target: Target) -> None:
    child = spawn("run", *target.args, "--", "cat")
    child.expect(pexpect.EOF, timeout=20)
    child.close()
    assert child.exitstatus == 0


def _tree(root: Path) -> dict[str, tuple[str, int, bytes]]:
    found: dict[str, tuple[str, int, bytes]] = {}
    for path in sorted(root.rglob("*")):
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        data = path.read_bytes() if kind == "file" else b""
        found[str(path.relative_to(root))] = (kind, path.lstat().st_mode & 0o777, data)
    return found


def test_recursive_put_and_get_keep_names_bytes_and_modes(target: Target, tmp_path: Path) -> None:
    source = tmp_path / "photos"
    (source / "sub dir" / "deeper").mkdir(parents=True)
    (source / "empty").mkdir()
    (source / "a.bin").write_bytes(random.randbytes(100_000))
    (source / "sub dir" / "it's $x.txt").write_text("quoted\n")
    (source / "sub dir" / "deeper" / "run.sh").write_text("#!/bin/sh\n")
    (source / "sub dir" / "deeper" / "run.sh").chmod(0o750)
    (source / "empty").chmod(0o700)
    (source / "link").symlink_to("/etc/passwd")
    expected = {k: v for k, v in _tree(source).items() if k != "link"}

    fresh = target.path("copy")
    put = cli("put", "-r", *target.args, str(source), fresh)
    assert put.returncode == 0, put.stderr
    assert _tree(Path(fresh)) == expected  # a new target becomes the copy
    assert "skipped symbolic link" in put.stderr
    again = cli("put", "-r", *target.args, str(source), fresh)
    assert again.returncode == 0, again.stderr
    assert _tree(Path(fresh, "photos")) == expected  # an existing folder: the copy goes inside

    back = tmp_path / "back"
    got = cli("get", "-r", *target.args, fresh, str(back))
    assert got.returncode == 0, got.stderr
    assert {k: v for k, v in _tree(back).items() if not k.startswith("photos")} == expected
    into = cli("get", "-r", *target.args, fresh, str(back))
    assert into.returncode == 0, into.stderr
    assert (back / Path(fresh).name / "a.bin").read_bytes() == (source / "a.bin").read_bytes()

    no_r = cli("put", *target.args, str(source), target.path("x"))
    assert no_r.returncode == 2
    assert_one_line_error(no_r.stderr, "add -r")
    no_r_get = cli("get", *target.args, fresh, str(tmp_path / "y"))
    assert no_r_get.returncode == 2  # a usage error, like put's
    assert_one_line_error(no_r_get.stderr, "is a folder", "add -r")


def test_quiet_prints_nothing_but_errors(target: Target, tmp_path: Path) -> None:
    source = tmp_path / "q.txt"
    source.write_text("quiet\n")
    put = cli("put", "-q", *target.args, str(source), target.path("q.txt"))
    assert (put.returncode, put.stdout, put.stderr) == (0, "", "")
    session = cli("session", "--quiet", *target.args, "--out", str(tmp_path / "o"), "--", "sh", "-c",
                  "echo 'STATUS: 50% half' >> \"$OPTIO_LOG\"; echo DONE >> \"$OPTIO_LOG\"")  # fmt: skip
    assert (session.returncode, session.stdout) == (0, ""), session.stderr
    failed = cli("get", "-q", *target.args, target.path("absent"), str(tmp_path / "z"))
    assert failed.returncode == 1
    assert_one_line_error(failed.stderr, "no such file")


def test_port_option_and_options_before_the_subcommand(optio_sshd: SshServer) -> None:
    keys = ["-i", optio_sshd.key_path, "--known-hosts", optio_sshd.known_hosts]
    user_host = f"{optio_sshd.user}@127.0.0.1"
    with_p, before, before_eq = cli_many(
        ["run", "--ssh", user_host, "-p", str(optio_sshd.port), *keys, "--", "echo", "via -p"],
        ["--ssh", user_host, "-p", str(optio_sshd.port), *keys, "-q", "run", "--", "echo", "before"],
        [f"--ssh={user_host}", f"--port={optio_sshd.port}", *keys, "run", "echo", "eq"],
    )
    assert (with_p.returncode, with_p.stdout) == (0, "via -p\n"), with_p.stderr
    assert (before.returncode, before.stdout) == (0, "before\n"), before.stderr
    assert (before_eq.returncode, before_eq.stdout) == (0, "eq\n"), before_eq.stderr
    clash, no_ssh = cli_many(
        ["run", "--ssh", f"{user_host}:2222", "-p", "2200", "--", "true"],
        ["run", "-p", "2200", "--", "true"],
    )
    assert clash.returncode == 2
    assert_one_line_error(clash.stderr, "two ports")
    assert no_ssh.returncode == 2
    assert_one_line_error(no_ssh.stderr, "-p", "--ssh")


@pytest.mark.timeout(60)
def test_session_timeout_stops_the_worker_and_exits_124(target: Target, tmp_path: Path) -> None:
    sleep = unique_sleep()
    result = cli("session", *target.args, "--timeout", "2", "--out", str(tmp_path / "o"), "--",
                 "sh", "-c", f"echo 'STATUS: started' >> \"$OPTIO_LOG\"; sleep {sleep}")  # fmt: skip
    assert result.returncode == 124
    assert_one_line_error(result.stderr, "timed out after 2 s")
    assert processes_matching(re.escape(sleep), within=10) == ""


@pytest.mark.timeout(30)
def test_tunnel_listens_on_the_local_port_asked_for(optio_sshd: SshServer, greeting_server: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        wanted = probe.getsockname()[1]
    with subprocess.Popen(
        [*CLI, "tunnel", *ssh_args(optio_sshd), "--local-port", str(wanted), str(greeting_server)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            assert int(process.stdout.readline()) == wanted
            with socket.create_connection(("127.0.0.1", wanted), timeout=10) as connection:
                assert connection.recv(100).startswith(b"hello")
            process.send_signal(signal.SIGINT)
            assert process.wait(15) == 0
        finally:
            if process.poll() is None:
                process.kill()
    local = cli("tunnel", "--local-port", "1", "2")
    assert local.returncode == 2
    assert_one_line_error(local.stderr, "already local")


def test_session_upload_takes_files_folders_and_globs_alike(target: Target, tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    (kit / "data").mkdir(parents=True)
    (kit / "data" / "input.txt").write_text("three words here\n")
    (kit / "one.sh").write_text("a=1\n")
    (kit / "two.sh").write_text("b=2\n")
    script = (
        "test -f data/input.txt && test -f one.sh && test -f two.sh || exit 9; "
        'mkdir -p deliverables; wc -w < data/input.txt | tr -d " " > deliverables/n.txt; '
        'echo DELIVERABLE: deliverables/n.txt >> "$OPTIO_LOG"; echo DONE >> "$OPTIO_LOG"'
    )
    out = tmp_path / "out"
    ok = cli("session", *target.args, "--out", str(out), "--upload", str(kit / "data"),
             "--upload", str(kit / "*.sh"), "--", "sh", "-c", script)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (out / "n.txt").read_text() == "3\n"
    no_glob, no_file = cli_many(
        ["session", *target.args, "--upload", str(kit / "*.none"), "--", "true"],
        ["session", *target.args, "--upload", str(kit / "absent"), "--", "true"],
    )
    assert no_glob.returncode == no_file.returncode == 1
    assert_one_line_error(no_glob.stderr, "no file or folder matches")
    assert_one_line_error(no_file.stderr, "no such file or folder")


# ---------------------------------------------------------------- the argv and path rules, every way

_HOST_OPTION_FORMS = st.sampled_from(
    [["--ssh", "me@box"], ["--ssh=me@box:2222"], ["-p", "2200"], ["--port=2200"], ["-i", "key"],
     ["--identity", "run"], ["--known-hosts", "kh"], ["--accept-new"], ["-q"], ["--quiet"]]
)  # fmt: skip
_REST = st.lists(st.sampled_from(["--", "echo", "-p", "--ssh", "x y", "run", "-q", ""]), max_size=6)


@given(
    before=st.lists(_HOST_OPTION_FORMS, max_size=4),
    command=st.sampled_from(["run", "put", "get", "session", "tunnel", "demo"]),
    rest=_REST,
)
def test_host_options_before_the_subcommand_move_after_it_unchanged(
    before: list[list[str]], command: str, rest: list[str]
) -> None:
    moved = [arg for form in before for arg in form]
    argv = [*moved, command, *rest]
    hoisted = hoist_host_options(argv, {"run", "put", "get", "session", "tunnel", "demo"})
    assert hoisted == [command, *moved, *rest]  # same words, same order, subcommand first


@given(rest=_REST)
def test_hoisting_leaves_argv_without_a_subcommand_alone(rest: list[str]) -> None:
    argv = ["--version", *[arg for arg in rest if arg != "run"]]
    assert hoist_host_options(argv, {"run"}) == argv


class _HomeOnly:
    """Just enough of a host for the path rule: its home folder."""

    async def resolve_host_home(self) -> str:
        return "/home/me"


_SEGMENTS = st.lists(
    st.sampled_from(["a", "b c", ".", "..", "~", "-x", "$HOME", "d\nn"]), min_size=1, max_size=5
)


@given(segments=_SEGMENTS, tilde=st.booleans(), trailing=st.booleans())
def test_a_relative_remote_path_stays_relative_to_the_home(
    segments: list[str], tilde: bool, trailing: bool
) -> None:
    typed = ("~/" if tilde else "") + "/".join(segments) + ("/" if trailing else "")
    resolved = asyncio.run(host_path(_HomeOnly(), typed, local=False))  # type: ignore[arg-type]
    rest = typed[2:] if typed.startswith("~/") else "" if typed == "~" else typed  # the rule, restated
    lexical = posixpath.normpath(posixpath.join("/home/me", rest))
    assert resolved == lexical
    assert resolved.startswith("/")


@given(segments=_SEGMENTS)
def test_a_relative_local_path_is_relative_to_the_current_folder(segments: list[str]) -> None:
    typed = "/".join(segments)
    if typed.startswith("~"):
        return  # the local home: os.path.expanduser's business
    assert asyncio.run(host_path(_HomeOnly(), typed, local=True)) == os.path.abspath(typed)  # type: ignore[arg-type]
