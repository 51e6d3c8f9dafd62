"""The download task against a real HTTP server on loopback, on this machine and on each host."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import os
import posixpath
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

import optio_host
from optio_host import DownloadFailed, HookContext, Host, LocalHost, create_download_task
from optio_host.cli._session import _CliContext
from optio_host.download import STDERR_TAIL
from optio_host.testing import RecordingContext

# ------------------------------------------------------------------ HTTP server


def body_of(size: int) -> bytes:
    """Deterministic, incompressible-looking content of ``size`` bytes."""
    seed = hashlib.sha256(str(size).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


LARGE = 4 * 1024 * 1024
SMALL = 300_000


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.server.authorizations.append(self.headers.get("Authorization"))
        try:
            if path.startswith("/sized/"):
                self._send(body_of(int(path.rsplit("/", 1)[1])))
            elif path.startswith("/paced/"):
                self._send(body_of(int(path.rsplit("/", 1)[1])), pace=True)
            elif path == "/unsized":
                # HTTP/1.0 without Content-Length: the body ends when the connection closes.
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body_of(SMALL))
            elif path == "/short":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(body_of(40_000))
                self.wfile.flush()
                self.close_connection = True
            elif path.startswith("/endless/"):
                self._endless(path.rsplit("/", 1)[1])
            elif path.startswith("/to/"):
                self.send_response(302)
                self.send_header("Location", unquote(path[len("/to/") :]))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", "/sized/" + path.rsplit("/", 1)[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                payload = b"not here\n" * 1000
                self.send_response(404)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
        except OSError:
            pass  # the client went away (cancelled download): nothing to answer

    def _send(self, data: bytes, *, pace: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        step = 64 * 1024
        for start in range(0, len(data), step):
            self.wfile.write(data[start : start + step])
            if pace:
                # ~1 s for LARGE: long enough for curl's 10 Hz bar to show intermediate values.
                self.wfile.flush()
                time.sleep(0.015)

    def _endless(self, marker: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10**12))
        self.end_headers()
        started = self.server.started.setdefault(marker, threading.Event())
        started.set()
        while not self.server.stopping.is_set():
            self.wfile.write(b"x" * 1024)
            self.wfile.flush()
            time.sleep(0.02)


class _Server(ThreadingHTTPServer):
    # Join handler threads on close so none outlives the test session.
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.started: dict[str, threading.Event] = {}
        self.authorizations: list[str | None] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def started_event(self, marker: str) -> threading.Event:
        return self.started.setdefault(marker, threading.Event())


@pytest.fixture(scope="module")
def http_server() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # curl honours *_proxy from the environment; a developer's proxy must not see loopback URLs.
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


# ------------------------------------------------------------------ where downloads land


@dataclass
class Site:
    """Where a download lands: ``task_host`` (None: this machine) and a host to inspect it with."""

    task_host: Host | None
    inspect: Host
    folder: str

    async def names(self, folder: str | None = None) -> list[str]:
        """Every entry in the folder, hidden ones included (temporary files are hidden)."""
        base = folder or self.folder
        found = await self.inspect.glob(base + "/*") + await self.inspect.glob(base + "/.*")
        return sorted(posixpath.basename(path) for path in found)

    async def content(self, path: str) -> bytes:
        return await self.inspect.fetch_bytes_from_host(path)

    async def exists(self, path: str) -> bool:
        return await self.inspect.file_size(path) is not None


@pytest.fixture(params=["none", "local", "remote"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Site:
    # A plain fixture: it may pull in the async host fixtures with getfixturevalue.
    if request.param == "none":
        inspect_host = LocalHost(tmp_path / "inspect")  # absolute paths only: needs no connect
        return Site(None, inspect_host, str(tmp_path / "downloads"))
    host: Host = request.getfixturevalue(f"{request.param}_host")
    return Site(host, host, host.workdir + "/downloads")


def percents(ctx: RecordingContext) -> list[float]:
    return [percent for percent, _ in ctx.progress[1:] if percent is not None]


def assert_progress_rules(ctx: RecordingContext, basename: str) -> None:
    assert ctx.progress[0] == (None, f"Downloading {basename}")
    values = percents(ctx)
    assert values, f"no numeric progress after the first message: {ctx.progress}"
    assert all(isinstance(value, (int, float)) for value in values)
    assert values == sorted(values), f"percents went down: {values}"
    assert values[-1] >= 99
    assert all(0 <= value <= 100 for value in values)


async def run_task(site: Site, url: str, target: str, **kwargs: Any) -> RecordingContext:
    ctx = RecordingContext()
    task = create_download_task(
        "test.download-0", "download", url=url, target=target, host=site.task_host, **kwargs
    )
    await task.execute(ctx)
    return ctx


# ------------------------------------------------------------------ the task object


def test_signature_and_task_fields() -> None:
    params = inspect.signature(create_download_task).parameters
    assert list(params)[:2] == ["process_id", "name"]
    for name in ("url", "target", "host", "description", "cleanup_on_fail", "expected_sha256"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["host"].default is None
    assert params["description"].default is None
    assert params["cleanup_on_fail"].default is True
    assert params["expected_sha256"].default is None
    assert optio_host.download.DownloadFailed is optio_host.errors.DownloadFailed is optio_host.DownloadFailed

    task = create_download_task(
        "p.download-3", "download x.bin", url="http://127.0.0.1:1/x", target="/t/x.bin", description="fetch x"
    )
    assert (task.process_id, task.name, task.description) == ("p.download-3", "download x.bin", "fetch x")
    assert task.cancellable is True
    assert task.supports_resume is False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": "relative/x.bin"}, "absolute path"),
        ({"target": ""}, "absolute path"),
        ({"target": "/"}, "name a file"),
        ({"target": "/tmp/folder/"}, "name a file"),
        ({"target": "/tmp/folder/.."}, "name a file"),
        ({"url": ""}, "url"),
        ({"expected_sha256": "abc"}, "64 hex digits"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"url": "http://127.0.0.1:1/x", "target": "/tmp/x.bin", **kwargs}
    with pytest.raises(ValueError, match=match):
        create_download_task("p", "n", **arguments)


def test_download_failed_message_names_everything() -> None:
    error = DownloadFailed(url="http://h/x", target="/t/x", exit_code=22, stderr_tail="curl: (22) 404")
    text = str(error)
    for part in ("http://h/x", "/t/x", "22", "curl: (22) 404"):
        assert part in text


# ------------------------------------------------------------------ downloads


@pytest.mark.timeout(30)
async def test_sized_body_lands_with_rising_progress(site: Site, http_server: _Server) -> None:
    target = site.folder + "/large.bin"
    ctx = await run_task(site, http_server.url(f"/paced/{LARGE}"), target)

    assert await site.content(target) == body_of(LARGE)
    assert_progress_rules(ctx, "large.bin")
    # Progress came from curl while it ran, not only at the end.
    assert any(0 < value < 99 for value in percents(ctx)), ctx.progress
    assert len(ctx.progress) < 120, "progress is not throttled"
    assert await site.names() == ["large.bin"], "a temporary file was left behind"


@pytest.mark.timeout(30)
async def test_missing_parent_folders_are_created(site: Site, http_server: _Server) -> None:
    target = site.folder + "/a/b/c/small.bin"
    await run_task(site, http_server.url(f"/sized/{SMALL}"), target)
    assert await site.content(target) == body_of(SMALL)


@pytest.mark.timeout(30)
async def test_replaces_an_existing_target(site: Site, http_server: _Server) -> None:
    target = site.folder + "/small.bin"
    await site.inspect.put_file_to_host(b"old content", target)
    await run_task(site, http_server.url(f"/sized/{SMALL}"), target)
    assert await site.content(target) == body_of(SMALL)
    assert await site.names() == ["small.bin"]


@pytest.mark.timeout(30)
async def test_unsized_body_still_ends_at_100(site: Site, http_server: _Server) -> None:
    target = site.folder + "/unsized.bin"
    ctx = await run_task(site, http_server.url("/unsized"), target)
    assert await site.content(target) == body_of(SMALL)
    assert_progress_rules(ctx, "unsized.bin")


@pytest.mark.timeout(30)
async def test_redirects_odd_urls_and_odd_file_names(site: Site, http_server: _Server) -> None:
    # "[1]" and "{a,b}" would be curl URL globs; the file name needs quoting in any shell.
    name = "-odd $name `x` 'q' \"d\" [1].bin"
    target = site.folder + "/" + name
    url = http_server.url(f"/redirect/{SMALL}") + "?glob=[1-3]&set={a,b}&q=" + quote("$(id)")
    ctx = await run_task(site, url, target)
    assert await site.content(target) == body_of(SMALL)
    assert ctx.progress[0] == (None, f"Downloading {name}")
    assert await site.names() == [name]


@pytest.mark.timeout(30)
async def test_hook_context_download_file_runs_it_as_a_child(host: Host, http_server: _Server) -> None:
    ctx = RecordingContext("job")
    digest = hashlib.sha256(body_of(SMALL)).hexdigest()
    await HookContext(ctx, host).download_file(
        http_server.url(f"/sized/{SMALL}"), "fetched/file.bin", expected_sha256=digest
    )
    assert await host.fetch_bytes_from_host(host.workdir + "/fetched/file.bin") == body_of(SMALL)
    [child] = ctx.children
    assert (child.process_id, child.name) == ("job.download-0", "download file.bin")
    assert_progress_rules(ctx.child_contexts[0], "file.bin")


@pytest.mark.timeout(30)
async def test_hook_context_download_file_works_under_the_cli_context(
    local_host: Host, http_server: _Server
) -> None:
    # The CLI's context runs the child inline too; the display hears its messages, not its percents.
    heard: list[tuple[float | None, str | None]] = []
    ctx = _CliContext(lambda percent, message: heard.append((percent, message)))
    await HookContext(ctx, local_host).download_file(http_server.url(f"/sized/{SMALL}"), "cli/file.bin")
    assert await local_host.fetch_bytes_from_host(local_host.workdir + "/cli/file.bin") == body_of(SMALL)
    assert heard == [(None, "Downloading file.bin")]
    assert ctx._child_counter == {"next": 1}


# ------------------------------------------------------------------ failures


@pytest.mark.timeout(30)
async def test_http_error_fails_with_curl_exit_22_and_removes_the_target(
    site: Site, http_server: _Server
) -> None:
    target = site.folder + "/missing.bin"
    await site.inspect.put_file_to_host(b"stale", target)
    url = http_server.url("/missing.bin")
    with pytest.raises(DownloadFailed) as caught:
        await run_task(site, url, target)

    error = caught.value
    assert error.exit_code == 22
    assert (error.url, error.target) == (url, target)
    assert "404" in error.stderr_tail
    assert "not here" not in error.stderr_tail, "the error body must not be written anywhere"
    assert 0 < len(error.stderr_tail) <= STDERR_TAIL
    for part in (url, target, "22"):
        assert part in str(error)
    assert not await site.exists(target)
    assert await site.names() == []


@pytest.mark.timeout(30)
async def test_without_cleanup_on_fail_an_existing_target_is_kept(site: Site, http_server: _Server) -> None:
    target = site.folder + "/keep.bin"
    await site.inspect.put_file_to_host(b"previous", target)
    with pytest.raises(DownloadFailed):
        await run_task(site, http_server.url("/nothing"), target, cleanup_on_fail=False)
    assert await site.content(target) == b"previous"
    assert await site.names() == ["keep.bin"], "the temporary file must go even without cleanup_on_fail"


@pytest.mark.timeout(30)
async def test_short_body_fails_and_leaves_nothing(site: Site, http_server: _Server) -> None:
    target = site.folder + "/short.bin"
    with pytest.raises(DownloadFailed) as caught:
        await run_task(site, http_server.url("/short"), target)
    assert caught.value.exit_code == 18  # curl: partial file
    assert "curl: (18)" in caught.value.stderr_tail
    assert "#" not in caught.value.stderr_tail, "progress bar leaked into the error text"
    assert await site.names() == []


@pytest.mark.timeout(30)
async def test_unreachable_server_fails_with_curl_exit_7(site: Site) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"  # just free: nothing listens there
    with pytest.raises(DownloadFailed) as caught:
        await run_task(site, url, site.folder + "/x.bin")
    assert caught.value.exit_code == 7


# ------------------------------------------------------------------ integrity


@pytest.mark.timeout(30)
async def test_matching_checksum_is_accepted(site: Site, http_server: _Server) -> None:
    target = site.folder + "/checked.bin"
    digest = hashlib.sha256(body_of(SMALL)).hexdigest()
    ctx = await run_task(site, http_server.url(f"/sized/{SMALL}"), target, expected_sha256=digest.upper())
    assert await site.content(target) == body_of(SMALL)
    assert_progress_rules(ctx, "checked.bin")


@pytest.mark.timeout(30)
async def test_checksum_mismatch_fails_naming_both_digests(site: Site, http_server: _Server) -> None:
    target = site.folder + "/checked.bin"
    wrong = "0" * 64
    actual = hashlib.sha256(body_of(SMALL)).hexdigest()
    with pytest.raises(DownloadFailed) as caught:
        await run_task(site, http_server.url(f"/sized/{SMALL}"), target, expected_sha256=wrong)
    assert wrong in str(caught.value)
    assert actual in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)
    assert not await site.exists(target)
    assert await site.names() == []


# ------------------------------------------------------------------ cancellation


async def curl_running(site: Site, marker: str) -> bool:
    """Whether a curl writing to a target named with ``marker`` runs (its URL is not on its command line)."""
    probe = site.task_host or site.inspect
    # "[c]url" matches curl's command line but not pgrep's own.
    result = await probe.run(["pgrep", "-f", f"[c]url .*{marker}"], cwd="/")
    assert result.exit_code in (0, 1), result
    return result.exit_code == 0


@pytest.mark.timeout(30)
async def test_cancellation_stops_curl_and_removes_everything(site: Site, http_server: _Server) -> None:
    marker = "m" + secrets.token_hex(8)
    started = http_server.started_event(marker)
    target = site.folder + f"/endless-{marker}.bin"
    await site.inspect.put_file_to_host(b"old", target)
    ctx = RecordingContext()
    task = create_download_task(
        "t", "download", url=http_server.url(f"/endless/{marker}"), target=target, host=site.task_host
    )
    running = asyncio.create_task(task.execute(ctx))
    try:
        assert await asyncio.to_thread(started.wait, 15), "the download never reached the server"
        assert await curl_running(site, marker)
        cancelled_at = time.monotonic()
        ctx.cancel()
        await asyncio.wait_for(running, 10)  # returns without raising
        assert time.monotonic() - cancelled_at < 4
    finally:
        running.cancel()
    assert not await curl_running(site, marker)
    assert not await site.exists(target)
    assert await site.names() == []


@pytest.mark.timeout(30)
async def test_cancelled_before_start_downloads_nothing(site: Site, http_server: _Server) -> None:
    target = site.folder + "/never.bin"
    ctx = RecordingContext()
    ctx.cancel()
    task = create_download_task(
        "t", "d", url=http_server.url(f"/sized/{SMALL}"), target=target, host=site.task_host
    )
    await task.execute(ctx)
    assert ctx.progress == [(None, "Downloading never.bin")]
    assert not await site.exists(target)


@pytest.mark.timeout(30)
async def test_asyncio_cancellation_kills_curl_too(local_host: Host, http_server: _Server) -> None:
    marker = "m" + secrets.token_hex(8)
    started = http_server.started_event(marker)
    site = Site(local_host, local_host, local_host.workdir)
    task = create_download_task(
        "t",
        "d",
        url=http_server.url(f"/endless/{marker}"),
        target=f"{site.folder}/x-{marker}.bin",
        host=local_host,
    )
    running = asyncio.create_task(task.execute(RecordingContext()))
    assert await asyncio.to_thread(started.wait, 15)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not await curl_running(site, marker)
    assert await site.names() == []


# ------------------------------------------------------------------ curl's output, with a stand-in curl


def fake_curl(folder: Path, script: str) -> None:
    """Put a ``curl`` shell script first on PATH (LocalHost passes the environment on)."""
    path = folder / "curl"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.timeout(30)
async def test_stderr_tail_is_bounded_and_free_of_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_curl(
        bin_dir,
        r"""printf '\r#=#=#  \r##O#-#  \r###        5.0%%\r######     40,5%%\r#####     30.0%%' >&2
