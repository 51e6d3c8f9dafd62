"""A consumer's own fake host, with exactly the 0.1.2 ``Host`` methods, runs the session and HookContext.

``Host012`` delegates every 0.1.2 method to a real ``LocalHost`` and has
nothing more (no ``realpath``, ``tail_bytes``, ``file_size``,
``open_regular_file``...), as consumers' fakes do (SPEC: "Works with any Host").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from optio_host import HookContext, LocalHost, SessionFailed
from optio_host.process import ProcessHandle, RunResult
from optio_host.protocol import Deliverable, run_log_protocol_session
from optio_host.testing import RecordingContext

pytestmark = pytest.mark.timeout(60)

RICHER = ["realpath", "tail_bytes", "file_size", "open_regular_file", "fetch_file_from_host", "run", "glob"]


class Host012:
    """Only the 0.1.2 methods, each delegating to a LocalHost; records fetch calls."""

    def __init__(self, inner: LocalHost) -> None:
        self._inner = inner
        self.fetch_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    @property
    def taskdir(self) -> str:
        return self._inner.taskdir

    @property
    def workdir(self) -> str:
        return self._inner.workdir

    async def connect(self) -> None:
        await self._inner.connect()

    async def disconnect(self) -> None:
        await self._inner.disconnect()

    async def setup_workdir(self) -> None:
        await self._inner.setup_workdir()

    async def write_text(self, relpath: str, content: str) -> None:
        await self._inner.write_text(relpath, content)

    async def establish_tunnel(self, remote_port: int, *, bind_addr: str = "127.0.0.1") -> int:
        return await self._inner.establish_tunnel(remote_port, bind_addr=bind_addr)

    def tail_file(self, absolute_path: str) -> AsyncIterator[str]:
        return self._inner.tail_file(absolute_path)

    async def cleanup_taskdir(self, aggressive: bool) -> None:
        await self._inner.cleanup_taskdir(aggressive)

    async def launch_subprocess(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        merge_stderr: bool = True,
        stdin: bool = False,
    ) -> ProcessHandle:
        return await self._inner.launch_subprocess(
            command, env=env, cwd=cwd, merge_stderr=merge_stderr, stdin=stdin
        )

    async def terminate_subprocess(self, handle: ProcessHandle, *, aggressive: bool) -> None:
        await self._inner.terminate_subprocess(handle, aggressive=aggressive)

    async def remove_file(self, path: str) -> None:
        await self._inner.remove_file(path)

    async def put_file_to_host(self, source: Any, absolute_target: str, **kwargs: Any) -> None:
        await self._inner.put_file_to_host(source, absolute_target, **kwargs)

    async def fetch_bytes_from_host(self, *args: Any, **kwargs: Any) -> bytes:
        self.fetch_calls.append((args, kwargs))
        return await self._inner.fetch_bytes_from_host(*args, **kwargs)

    async def run_command(
        self, command: str, *, cwd: str | None = None, env: Mapping[str, str] | None = None
    ) -> RunResult:
        return await self._inner.run_command(command, cwd=cwd, env=env)

    async def resolve_host_home(self) -> str:
        return await self._inner.resolve_host_home()

    def archive_workdir(self, exclude: Sequence[str] | None) -> AsyncIterator[bytes]:
        return self._inner.archive_workdir(exclude)

    async def restore_workdir(self, stream: AsyncIterator[bytes]) -> None:
        await self._inner.restore_workdir(stream)


@pytest.fixture
def fake(tmp_path: Path) -> Host012:
    return Host012(LocalHost(tmp_path / "task"))


def sh(script: str) -> Any:
    async def body(host: Any, hook_ctx: HookContext) -> None:
        await host.write_text("worker.sh", script)
        result = await host.run_command("/bin/sh worker.sh")
        assert result.exit_code == 0, result.stderr

    return body


def test_the_fake_has_only_the_published_methods(fake: Host012) -> None:
    for name in RICHER:
        assert not hasattr(fake, name)


async def test_session_with_text_deliverables_on_a_fake(fake: Host012) -> None:
    ctx = RecordingContext()
    got: list[tuple[str, str]] = []

    async def on_deliverable(hook_ctx: HookContext, relative: str, text: str) -> None:
        assert hook_ctx.host is fake
        got.append((relative, text))

    script = r"""
