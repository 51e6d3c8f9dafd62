"""Pure pieces: quoting, task_dir, SSHConfig, line splitting."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optio_host._lines import LineSplitter, decode_line
from optio_host.paths import task_dir
from optio_host.quoting import env_assignments_line, join, quote, validate_env
from optio_host.types import SSHConfig, effective_host_key_policy

_TEXT = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(words=st.lists(_TEXT, min_size=1, max_size=5))
def test_quoted_words_reach_sh_unchanged(words: list[str]) -> None:
    script = "printf '%s\\0' " + join(words)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, check=True).stdout
    assert out.decode("utf-8", "surrogateescape").split("\0")[:-1] == words


@settings(max_examples=150, deadline=None)
@given(values=st.lists(_TEXT, min_size=1, max_size=4))
def test_env_line_exports_values_unchanged(values: list[str]) -> None:
    env = {f"V{i}": value for i, value in enumerate(values)}
    line = env_assignments_line(env)
    assert "\n" not in line  # one line, so the remote wrapper can `read -r` it
    script = "_optio_nl='\n'\nIFS= read -r e; eval \"$e\"; env -0"
    out = subprocess.run(
        ["/bin/sh", "-c", script], input=(line + "\n").encode(), capture_output=True, check=True
    )
    seen = dict(item.split("=", 1) for item in out.stdout.decode().split("\0")[:-1])
    assert {name: seen[name] for name in env} == env


def test_quote_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote("a\0b")


def test_validate_env_hides_values_in_errors() -> None:
    with pytest.raises(ValueError) as caught:
        validate_env({"TOKEN": "secret\0value"})
    assert "secret" not in str(caught.value) and "TOKEN" in str(caught.value)
    with pytest.raises(TypeError):
        validate_env({"N": 1})  # type: ignore[dict-item]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=10))
def test_line_splitter_is_independent_of_how_bytes_are_split(data: bytes, cuts: list[int]) -> None:
    whole = LineSplitter()
    expected = whole.feed(data)
    pieces = LineSplitter()
    got = []
    previous = 0
    for cut in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        got += pieces.feed(data[previous:cut])
        previous = cut
    assert got == expected
    assert pieces.offset == whole.offset == (data.rfind(b"\n") + 1)


def test_decode_line_strips_one_carriage_return_and_replaces_bad_bytes() -> None:
    assert decode_line(b"abc\r") == "abc"
    assert decode_line(b"a\xffb") == "a\ufffdb"


def test_task_dir_local_and_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = SSHConfig(host="h", user="u", key_path="k")
    for name in ("MY_TASKS_TASK_ROOT", "MY_TASKS_REMOTE_TASK_ROOT", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/me")
    assert (
        task_dir(ssh=None, process_id="p1", consumer_name="my-tasks") == "/home/me/.local/share/my-tasks/p1"
    )
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    assert task_dir(ssh=None, process_id="p1", consumer_name="my-tasks") == "/xdg/my-tasks/p1"
    monkeypatch.setenv("MY_TASKS_TASK_ROOT", "/root-override")
    assert task_dir(ssh=None, process_id="p1", consumer_name="my-tasks") == "/root-override/p1"
    assert task_dir(ssh=ssh, process_id="p.1_-x", consumer_name="my-tasks") == "/tmp/my-tasks/p.1_-x"
    monkeypatch.setenv("MY_TASKS_REMOTE_TASK_ROOT", "/srv/tasks")
    assert task_dir(ssh=ssh, process_id="p1", consumer_name="my-tasks") == "/srv/tasks/p1"


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "$x", "..", ".", "ü"])
def test_task_dir_rejects_unsafe_process_ids(bad: str) -> None:
    with pytest.raises(ValueError, match="process_id"):
        task_dir(ssh=None, process_id=bad, consumer_name="c")


def test_ssh_config_fields_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SSHConfig("h", "u", "~/.ssh/key")
    assert (config.port, config.host_key_policy, config.known_hosts, config.proxy_jump) == (
        22,
        None,
        None,
        None,
    )
    assert (config.connect_timeout, config.keepalive_interval, config.max_sessions) == (15.0, 10.0, 10)
    monkeypatch.delenv("OPTIO_HOST_KEY_POLICY", raising=False)
    assert effective_host_key_policy(config) == "strict"
    monkeypatch.setenv("OPTIO_HOST_KEY_POLICY", "off")
    assert effective_host_key_policy(config) == "off"
    assert effective_host_key_policy(SSHConfig("h", "u", "k", host_key_policy="accept-new")) == "accept-new"
    monkeypatch.setenv("OPTIO_HOST_KEY_POLICY", "bogus")
    with pytest.raises(ValueError, match="OPTIO_HOST_KEY_POLICY"):
        effective_host_key_policy(config)
    with pytest.raises(ValueError, match="port"):
        SSHConfig("h", "u", "k", port=0)
    with pytest.raises(ValueError, match="max_sessions"):
        SSHConfig("h", "u", "k", max_sessions=0)
