"""The download task as a child of a real optio-core task, run by optio-core's own executor.

Backed by mongomock (no MongoDB server). Each test gets its own ``Optio``
engine: the module-level ``optio_core.init``/``shutdown`` functions are bound
to one process-wide instance that, once shut down, refuses new launches
(optio-core 0.7), so a fresh instance per test is what keeps tests independent.
This module must pass with every supported optio-core (0.1 to 0.7).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mongomock_motor import AsyncMongoMockClient
from optio_core.lifecycle import Optio
from optio_core.models import TaskInstance

from optio_host import DownloadFailed, HookContext, LocalHost

PREFIX = "optiohosttest"
BODY = bytes(range(256)) * 2048  # 512 KiB


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A static file server on loopback: ``(base URL, folder it serves)``."""
    root = tmp_path_factory.mktemp("www")
    (root / "payload.bin").write_bytes(BODY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="test-www", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest_asyncio.fixture
async def engine() -> AsyncIterator[tuple[Optio, Any]]:
    """A fresh optio-core engine on an in-memory database, shut down afterwards."""
    client = AsyncMongoMockClient()
    db = client["optio_host_test"]
    optio = Optio()
    await optio.init(mongo_db=db, prefix=PREFIX, cancel_grace_seconds=2.0)
    try:
        yield optio, db
    finally:
        await optio.shutdown(grace_seconds=2.0)
        # A failed child makes optio-core cancel its parent in a background task; let such
        # bookkeeping finish so no task outlives the test's event loop.
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        if others:
            await asyncio.wait(others, timeout=5)


async def launch_and_wait(optio: Optio, process_id: str) -> None:
    # optio-core 0.7 made `session_id` a required keyword; 0.1 has no such parameter.
    if "session_id" in inspect.signature(optio.launch_and_wait).parameters:
        await optio.launch_and_wait(process_id, session_id=None)
    else:
        await optio.launch_and_wait(process_id)


def parent_task(process_id: str, url: str, target: str, host: LocalHost) -> TaskInstance:
    async def execute(ctx: Any) -> None:
        await HookContext(ctx, host).download_file(url, target)

    return TaskInstance(execute=execute, process_id=process_id, name="parent")


async def record(db: Any, process_id: str) -> dict[str, Any]:
    found = await db[f"{PREFIX}_processes"].find_one({"processId": process_id})
    assert found is not None, f"optio-core recorded no process {process_id!r}"
    return dict(found)


@pytest.mark.timeout(60)
async def test_download_child_runs_to_done(
    engine: tuple[Optio, Any], web_root: tuple[str, Path], local_host: LocalHost
) -> None:
    optio, db = engine
    base, _ = web_root
    # A relative target: HookContext puts it under the host's workdir.
    await optio.adhoc_define(parent_task("fetcher", f"{base}/payload.bin", "in/payload.bin", local_host))

    await launch_and_wait(optio, "fetcher")

    parent = await record(db, "fetcher")
    child = await record(db, "fetcher.download-0")
    assert parent["status"]["state"] == "done", parent["status"]
    assert child["status"]["state"] == "done", child["status"]
    assert child["name"] == "download payload.bin"
    assert child["parentId"] == parent["_id"]
    assert child["progress"]["percent"] >= 99
    messages = [entry["message"] for entry in child.get("log", [])]
    assert "Downloading payload.bin" in messages
    landed = await local_host.fetch_bytes_from_host(local_host.workdir + "/in/payload.bin")
    assert hashlib.sha256(landed).digest() == hashlib.sha256(BODY).digest()


@pytest.mark.timeout(60)
async def test_failed_download_fails_the_parent_with_the_child_error(
    engine: tuple[Optio, Any], web_root: tuple[str, Path], local_host: LocalHost
) -> None:
    optio, db = engine
    base, _ = web_root
    url = f"{base}/absent.bin"
    target = local_host.workdir + "/absent.bin"
    await optio.adhoc_define(parent_task("fetcher", url, target, local_host))

    await launch_and_wait(optio, "fetcher")

    parent = await record(db, "fetcher")
    child = await record(db, "fetcher.download-0")
    assert child["status"]["state"] == "failed"
    expected = str(DownloadFailed(url=url, target=target, exit_code=22, stderr_tail=""))
    assert child["status"]["error"].startswith(expected), child["status"]["error"]
    assert "404" in child["status"]["error"]
    assert parent["status"]["state"] == "failed"
    assert "fetcher.download-0" in parent["status"]["error"]
    assert "DownloadFailed" in parent["status"]["error"]
    assert await local_host.file_size(target) is None
