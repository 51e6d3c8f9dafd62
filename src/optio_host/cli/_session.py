"""``optio-host session`` and ``optio-host demo``: run a log-protocol worker and collect its deliverables."""

from __future__ import annotations

import asyncio
import os
import posixpath
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import click

from optio_host._localfs import write_atomic
from optio_host.cli._display import SessionView
from optio_host.cli._runner import CliError, Interrupt, run_async
from optio_host.cli._target import describe_target, env_option, host_options
from optio_host.cli._tree import upload_into
from optio_host.context import HookContext
from optio_host.errors import SessionFailed
from optio_host.host import make_host
from optio_host.host.interface import Host
from optio_host.process import ProcessHandle
from optio_host.protocol import run_log_protocol_session
from optio_host.protocol.parser import LOG_NAME
from optio_host.types import SSHConfig
from optio_host.worker import LOG_ENV

__all__ = ["demo", "session"]

DEMO_WORKER = "demo_worker.sh"


# Everything after WORKER belongs to it, options included (``--`` is then optional).
@click.command(context_settings={"allow_interspersed_args": False})
@host_options
@click.option(
    "--out",
    "out_dir",
    default="deliverables",
    show_default=True,
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Save deliverables here, keeping their paths under deliverables/.",
)
@click.option(
    "--upload",
    "uploads",
    multiple=True,
    metavar="PATH",
    help="Copy a file, a folder or a quoted glob into the workdir before the worker starts (repeatable).",
)
@env_option
@click.argument("worker", nargs=-1, required=True, metavar="-- WORKER [ARG...]")
def session(
    ssh_config: SSHConfig | None,
    out_dir: str,
    uploads: tuple[str, ...],
    env: dict[str, str],
    worker: tuple[str, ...],
) -> int:
    """Run WORKER in a fresh workdir on the host and follow its optio.log.

    The worker runs in the workdir with OPTIO_LOG set to its log. Progress
    comes from its STATUS lines; its DELIVERABLE files are saved under --out;
    the command ends with exit code 0 on DONE, 1 on ERROR or when the worker
    exits without DONE, 130 on Ctrl-C (the worker and its children are stopped).
    """
    argv = list(worker)
    return run_async(
        lambda interrupt: _session(
            interrupt, ssh_config, argv, out_dir, uploads, env, title=os.path.basename(argv[0])
        )
    )


@click.command()
@host_options
@click.option(
    "--out",
    "out_dir",
    default="demo-deliverables",
    show_default=True,
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Save the demo's deliverables here.",
)
def demo(ssh_config: SSHConfig | None, out_dir: str) -> int:
    """Run the bundled demo worker (a POSIX sh script) as a session.

    It reports ten steps with percents over a few seconds, hands over a
    report, a CSV and a JSON file, and ends with DONE.
    """
    script = resources.files("optio_host.cli").joinpath(DEMO_WORKER)
    with resources.as_file(script) as path:
        return run_async(
            lambda interrupt: _session(
                interrupt, ssh_config, ["/bin/sh", DEMO_WORKER], out_dir, (os.fspath(path),), {}, title="demo"
            )
        )


class _CliContext:
    """The ``ProcessContext`` stand-in a session reports to: progress goes straight to the display."""

    def __init__(self, on_progress: Callable[[float | None, str | None], None]) -> None:
        self.process_id = "optio-host-cli"
        self.params: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self.cancellation_flag = asyncio.Event()
        self._on_progress = on_progress

    def report_progress(self, percent: float | None, message: str | None = None, **_: Any) -> None:
        self._on_progress(percent, message)

    def should_continue(self) -> bool:
        return not self.cancellation_flag.is_set()