i=0; while [ $i -lt 200 ]; do echo "curl: noise line $i with some padding text" >&2; i=$((i+1)); done
echo 'curl: (56) Recv failure: the last words' >&2
exit 56
""",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    ctx = RecordingContext()
    task = create_download_task("t", "d", url="http://127.0.0.1:1/x", target=str(tmp_path / "out" / "x.bin"))
    with pytest.raises(DownloadFailed) as caught:
        await task.execute(ctx)
    tail = caught.value.stderr_tail
    assert caught.value.exit_code == 56
    assert len(tail) <= STDERR_TAIL
    assert tail.endswith("curl: (56) Recv failure: the last words")
    assert "#" not in tail
    assert "%" not in tail
    # 5.0, then 40.5; 30.0 would go backwards and is not reported.
    assert percents(ctx) == [5.0, 40.5]


@pytest.mark.timeout(30)
async def test_missing_curl_is_a_clear_download_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    task = create_download_task("t", "d", url="http://127.0.0.1:1/x", target=str(tmp_path / "x.bin"))
    with pytest.raises(DownloadFailed, match="install curl") as caught:
        await task.execute(RecordingContext())
    assert caught.value.exit_code == 127


# ------------------------------------------------------------------ hardening: protocols, credentials, links


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "FILE:///etc/passwd", "dict://127.0.0.1:1/x", "scp://h/x"]
)
def test_only_http_and_https_by_default(url: str) -> None:
    scheme = url.split(":", 1)[0]
    with pytest.raises(ValueError, match=f"scheme '{scheme}' is not allowed.*protocols="):
        create_download_task("t", "d", url=url, target="/tmp/x.bin")


@pytest.mark.parametrize(
    ("protocols", "error"),
    [("https", TypeError), ((), TypeError), (("ht tp",), ValueError), ((1,), ValueError)],
)
def test_protocols_are_checked(protocols: Any, error: type) -> None:
    with pytest.raises(error, match="protocols"):
        create_download_task("t", "d", url="http://h/x", target="/tmp/x.bin", protocols=protocols)


@pytest.mark.timeout(30)
async def test_curl_itself_refuses_other_protocols(site: Site, http_server: _Server) -> None:
    # No scheme: curl guesses ftp from the name; a redirect to ftp: both refused by curl's --proto.
    for url in ("ftp.localhost/x", http_server.url("/to/" + quote("ftp://127.0.0.1:1/x", safe=""))):
        with pytest.raises(DownloadFailed) as caught:
            await run_task(site, url, site.folder + "/refused.bin")
        assert caught.value.exit_code == 1, caught.value
        assert "disabled" in caught.value.stderr_tail
    assert await site.names() == []


@pytest.mark.timeout(30)
async def test_protocols_widen_what_is_fetched(site: Site) -> None:
    source = site.folder + "/source/a file.txt"
    await site.inspect.put_file_to_host(b"from a file URL", source)
    url = "file://" + quote(source)
    target = site.folder + "/copy.txt"
    await run_task(site, url, target, protocols=("http", "https", "file"))
    assert await site.content(target) == b"from a file URL"


def _command_lines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes())
            except OSError:
                pass  # ended meanwhile, or not ours to read
    return found


@pytest.mark.timeout(30)
async def test_credentials_stay_off_command_lines_and_out_of_messages(
    site: Site, http_server: _Server
) -> None:
    marker = "m" + secrets.token_hex(8)
    secret = "pw-" + secrets.token_hex(8)
    port = http_server.server_address[1]
    url = f"http://someone:{secret}@127.0.0.1:{port}/endless/{marker}"
    ctx = RecordingContext()
    task = create_download_task(
        "t", "d", url=url, target=f"{site.folder}/c-{marker}.bin", host=site.task_host
    )
    running = asyncio.create_task(task.execute(ctx))
    try:
        assert await asyncio.to_thread(http_server.started_event(marker).wait, 15)
        assert await curl_running(site, marker)
        # curl runs on this machine (a loopback sshd for the remote host): its argv is visible here.
        assert not [line for line in _command_lines() if secret.encode() in line]
        ctx.cancel()
        await asyncio.wait_for(running, 10)
    finally:
        running.cancel()
    expected = "Basic " + base64.b64encode(f"someone:{secret}".encode()).decode()
    assert expected in http_server.authorizations  # the credentials did reach the server

    failing = f"http://someone:{secret}@127.0.0.1:{port}/missing"
    with pytest.raises(DownloadFailed) as caught:
        await run_task(site, failing, site.folder + "/missing.bin")
    shown = f"http://***@127.0.0.1:{port}/missing"
    assert str(caught.value).startswith(
        f"download failed (exit 22): {shown} -> {site.folder}/missing.bin\nstderr: "
    )
    for text in (str(caught.value), repr(caught.value), repr(ctx.progress)):
        assert secret not in text


@pytest.mark.timeout(30)
async def test_a_url_with_quotes_and_backslashes_reaches_curl_intact(
    site: Site, http_server: _Server
) -> None:
    # The config line on curl's stdin is a quoted string: quotes and backslashes must survive it.
    target = site.folder + "/quoted.bin"
    await run_task(site, http_server.url(f'/sized/{SMALL}?q="a\\b"'), target)
    assert await site.content(target) == body_of(SMALL)


@pytest.fixture(params=["local", "remote"])
def workdir_site(request: pytest.FixtureRequest) -> Site:
    host: Host = request.getfixturevalue(f"{request.param}_host")
    return Site(host, host, host.workdir)


@pytest.mark.timeout(30)
async def test_a_symlink_leading_out_of_the_workdir_is_refused(
    workdir_site: Site, http_server: _Server
) -> None:
    site = workdir_site
    # Outside the workdir, made by the host's own user (the remote one is another user).
    outside = posixpath.dirname(site.inspect.taskdir) + "/outside-" + secrets.token_hex(4)
    await site.inspect.put_file_to_host(b"keep", outside + "/f.bin")
    await site.inspect.run(["mkdir", outside + "/sub"], check=True)
    links = {"out": outside, "up": "..", "dangling": outside + "/not-yet", "file": outside + "/f.bin"}
    for link, to in links.items():
        await site.inspect.run(["ln", "-s", to, f"{site.folder}/{link}"], check=True)
    for target in ("out/f.bin", "out/sub/new/f.bin", "up/f.bin", "dangling/f.bin", "file/f.bin"):
        with pytest.raises(DownloadFailed, match=r"refused: ") as caught:
            await run_task(site, http_server.url(f"/sized/{SMALL}"), f"{site.folder}/{target}")
        assert caught.value.exit_code is None
    listing = await site.inspect.run(["find", outside], check=True)
    assert sorted(listing.stdout.split()) == sorted([outside, outside + "/f.bin", outside + "/sub"])
    assert await site.content(outside + "/f.bin") == b"keep"  # not written, not removed by the clean-up
    await site.inspect.run(["rm", "-rf", outside], check=True)


@pytest.mark.timeout(30)
async def test_a_symlink_that_stays_inside_the_workdir_is_followed(
    workdir_site: Site, http_server: _Server
) -> None:
    site = workdir_site
    await site.inspect.run(["mkdir", "-p", f"{site.folder}/real"], check=True)
    await site.inspect.run(["ln", "-s", "real", f"{site.folder}/inner"], check=True)
    await run_task(site, http_server.url(f"/sized/{SMALL}"), f"{site.folder}/inner/deeper/f.bin")
    assert await site.content(f"{site.folder}/real/deeper/f.bin") == body_of(SMALL)
    assert await site.names(f"{site.folder}/real/deeper") == ["f.bin"]


@pytest.mark.timeout(30)
async def test_hook_context_download_file_refuses_a_link_out(
    local_host: LocalHost, http_server: _Server, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, f"{local_host.workdir}/link")
    ctx = RecordingContext()
    with pytest.raises(DownloadFailed, match="refused"):
        await HookContext(ctx, local_host).download_file(http_server.url(f"/sized/{SMALL}"), "link/x.bin")
    assert list(outside.iterdir()) == []


class _Host012:
    """A consumer's own host: exactly the 0.1.2 ``Host`` methods, delegating to a LocalHost."""

    def __init__(self, inner: LocalHost) -> None:
        self._inner = inner
        self.taskdir = inner.taskdir
        self.workdir = inner.workdir

    async def launch_subprocess(self, command: Any, *, env: Any = None, cwd: Any = None, **kw: Any) -> Any:
        assert set(kw) <= {"merge_stderr", "stdin"}, kw
        return await self._inner.launch_subprocess(command, env=env, cwd=cwd, **kw)

    async def terminate_subprocess(self, handle: Any, *, aggressive: bool) -> None:
        await self._inner.terminate_subprocess(handle, aggressive=aggressive)

    async def run_command(self, command: str, *, cwd: Any = None, env: Any = None) -> Any:
        assert isinstance(command, str)
        return await self._inner.run_command(command, cwd=cwd, env=env)

    async def remove_file(self, path: str) -> None:
        await self._inner.remove_file(path)

    async def fetch_bytes_from_host(self, absolute_path: str, *, progress_cb: Any = None) -> bytes:
        return await self._inner.fetch_bytes_from_host(absolute_path, progress_cb=progress_cb)


