"""What consumers of the published package rely on, pinned so it cannot drift.

The SPEC sections "Module map", "What a consumer observes: exact texts" (the
exception texts) and "Names that later consumers call". Behaviour runs on both
hosts where it applies. (The module map's import checks live in
test_public_api.py; the session's progress texts in the session tests.)
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import subprocess
import types
from typing import Any

import asyncssh
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optio_host
from optio_host import CommandTimeout, DownloadFailed, HostCommandError, LocalHost, RemoteHost, RunResult
from optio_host.errors import HostNotConnected
from optio_host.host import Host, proc_wait
from optio_host.testing.sshd import SshServer

pytestmark = pytest.mark.timeout(60)

# --------------------------------------------------------------------- exception texts


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("echo nope >&2; exit 1", "'echo nope >&2; exit 1'"),
        (["ls", "-l", "a b"], "['ls', '-l', 'a b']"),
        (("ls",), "('ls',)"),
    ],
)
def test_host_command_error_text_is_the_published_one(command: Any, shown: str) -> None:
    error = HostCommandError(command, 1, "out", "x" * 150 + "y" * 150)
    assert str(error) == f"command failed (exit 1): {shown}\nstderr: {'x' * 150}{'y' * 50}"
    assert (error.command, error.exit_code, error.stdout) == (command, 1, "out")


def test_host_command_error_text_with_empty_stderr() -> None:
    assert str(HostCommandError("false", 1, "", "")) == "command failed (exit 1): 'false'\nstderr: "


async def test_run_check_raises_the_published_text(host: Host) -> None:
    command = "echo nope >&2; exit 7"
    with pytest.raises(HostCommandError) as caught:
        await host.run(command, check=True)
    assert str(caught.value) == f"command failed (exit 7): {command!r}\nstderr: nope\n"
    assert "exit 7" in str(caught.value)


async def test_a_timeout_keeps_the_published_text_and_adds_after_it(host: Host) -> None:
    with pytest.raises(CommandTimeout) as caught:
        await host.run(["sleep", "30"], timeout=0.5)
    code = caught.value.exit_code
    head = f"command failed (exit {code}): ['sleep', '30']\nstderr: \n"
    assert str(caught.value).startswith(head)
    assert "timed out after 0.5s" in str(caught.value)[len(head) :]


def test_download_failed_text_is_the_published_one() -> None:
    error = DownloadFailed(url="http://h/x", target="/t/x", exit_code=22, stderr_tail="curl: (22) 404\n")
    assert str(error) == "download failed (exit 22): http://h/x -> /t/x\nstderr: curl: (22) 404\n"
    # The tail is at most ~1 KiB: shown whole (its first 200 characters are the published text).
    assert str(DownloadFailed(url="u", target="/t", exit_code=22, stderr_tail="e" * 900)).endswith(
        "\nstderr: " + "e" * 900
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@example.org/f?x=1", "https://***@example.org/f?x=1"),
        ("http://us%40er:p@ss:w@127.0.0.1:8000/a@b", "http://***@127.0.0.1:8000/a@b"),
        ("ftp://anonymous@example.org/f", "ftp://***@example.org/f"),
        ("user:pw@example.org/f", "***@example.org/f"),
        ("http://example.org/a@b", "http://example.org/a@b"),
    ],
)
def test_download_failed_never_shows_credentials(url: str, shown: str) -> None:
    error = DownloadFailed(url=url, target="/t/f", exit_code=22, stderr_tail="")
    assert str(error) == f"download failed (exit 22): {shown} -> /t/f\nstderr: "
    for secret in ("s3cret", "p@ss", "pw@"):
        assert secret not in str(error) and secret not in repr(error)
    assert error.url == url  # the attribute keeps what was given


def test_redact_url_masks_credentials_quoted_in_other_text() -> None:
    from optio_host.errors import redact_credentials

    url = "https://me:s3cret@example.org/f"
    assert redact_credentials(url, "curl: could not log in as me:s3cret") == "curl: could not log in as ***"
    assert redact_credentials("https://example.org/f", "me:s3cret") == "me:s3cret"
    error = DownloadFailed(url=url, target="/t", exit_code=67, stderr_tail="denied for me:s3cret")
    assert str(error).endswith("\nstderr: denied for ***") and "s3cret" not in repr(error)


# --------------------------------------------------------------------- names later consumers call


def test_later_names_are_the_same_objects() -> None:
    host_module = importlib.import_module("optio_host.host")
    assert host_module.HostCommandError is optio_host.HostCommandError is HostCommandError
    assert host_module.RunResult is optio_host.RunResult is RunResult
    assert host_module.proc_wait is proc_wait
    assert "proc_wait" in host_module.__all__


@pytest.mark.parametrize("owner", [Host, LocalHost, RemoteHost])
def test_launch_subprocess_and_run_take_env_remove(owner: type) -> None:
    for method in ("launch_subprocess", "run"):
        parameter = inspect.signature(getattr(owner, method)).parameters["env_remove"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None


async def test_proc_wait_returns_the_exit_code(host: Host) -> None:
    handle = await host.launch_subprocess("echo hi; exit 3")
    assert [chunk async for chunk in handle.stdout] == [b"hi\n"]
    assert await proc_wait(handle) == 3


async def test_proc_wait_takes_any_object_with_a_pid_like(host: Host) -> None:
    handle = await host.launch_subprocess("exit 5")
    async for _ in handle.stdout:
        pass
    # A consumer's own handle type: only .pid_like, whose wait() is asyncio's or asyncssh's.
    assert await proc_wait(types.SimpleNamespace(pid_like=handle.pid_like)) == 5


async def test_proc_wait_refuses_what_it_cannot_wait_for() -> None:
    with pytest.raises(TypeError, match="ProcessHandle"):
        await proc_wait(object())


async def _environment(host: Host, **kwargs: Any) -> dict[str, str]:
    result = await host.run(["env", "-0"], check=True, **kwargs)
    return dict(entry.split("=", 1) for entry in result.stdout.split("\0") if entry)


async def test_env_remove_drops_matching_inherited_names_then_applies_env(host: Host) -> None:
    given = {"MY_TOKEN": "given", "HOME": "/given"}
    # The baseline also passes env: locally that inherits os.environ, the same as env_remove does.
    inherited = await _environment(host, env={"OPTIO_BASELINE": "1"})
    assert "HOME" in inherited and "PATH" in inherited
    patterns = ["HOM?", "SSH_*", "[!P]ATH", "LOGNAM[A-F]", "*_TOKEN", "OPTIO_BASE*"]
    left = await _environment(host, env_remove=patterns, env=given)
    expected = {k: v for k, v in inherited.items() if not any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    assert left == {**expected, **given}
    assert "PATH" in left and "OPTIO_BASELINE" not in left


async def test_env_remove_on_launch_subprocess(host: Host) -> None:
    handle = await host.launch_subprocess(
        'printf "%s|%s" "${HOME-unset}" "${PATH:+set}"', env_remove=["HOME"]
    )
    output = b"".join([chunk async for chunk in handle.stdout])
    assert (output, await proc_wait(handle)) == (b"unset|set", 0)


async def test_env_remove_sees_names_only_never_values(
    local_host: LocalHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A value that looks like another assignment must not make that name disappear or appear.
    monkeypatch.setenv("OPTIO_SECRET_TOKEN", "x\nOPTIO_KEEP=forged")
    monkeypatch.setenv("OPTIO_KEEP", "real")
    left = await _environment(local_host, env_remove=["*_TOKEN"])
    assert "OPTIO_SECRET_TOKEN" not in left and left["OPTIO_KEEP"] == "real"


@pytest.mark.parametrize(
    ("patterns", "error"),
    [
        ("*_TOKEN", TypeError),
        ([b"X"], TypeError),
        (["A\\B"], ValueError),
        (["[^A]"], ValueError),
        (["A B"], ValueError),
        (["$(reboot)"], ValueError),
    ],
)
async def test_env_remove_is_checked_before_anything_runs(host: Host, patterns: Any, error: type) -> None:
    with pytest.raises(error, match="env_remove"):
        await host.launch_subprocess("exit 0", env_remove=patterns)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True),
            st.from_regex(r"[A-Za-z0-9_*?\[\]!-]{0,8}", fullmatch=True),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_sh_case_matches_like_fnmatch(pairs: list[tuple[str, str]]) -> None:
    """The remote side matches with sh's `case`: it must agree with fnmatch on every allowed pattern."""
    script = 'while [ "$#" -gt 0 ]; do case $1 in $2) echo y ;; *) echo n ;; esac; shift 2; done'
    argv = ["/bin/sh", "-c", script, "sh", *[part for pair in pairs for part in pair]]
    answers = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout.split()
    assert answers == ["y" if fnmatch.fnmatchcase(name, pattern) else "n" for name, pattern in pairs]