class _Worker:
    """The session body: starts the worker, relays its output, remembers how it ended."""

    def __init__(self, argv: list[str], env: dict[str, str], view: SessionView) -> None:
        self.argv = argv
        self.env = env
        self.view = view
        self.host: Host | None = None
        self.handle: ProcessHandle | None = None
        self.exit_code: int | None = None

    async def body(self, host: Host, hook_ctx: HookContext) -> None:
        env = {**self.env, LOG_ENV: posixpath.join(host.workdir, LOG_NAME)}
        self.host = host
        try:
            self.handle = await host.launch_subprocess(self.argv, env=env, merge_stderr=False)
        except FileNotFoundError:
            raise CliError(f"{self.argv[0]}: worker not found in the workdir or on the PATH") from None
        except PermissionError:
            raise CliError(f"{self.argv[0]}: permission denied (not executable?)") from None
        await asyncio.gather(
            self._relay(self.handle.stdout, err=False), self._relay(self.handle.stderr, err=True)
        )
        self.exit_code = await self.handle.wait()

    async def _relay(self, chunks: AsyncIterator[bytes] | None, *, err: bool) -> None:
        if chunks is not None:
            async for chunk in chunks:
                self.view.output(chunk, err=err)

    async def stop(self) -> None:
        """End the worker's whole process tree if it still runs (after DONE, failure or Ctrl-C)."""
        if self.host is not None and self.handle is not None and self.handle.returncode is None:
            await asyncio.shield(self.host.terminate_subprocess(self.handle))


class _Saver:
    """``on_deliverable``: writes each deliverable under the output folder, never outside it."""

    def __init__(self, out_dir: str, view: SessionView) -> None:
        self.root = os.path.abspath(out_dir)
        self.view = view
        self.saved: list[str] = []
        self.failed: list[str] = []

    async def __call__(self, hook_ctx: HookContext, relative: str, text: str) -> None:
        try:
            target = self._target(relative)
            data = text.encode("utf-8")  # the driver decoded valid UTF-8: this gives the same bytes

            async def chunks() -> AsyncIterator[bytes]:
                yield data

            await write_atomic(target, chunks())
        except Exception:
            self.failed.append(relative)
            raise  # the session reports it and goes on
        self.saved.append(target)
        self.view.note(f"saved {os.path.relpath(target)} ({len(data)} bytes)")

    def _target(self, relative: str) -> str:
        target = os.path.normpath(os.path.join(self.root, relative))
        if os.path.isabs(relative) or not target.startswith(self.root + os.sep):
            raise ValueError(f"refusing to write {relative!r} outside {self.root}")
        # A symlink inside the output folder must not lead the write elsewhere either; checked
        # before creating folders, as makedirs would follow it.
        real_root = os.path.realpath(self.root)
        real_dir = os.path.realpath(os.path.dirname(target))
        if real_dir != real_root and not real_dir.startswith(real_root + os.sep):
            raise ValueError(f"refusing to write {relative!r}: a symlink leads outside {self.root}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(target):
            os.unlink(target)
        return target


async def _session(
    interrupt: Interrupt,
    ssh_config: SSHConfig | None,
    argv: list[str],
    out_dir: str,
    uploads: tuple[str, ...],
    env: dict[str, str],
    title: str,
) -> int:
    where = describe_target(ssh_config)
    with SessionView(f"{title} on {where}") as view:
        worker = _Worker(argv, env, view)
        saver = _Saver(out_dir, view)
        ctx = _CliContext(view.progress)
        async with make_host(ssh=ssh_config) as host:
            await interrupt.race(upload_into(host, uploads, host.workdir))
            try:
                await interrupt.race(
                    run_log_protocol_session(host, ctx, body=worker.body, on_deliverable=saver)
                )
            except SessionFailed as exc:
                detail = f" (worker exit code {worker.exit_code})" if worker.exit_code is not None else ""
                raise CliError(f"session on {where} failed: {exc}{detail}") from None
            finally:
                await worker.stop()
        if saver.failed:
            raise CliError(f"the worker finished, but {len(saver.failed)} deliverable(s) could not be saved")
        count = len(saver.saved)
        view.note(f"done: {count} deliverable(s) saved in {os.path.relpath(saver.root)}")
    return 0