@pytest.mark.timeout(30)
async def test_a_host_with_only_the_0_1_2_methods_works(local_host: LocalHost, http_server: _Server) -> None:
    fake: Any = _Host012(local_host)
    target = local_host.workdir + "/fake/f.bin"
    digest = hashlib.sha256(body_of(SMALL)).hexdigest()
    task = create_download_task(
        "t", "d", url=http_server.url(f"/sized/{SMALL}"), target=target, host=fake, expected_sha256=digest
    )
    await task.execute(RecordingContext())
    assert await local_host.fetch_bytes_from_host(target) == body_of(SMALL)
    bad = create_download_task(
        "t",
        "d",
        url=http_server.url(f"/sized/{SMALL}"),
        target=target + "2",
        host=fake,
        expected_sha256="0" * 64,
    )
    with pytest.raises(DownloadFailed, match=digest):
        await bad.execute(RecordingContext())
    os.symlink("/", local_host.workdir + "/root")
    escape = create_download_task(
        "t", "d", url=http_server.url("/sized/1"), target=local_host.workdir + "/root/x", host=fake
    )
    with pytest.raises(DownloadFailed, match="refused"):
        await escape.execute(RecordingContext())
    assert sorted(os.listdir(local_host.workdir + "/fake")) == ["f.bin"]