# --------------------------------------------------------------------- RemoteHost.connection


async def test_connection_is_the_live_asyncssh_connection(remote_host: RemoteHost) -> None:
    connection = remote_host.connection
    assert isinstance(connection, asyncssh.SSHClientConnection)
    assert remote_host._conn is connection
    result = await connection.run("echo escape-hatch", check=True)
    assert result.stdout == "escape-hatch\n"
    with pytest.raises(AttributeError):
        remote_host._conn = None  # type: ignore[misc]


async def test_connection_before_connect(optio_sshd: SshServer) -> None:
    host = RemoteHost(optio_sshd.ssh_config())
    assert host._conn is None
    with pytest.raises(HostNotConnected, match="connect"):
        _ = host.connection
    async with host:
        assert host._conn is host.connection
    assert host._conn is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h/f.bin?token=abcdef&x=1", "https://h/f.bin?token=***&x=1"),
        (
            "https://s3/b/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=deadbeef&X-Amz-Date=20261130",
            "https://s3/b/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Date=20261130",
        ),
        ("https://me:pw@h/f?api_key=zzzz#part", "https://***@h/f?api_key=***#part"),
        ("http://h/f?keyboard=1&monkey=2&page=3", "http://h/f?keyboard=1&monkey=2&page=3"),
    ],
)
def test_download_failed_hides_credentials_in_the_query_too(url: str, shown: str) -> None:
    from optio_host import DownloadFailed

    secret = url.split("=")[1].split("&")[0]
    failed = DownloadFailed(url=url, target="/t/f.bin", exit_code=22, stderr_tail=f"curl: {url} failed")
    text = str(failed)
    assert text.startswith(f"download failed (exit 22): {shown} -> /t/f.bin\nstderr: curl: {shown} failed")
    if shown != url:
        assert secret not in text and secret not in repr(failed)
