"""The Host contract: every test here runs on LocalHost and on RemoteHost (real sshd)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import secrets
import time

import pytest

from optio_host import CommandTimeout, HostCommandError, ProcessHandle, RunResult
from optio_host.host._striped import SEGMENT
from optio_host.host.base import Host

from ._support import HOSTILE_ARGS, HOSTILE_NAMES, chunks_of, sha256

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ identity and workdir


async def test_workdir_is_taskdir_slash_workdir(host: Host) -> None:
    assert host.taskdir.startswith("/")
    assert host.workdir == host.taskdir + "/workdir"


async def test_setup_workdir_is_idempotent_and_private(host: Host) -> None:
    await host.write_text("keep.txt", "kept")
    await host.setup_workdir()
    assert await host.fetch_bytes_from_host(host.workdir + "/keep.txt") == b"kept"
    modes = await host.run(["stat", "-c", "%a", host.taskdir, host.workdir])
    assert modes.stdout.split() == ["700", "700"]


async def test_write_text_creates_parents_and_writes_utf8(host: Host) -> None:
    await host.write_text("a/b/c.txt", "héllo ✓\n")
    assert await host.fetch_bytes_from_host(host.workdir + "/a/b/c.txt") == "héllo ✓\n".encode()


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.txt", "a/../../outside.txt", ""])
async def test_write_text_refuses_paths_leaving_the_workdir(host: Host, bad: str) -> None:
    with pytest.raises(ValueError, match="workdir"):
        await host.write_text(bad, "x")


async def test_resolve_host_home_is_absolute(host: Host) -> None:
    home = await host.resolve_host_home()
    assert home.startswith("/")
    assert (await host.run(["/bin/sh", "-c", 'printf %s "$HOME"'])).stdout == home


async def test_cleanup_taskdir_removes_everything(host: Host) -> None:
    await host.write_text("deep/er/file.txt", "x")
    await host.run(["chmod", "a-w", host.workdir + "/deep/er"])
    await host.cleanup_taskdir(True)
    assert await host.file_size(host.taskdir) is None
    await host.cleanup_taskdir(False)  # already gone: no error


# ------------------------------------------------------------------ run()


async def test_run_argv_passes_hostile_arguments_verbatim(host: Host) -> None:
    result = await host.run(["printf", "%s\\0", *HOSTILE_ARGS])
    assert result.exit_code == 0
    assert result.stdout.split("\0")[:-1] == HOSTILE_ARGS


async def test_run_string_uses_sh(host: Host) -> None:
    result = await host.run("echo out; echo err >&2; exit 3")
    assert result == RunResult("out\n", "err\n", 3)


async def test_run_check_raises_host_command_error(host: Host) -> None:
    with pytest.raises(HostCommandError) as caught:
        await host.run("echo nope >&2; exit 7", check=True)
    error = caught.value
    assert (error.exit_code, error.stderr, error.stdout) == (7, "nope\n", "")
    assert "7" in str(error) and "exit 7" in str(error) and "nope" in str(error)


async def test_run_decodes_invalid_utf8_with_replacement(host: Host) -> None:
    result = await host.run(["printf", "a\\377b"])
    assert result.stdout == "a\ufffdb"


async def test_run_env_values_round_trip(host: Host) -> None:
    env = {f"OPTIO_V{i}": value for i, value in enumerate(HOSTILE_ARGS)}
    result = await host.run(["env", "-0"], env=env)
    seen = dict(item.split("=", 1) for item in result.stdout.split("\0")[:-1])
    assert {name: seen.get(name) for name in env} == env


async def test_run_env_adds_to_inherited_environment(host: Host) -> None:
    result = await host.run(
        ["/bin/sh", "-c", 'printf "%s|%s" "$OPTIO_T" "${PATH:+set}"'], env={"OPTIO_T": "1"}
    )
    assert result.stdout == "1|set"


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "A=B", "Ä", "A;rm"])
async def test_run_rejects_invalid_env_names(host: Host, name: str) -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        await host.run(["true"], env={name: "x"})


async def test_run_feeds_input(host: Host) -> None:
    assert (await host.run("cat", input="héllo")).stdout == "héllo"
    binary = bytes(range(256)) * 1000
    result = await host.run(["sha256sum"], input=binary)
    assert result.stdout.split()[0] == sha256(binary)


async def test_run_without_input_gives_eof_on_stdin(host: Host) -> None:
    result = await host.run("cat; echo done", timeout=10)
    assert result.stdout == "done\n"


async def test_run_in_cwd(host: Host) -> None:
    await host.write_text("sub dir/x", "")
    relative = await host.run(["pwd"], cwd="sub dir")
    absolute = await host.run(["pwd"], cwd=host.workdir + "/sub dir")
    default = await host.run(["pwd"])
    assert relative.stdout == absolute.stdout == host.workdir + "/sub dir\n"
    assert default.stdout == host.workdir + "\n"


async def test_run_in_missing_cwd_is_an_error(host: Host) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        await host.run(["pwd"], cwd=host.workdir + "/does-not-exist")


async def test_run_missing_program_is_file_not_found(host: Host) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-program-xyz"):
        await host.run(["no-such-program-xyz"])
    shell = await host.run("no-such-program-xyz")
    assert shell.exit_code == 127


async def test_run_timeout_raises_with_output_so_far(host: Host) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        await host.run("echo before; sleep 30", timeout=1)
    assert time.monotonic() - started < 10
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, HostCommandError)
    assert caught.value.stdout == "before\n"


async def _still_running(host: Host, argv: str) -> bool:
    found = await host.run(["pgrep", "-x", "-f", argv])
    return found.exit_code == 0


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_run_ends_children_an_exited_shell_left_holding_its_output(host: Host, how: str) -> None:
    # The shell exits at once; its background child keeps stdout open, so run() waits on. A
    # timeout or a cancel must end that child too ("every child it started"), not only the shell.
    child = f"sleep {secrets.randbelow(10**6) + 10**6}"
    command = f"{child} & echo started"
    if how == "timeout":
        with pytest.raises(CommandTimeout):
            await host.run(command, timeout=1)
    else:
        seen = asyncio.Event()
        task = asyncio.ensure_future(host.run(command, on_stdout=lambda _: seen.set()))
        await seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    async with asyncio.timeout(10):  # SIGKILL was sent before run() returned; the exit is quick
        while await _still_running(host, child):  # noqa: ASYNC110 - no event for "a process died"
            await asyncio.sleep(0.05)


async def test_run_command_never_raises_for_exit_status(host: Host) -> None:
    result = await host.run_command("exit 4", env={"A": "b"})
    assert result.exit_code == 4


async def test_long_lines_pass_through_stdout(host: Host) -> None:
    size = 16 * 1024 * 1024
    result = await host.run(["/bin/sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x; echo; echo end"])
    lines = result.stdout.split("\n")
    assert len(lines[0]) == size
    assert lines[1] == "end"


# ------------------------------------------------------------------ launch_subprocess()


async def _drain(handle: ProcessHandle) -> tuple[bytes, bytes]:
    async def read(chunks: object) -> bytes:
        if chunks is None:
            return b""
        return b"".join([chunk async for chunk in chunks])  # type: ignore[attr-defined]

    return await asyncio.gather(read(handle.stdout), read(handle.stderr))


async def test_launch_merges_stderr_by_default(host: Host) -> None:
    handle = await host.launch_subprocess("echo a; echo b >&2; echo c")
    assert handle.stderr is None and handle.stdin is None
    out, _ = await _drain(handle)
    assert await handle.wait() == 0
    assert out == b"a\nb\nc\n"
    assert handle.returncode == 0


async def test_launch_separate_streams_and_stdin(host: Host) -> None:
    handle = await host.launch_subprocess("cat; echo oops >&2; exit 5", merge_stderr=False, stdin=True)
    assert handle.stdin is not None and handle.stderr is not None
    handle.stdin.write(b"to stdin\n")
    await handle.stdin.drain()
    handle.stdin.close()
    await handle.stdin.wait_closed()
    out, err = await _drain(handle)
    assert (out, err) == (b"to stdin\n", b"oops\n")
    assert await handle.wait() == 5
    assert handle.returncode == 5


async def test_launch_returns_while_running_and_pid_like_waits(host: Host) -> None:
    handle = await host.launch_subprocess("read line; echo got $line", stdin=True)
    assert handle.returncode is None
    handle.stdin.write(b"it\n")
    handle.stdin.close()
    out, _ = await _drain(handle)
    await handle.pid_like.wait()  # consumers call this directly
    assert out == b"got it\n"


async def test_launch_env_and_argv(host: Host) -> None:
    handle = await host.launch_subprocess(["printenv", "SECRET_X"], env={"SECRET_X": "s3cr'et\nv"})
    out, _ = await _drain(handle)
    assert out == b"s3cr'et\nv\n"
    assert await handle.wait() == 0


# ------------------------------------------------------------------ files


async def test_put_bytes_path_and_iterator_sources(host: Host, tmp_path: object) -> None:
    local = os.path.join(str(tmp_path), "source.bin")
    payload = os.urandom(700_000)
    with open(local, "wb") as handle:
        handle.write(payload)
    os.chmod(local, 0o750)
    target_a, target_b, target_c = (f"{host.workdir}/new/dir/{n}" for n in "abc")
    await host.put_file_to_host(payload, target_a)
    await host.put_file_to_host(local, target_b)
    await host.put_file_to_host(chunks_of(payload), target_c)
    for target in (target_a, target_b, target_c):
        assert sha256(await host.fetch_bytes_from_host(target)) == sha256(payload)
    mode = await host.run(["stat", "-c", "%a", target_b])
    assert mode.stdout.strip() == "750"  # a local file's permission bits travel with it


@pytest.mark.parametrize("mode", [0o644, 0o444])
async def test_put_of_many_segments_is_complete_and_keeps_the_mode(
    host: Host, tmp_path: object, mode: int
) -> None:
    # Past one segment (4 MiB) a RemoteHost stripes the upload over several channels.
    payload = os.urandom(3 * SEGMENT + 12_345)
    local = os.path.join(str(tmp_path), "big.bin")
    with open(local, "wb") as handle:
        handle.write(payload)
    os.chmod(local, mode)  # a read-only source must still be writable while it is being written
    target = host.workdir + "/big/big.bin"
    await host.put_file_to_host(local, target, expected_sha256=sha256(payload))
    await host.put_file_to_host(chunks_of(payload, 100_003), target + ".2")
    for written in (target, target + ".2"):
        assert await host.file_sha256(written) == sha256(payload)
    stat = await host.run(["stat", "-c", "%a", target])
    assert stat.stdout.strip() == f"{mode:o}"
    listing = await host.run(["ls", "-A", host.workdir + "/big"])
    assert listing.stdout.split() == ["big.bin", "big.bin.2"]


async def test_a_put_cancelled_at_any_moment_leaves_no_temporary_file(host: Host) -> None:
    # Cancelled while its command was being started, a put left the host's temporary file.
    folder = host.workdir + "/c"
    data = os.urandom(5 * 1024 * 1024)
    for step in range(25):
        task = asyncio.ensure_future(host.put_file_to_host(data, folder + "/t.bin"))
        await asyncio.sleep(0.002 * step)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    listing = await host.run(["ls", "-A", folder])
    assert [name for name in listing.stdout.split() if name != "t.bin"] == []


async def test_put_reports_progress_up_to_100(host: Host) -> None:
    seen: list[tuple[float | None, str | None]] = []
    await host.put_file_to_host(
        os.urandom(3_000_000), host.workdir + "/p.bin", progress_cb=lambda p, m: seen.append((p, m))
    )
    percents = [p for p, _ in seen if p is not None]
    assert percents == sorted(percents) and percents[-1] == 100


async def test_put_leaves_no_temporary_files(host: Host) -> None:
    await host.put_file_to_host(b"x" * 10, host.workdir + "/t.txt")
    listing = await host.run(["ls", "-A", host.workdir])
    assert listing.stdout.split() == ["t.txt"]


async def test_put_with_expected_sha256(host: Host) -> None:
    data = b"checked content"
    await host.put_file_to_host(data, host.workdir + "/ok.txt", expected_sha256=sha256(data).upper())
    with pytest.raises(ValueError, match=r"SHA-256 mismatch.*expected 0{64}, got " + sha256(data)):
        await host.put_file_to_host(data, host.workdir + "/bad.txt", expected_sha256="0" * 64)
    listing = await host.run(["ls", "-A", host.workdir])
    assert listing.stdout.split() == ["ok.txt"]


async def test_put_mismatch_keeps_the_previous_target(host: Host) -> None:
    await host.write_text("t.txt", "old")
    with pytest.raises(ValueError):
        await host.put_file_to_host(b"new", host.workdir + "/t.txt", expected_sha256="1" * 64)
    assert await host.fetch_bytes_from_host(host.workdir + "/t.txt") == b"old"


async def test_put_skip_if_unchanged(host: Host) -> None:
    target = host.workdir + "/same.txt"
    await host.put_file_to_host(b"same", target)
    before = (await host.run(["stat", "-c", "%i", target])).stdout
    calls: list[tuple[float | None, str | None]] = []
    await host.put_file_to_host(
        b"same", target, skip_if_unchanged=True, progress_cb=lambda p, m: calls.append((p, m))
    )
    assert calls == [(None, "already up to date")]
    assert (await host.run(["stat", "-c", "%i", target])).stdout == before  # not rewritten
    await host.put_file_to_host(b"changed", target, skip_if_unchanged=True)
    assert await host.fetch_bytes_from_host(target) == b"changed"


async def test_put_iterator_with_skip_needs_expected_sha256(host: Host) -> None:
    target = host.workdir + "/never.txt"
    with pytest.raises(ValueError, match="expected_sha256"):
        await host.put_file_to_host(chunks_of(b"data"), target, skip_if_unchanged=True)
    assert await host.file_size(target) is None
    await host.put_file_to_host(
        chunks_of(b"data"), target, skip_if_unchanged=True, expected_sha256=sha256(b"data")
    )
    assert await host.fetch_bytes_from_host(target) == b"data"


async def test_put_rejects_unknown_source_types(host: Host) -> None:
    with pytest.raises(TypeError, match="upload source"):
        await host.put_file_to_host(12345, host.workdir + "/x")  # type: ignore[arg-type]


async def test_fetch_missing_file_is_file_not_found(host: Host) -> None:
    with pytest.raises(FileNotFoundError):
        await host.fetch_bytes_from_host(host.workdir + "/missing.bin")
    with pytest.raises(FileNotFoundError):
        await host.fetch_file_from_host(host.workdir + "/missing.bin", "/tmp/never-written")


async def test_fetch_file_to_local_path(host: Host, tmp_path: object) -> None:
    payload = os.urandom(5_000_000)
    await host.put_file_to_host(payload, host.workdir + "/big.bin")
    local = os.path.join(str(tmp_path), "out", "big.bin")
    os.makedirs(os.path.dirname(local))
    progress: list[float | None] = []
    await host.fetch_file_from_host(
        host.workdir + "/big.bin", local, progress_cb=lambda p, _m: progress.append(p)
    )
    with open(local, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == sha256(payload)
    assert progress[-1] == 100
    assert sorted(os.listdir(os.path.dirname(local))) == ["big.bin"]


async def test_fetch_empty_file(host: Host) -> None:
    await host.put_file_to_host(b"", host.workdir + "/empty")
    assert await host.fetch_bytes_from_host(host.workdir + "/empty") == b""


async def test_remove_file(host: Host) -> None:
    await host.write_text("gone.txt", "x")
    await host.remove_file(host.workdir + "/gone.txt")
    assert await host.file_size(host.workdir + "/gone.txt") is None
    await host.remove_file(host.workdir + "/gone.txt")  # missing: not an error


async def test_hostile_file_names_round_trip(host: Host) -> None:
    for index, name in enumerate(HOSTILE_NAMES):
        path = posixpath.join(host.workdir, name)
        await host.put_file_to_host(f"content {index}".encode(), path)
        assert await host.fetch_bytes_from_host(path) == f"content {index}".encode()
        assert await host.file_size(path) == len(f"content {index}")
    found = await host.glob("*")
    assert found == sorted(posixpath.join(host.workdir, name) for name in HOSTILE_NAMES)
    listing = await host.run(["ls", "-A", host.workdir])
    assert "optio" not in listing.stdout  # no temporary files left
    for name in HOSTILE_NAMES:
        await host.remove_file(posixpath.join(host.workdir, name))
    assert await host.glob("*") == []


async def test_file_sha256_takes_workdir_relative_paths_like_every_method(host: Host) -> None:
    await host.write_text("sub/h.txt", "hash me")
    digest = sha256(b"hash me")
    assert await host.file_sha256("sub/h.txt") == digest
    assert await host.file_sha256(host.workdir + "/sub/h.txt") == digest
    assert await host.file_sha256("sub/missing.txt") is None


async def test_realpath_and_file_size(host: Host) -> None:
    await host.write_text("real/file.txt", "12345")
    await host.run(["ln", "-s", "real", "link"])
    resolved = await host.realpath("link/file.txt")
    assert resolved == (await host.realpath(host.workdir)) + "/real/file.txt"
    assert await host.file_size("link/file.txt") == 5
    with pytest.raises(FileNotFoundError):
        await host.realpath("nope/nothing")


async def test_glob(host: Host) -> None:
    for name in ("a.txt", "b.txt", "c.log", ".hidden.txt", "sub/d.txt", "sub/e.log", "sub2/f.txt"):
        await host.write_text(name, "x")
    w = host.workdir
    assert await host.glob("*.txt") == [f"{w}/a.txt", f"{w}/b.txt"]
    assert await host.glob(".*.txt") == [f"{w}/.hidden.txt"]
    assert await host.glob("sub*/*.txt") == [f"{w}/sub/d.txt", f"{w}/sub2/f.txt"]
    assert await host.glob("[ab].txt") == [f"{w}/a.txt", f"{w}/b.txt"]
    assert await host.glob("?.log") == [f"{w}/c.log"]
    assert await host.glob(f"{w}/sub/*") == [f"{w}/sub/d.txt", f"{w}/sub/e.log"]
    assert await host.glob("sub/d.txt") == [f"{w}/sub/d.txt"]
    assert await host.glob("sub/nothing") == []
    assert await host.glob("*/") == [f"{w}/sub", f"{w}/sub2"]
    assert await host.glob("nomatch*") == []
    with pytest.raises(ValueError):
        await host.glob("")


# ------------------------------------------------------------------ tunnels


async def test_establish_tunnel_reaches_a_loopback_server(host: Host) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        local_ports = [await host.establish_tunnel(port) for _ in range(2)]
        for local_port in local_ports:
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            writer.write(b"ping\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.readline(), 10) == b"ping\n"
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_establish_tunnel_rejects_bad_ports(host: Host) -> None:
    with pytest.raises(ValueError):
        await host.establish_tunnel(0)
    with pytest.raises(ValueError):
        await host.establish_tunnel(70000)


# ------------------------------------------------------------------ tail_file()


async def _collect_lines(host: Host, path: str, count: int) -> list[str]:
    lines: list[str] = []
    async for line in host.tail_file(path):
        lines.append(line)
        if len(lines) == count:
            break
    return lines


async def test_tail_reads_existing_lines_then_appended_ones(host: Host) -> None:
    log = host.workdir + "/log.txt"
    await host.write_text("log.txt", "one\ntwo\n")
    reader = asyncio.create_task(_collect_lines(host, log, 4))
    await host.run(["/bin/sh", "-c", 'printf "three\\r\\nfour\\n" >> "$1"', "sh", log])
    assert await asyncio.wait_for(reader, 20) == ["one", "two", "three", "four"]


async def test_tail_waits_for_a_file_created_later(host: Host) -> None:
    log = host.workdir + "/later/log.txt"
    reader = asyncio.create_task(_collect_lines(host, log, 2))
    await asyncio.sleep(0.2)  # make sure the tail started before the file exists
    await host.write_text("later/log.txt", "first\nsecond\n")
    assert await asyncio.wait_for(reader, 20) == ["first", "second"]


async def test_tail_joins_a_line_split_across_writes(host: Host) -> None:
    log = host.workdir + "/split.txt"
    reader = asyncio.create_task(_collect_lines(host, log, 2))
    script = 'printf "par" >> "$1"; sleep 0.3; printf "tial\\nnext" >> "$1"; sleep 0.3; printf "\\n" >> "$1"'
    await host.run(["/bin/sh", "-c", script, "sh", log])
    assert await asyncio.wait_for(reader, 20) == ["partial", "next"]


async def test_tail_handles_16_mib_lines_and_invalid_utf8(host: Host) -> None:
    log = host.workdir + "/big.txt"
    size = 16 * 1024 * 1024
    reader = asyncio.create_task(_collect_lines(host, log, 3))
    script = (
        f'printf "\\377bad\\n" > "$1"; head -c {size} /dev/zero | tr "\\0" y >> "$1"; '
        'printf "\\nend\\n" >> "$1"'
    )
    await host.run(["/bin/sh", "-c", script, "sh", log])
    lines = await asyncio.wait_for(reader, 60)
    assert lines[0] == "\ufffdbad"
    assert len(lines[1]) == size and set(lines[1]) == {"y"}
    assert lines[2] == "end"


async def test_tail_latency_is_well_below_a_second(host: Host) -> None:
    log = host.workdir + "/fast.txt"
    await host.write_text("fast.txt", "start\n")
    arrivals: asyncio.Queue[float] = asyncio.Queue()

    async def follow() -> None:
        async for _line in host.tail_file(log):
            arrivals.put_nowait(time.monotonic())

    follower = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(arrivals.get(), 20)
        delays = []
        for index in range(5):
            await asyncio.sleep(0.05)
            sent = time.monotonic()
            await host.run(["/bin/sh", "-c", f'echo {index} >> "$1"', "sh", log])
            delays.append(await asyncio.wait_for(arrivals.get(), 10) - sent)
        # The append itself is a round trip on a remote host; 1-second polling would show.
        assert sorted(delays)[2] < 0.5, delays
    finally:
        follower.cancel()


async def test_tail_ends_when_the_host_disconnects(host: Host) -> None:
    log = host.workdir + "/end.txt"
    await host.write_text("end.txt", "only\n")
    seen: list[str] = []
    first = asyncio.Event()

    async def follow() -> None:
        async for line in host.tail_file(log):
            seen.append(line)
            first.set()

    follower = asyncio.create_task(follow())
    await asyncio.wait_for(first.wait(), 20)
    await host.disconnect()
    await asyncio.wait_for(follower, 10)  # ends by itself, no exception
    assert seen == ["only"]
    await host.disconnect()  # idempotent


async def test_fetch_of_a_multi_block_file_is_complete(host: Host) -> None:
    # Sizes that are and are not multiples of the page size, above a few file system blocks.
    for size in (1 << 20, (1 << 20) + 12345):
        payload = os.urandom(size)
        await host.put_file_to_host(payload, host.workdir + "/blocks.bin")
        assert sha256(await host.fetch_bytes_from_host(host.workdir + "/blocks.bin")) == sha256(payload)