printf 'héllo' > deliverables/a.txt
printf '\377' > deliverables/bad.bin
echo 'STATUS: 40% working' >> optio.log
echo 'DELIVERABLE: deliverables/a.txt' >> optio.log
echo 'DELIVERABLE: deliverables/gone.txt' >> optio.log
echo 'DELIVERABLE: deliverables/bad.bin' >> optio.log
echo 'DELIVERABLE: ../x' >> optio.log
echo 'DONE: finished' >> optio.log
"""
    await run_log_protocol_session(
        fake,  # type: ignore[arg-type]
        ctx,
        body=sh(script),
        on_deliverable=on_deliverable,
    )
    assert got == [("a.txt", "héllo")]
    assert (40, "working") in ctx.progress
    for text in [
        "Deliverable: a.txt",
        "Deliverable: gone.txt",
        "Deliverable gone.txt: not found",
        "Deliverable bad.bin: not valid UTF-8, skipping callback",
        "invalid deliverable path '../x', skipping",
        "finished",
    ]:
        assert text in ctx.messages
    # Deliverables are fetched with one positional argument, as 0.1.2 did.
    delivered = [call for call in fake.fetch_calls if "deliverables/" in call[0][0]]
    assert delivered and all(len(args) == 1 and not kwargs for args, kwargs in delivered)


async def test_binary_file_deliverable_on_a_fake(fake: Host012, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    saved: list[tuple[str, int, str]] = []

    async def on_file(hook_ctx: HookContext, deliverable: Deliverable) -> None:
        digest = await deliverable.save(tmp_path / "out" / deliverable.relative_path)
        saved.append((deliverable.relative_path, deliverable.size, digest))
        assert await deliverable.read_bytes() == payload

    async def body(host: Any, hook_ctx: HookContext) -> None:
        await host.put_file_to_host(payload, host.workdir + "/deliverables/blob.bin")
        await host.run_command("echo 'DELIVERABLE: deliverables/blob.bin' >> optio.log")
        await host.run_command("echo DONE >> optio.log")

    await run_log_protocol_session(
        fake,  # type: ignore[arg-type]
        RecordingContext(),
        body=body,
        on_deliverable_file=on_file,
    )
    assert saved == [("blob.bin", len(payload), hashlib.sha256(payload).hexdigest())]
    assert (tmp_path / "out" / "blob.bin").read_bytes() == payload


async def test_done_without_newline_and_missing_done_on_a_fake(fake: Host012) -> None:
    async def session(script: str) -> None:
        await run_log_protocol_session(fake, RecordingContext(), body=sh(script))  # type: ignore[arg-type]

    await session("printf 'STATUS: x\\nDONE' >> optio.log")
    with pytest.raises(SessionFailed, match="body returned before DONE was observed"):
        await session("echo 'STATUS: 1% only' >> optio.log")
    with pytest.raises(SessionFailed, match=r"^agent reported ERROR$"):
        await session("echo ERROR >> optio.log")


async def test_hook_context_on_a_fake(fake: Host012, tmp_path: Path) -> None:
    await fake.setup_workdir()
    ctx = RecordingContext()
    hook_ctx = HookContext(ctx, fake)  # type: ignore[arg-type]
    assert await hook_ctx.run_on_host("echo hi") == "hi\n"
    source = tmp_path / "in.txt"
    source.write_text("data")
    await hook_ctx.copy_file(str(source), "sub/in.txt")
    assert await hook_ctx.read_from_host("sub/in.txt") == b"data"
    assert await hook_ctx.read_text_from_host("sub/in.txt", silent=True) == "data"
    await hook_ctx.copy_file(str(source), "sub/in.txt", skip_if_unchanged=True)
    assert "Copying in.txt..." in ctx.messages
    assert "Reading in.txt..." in ctx.messages
    assert "Already up to date: in.txt" in ctx.messages
    with pytest.raises(ValueError, match=r"^path must not be empty"):
        await hook_ctx.read_from_host("")
    with pytest.raises(ValueError, match=re.escape("workdir-relative path may not contain '..': 'a/../b'")):
        await hook_ctx.read_from_host("a/../b")
    with pytest.raises(ValueError, match=re.escape("workdir-relative path escapes workdir: '.'")):
        await hook_ctx.read_from_host(".")