class _SwappingHost(_Host012):
    """A host on which the worker swaps ``workdir/sub`` for a link out just before curl starts."""

    def __init__(self, inner: Any, outside: str) -> None:
        super().__init__(inner)
        self._outside = outside

    async def launch_subprocess(self, command: Any, *, env: Any = None, cwd: Any = None, **kw: Any) -> Any:
        swap = f"mv sub sub.real && ln -s {self._outside} sub"  # after the task looked at sub
        result = await self._inner.run_command(swap, cwd=self.workdir)
        assert result.exit_code == 0, result.stderr
        return await super().launch_subprocess(command, env=env, cwd=cwd, **kw)


@pytest.mark.timeout(30)
async def test_a_folder_swapped_for_a_link_out_mid_download_is_never_written_or_cleaned_through(
    workdir_site: Site, http_server: _Server
) -> None:
    inner: Any = workdir_site.inspect
    outside = posixpath.dirname(inner.taskdir) + "/outside-" + secrets.token_hex(4)
    await inner.put_file_to_host(b"keep", outside + "/keep.bin")
    host: Any = _SwappingHost(inner, outside)
    cases = [("/sized/1000", "new.bin"), ("/missing", "keep.bin")]  # a write; a failure's clean-up
    for path, name in cases:
        await inner.run(["mkdir", "-p", inner.workdir + "/sub"], check=True)
        task = create_download_task(
            "t", "d", url=http_server.url(path), target=f"{inner.workdir}/sub/{name}", host=host
        )
        with pytest.raises(DownloadFailed, match="refused: ") as caught:
            await task.execute(RecordingContext())
        assert "outside" in str(caught.value)
        await inner.run("rm sub && mv sub.real sub", check=True)
    listing = await inner.run(["find", outside], check=True)
    assert sorted(listing.stdout.split()) == [outside, outside + "/keep.bin"]
    assert await inner.fetch_bytes_from_host(outside + "/keep.bin") == b"keep"
    await inner.run(["rm", "-rf", outside], check=True)
