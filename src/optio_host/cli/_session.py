"""``optio-host session`` and ``optio-host demo``: run a log-protocol worker and collect its deliverables."""

from __future__ import annotations

import ast
import asyncio
import os
import posixpath
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import click
from bson import ObjectId

from optio_host._process_context import StandInContext
from optio_host.cli._display import SessionView
from optio_host.cli._runner import CliError, Interrupt, run_async
from optio_host.cli._target import describe_target, env_option, host_options
from optio_host.cli._tree import upload_into
from optio_host.context import HookContext
from optio_host.errors import SessionFailed
from optio_host.host import make_host
from optio_host.host.base import BaseHost
from optio_host.host.interface import Host
from optio_host.process import ProcessHandle
from optio_host.protocol import Deliverable, run_log_protocol_session
from optio_host.protocol.deliverable import local_target
from optio_host.protocol.parser import LOG_NAME
from optio_host.protocol.session import EndedWithoutDone, WorkerReportedError
from optio_host.types import SSHConfig
from optio_host.worker import LOG_ENV, path_inside

__all__ = ["demo", "session"]

DEMO_WORKER = "demo_worker.sh"
DEMO_CHART = "_demo_chart.py"
#: The ``process_id`` of a session's context (a child task's id starts with it).
CLI_PROCESS_ID = "optio-host-cli"


#: Exit code when the worker finished (DONE) but a deliverable was skipped (none could be saved).
EXIT_SKIPPED = 3
#: After the session ended: how long the worker may take to exit, its last output still shown.
DRAIN_GRACE = 3.0


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
    help="Save deliverables here, byte for byte, keeping their paths under deliverables/.",
)
@click.option(
    "--upload",
    "uploads",
    multiple=True,
    metavar="PATH",
    help="Copy a file, a folder or a quoted glob into the workdir before the worker starts (repeatable).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="After a failure, keep the workdir and its optio.log on the host (the message says where).",
)
@env_option
@click.argument("worker", nargs=-1, required=True, metavar="-- WORKER [ARG...]")
def session(
    ssh_config: SSHConfig | None,
    out_dir: str,
    uploads: tuple[str, ...],
    keep: bool,
    env: dict[str, str],
    worker: tuple[str, ...],
) -> int:
    """Run WORKER in a fresh workdir on the host and follow its optio.log.

    The worker runs in the workdir with OPTIO_LOG set to its log. Progress
    comes from its STATUS lines; its DELIVERABLE files (any bytes) are saved
    under --out. Exit codes: 0 on DONE with every deliverable saved; 3 on DONE
    when a deliverable was skipped (each is named, with the reason); 1 on
    ERROR or when the worker exits without DONE; 255 when the host cannot be
    reached; 130 on Ctrl-C (the worker and its children are stopped).
    """
    argv = list(worker)
    options = _Options(out_dir, uploads, env, keep)
    return run_async(
        lambda interrupt: _session(interrupt, ssh_config, argv, options, title=os.path.basename(argv[0]))
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

    It reports ten steps with percents over a few seconds and hands over a
    report, a CSV, a JSON file and, when the host has python3, a PNG chart;
    then it ends with DONE.
    """
    files = resources.files("optio_host.cli")
    with (
        resources.as_file(files.joinpath(DEMO_WORKER)) as worker,
        resources.as_file(files.joinpath(DEMO_CHART)) as chart,
    ):
        options = _Options(out_dir, (os.fspath(worker), os.fspath(chart)), {}, keep=False)
        return run_async(
            lambda interrupt: _session(interrupt, ssh_config, ["/bin/sh", DEMO_WORKER], options, title="demo")
        )


@dataclass(frozen=True)
class _Options:
    out_dir: str
    uploads: tuple[str, ...]
    env: dict[str, str]
    keep: bool


class _CliContext(StandInContext):
    """The ``ProcessContext`` a session reports to: progress straight to the display, nothing kept.

    A child task (``hook_ctx.download_file``, ``run_child_task``) runs inline, as
    under optio-core; its messages are shown, its percents are not (the bar is
    the worker's). The CLI has no blob store: ``load_blob`` raises
    ``FileNotFoundError`` saying so and what to do instead.
    """

    def __init__(self, on_progress: Callable[[float | None, str | None], None]) -> None:
        super().__init__(CLI_PROCESS_ID, on_progress=on_progress)

    def report_progress(self, percent: float | None, message: str | None = None, **kwargs: Any) -> None:
        if message is not None and message.startswith("Deliverable "):
            message = _plain_exception(message)  # shown to a person: the message, not the repr
        super().report_progress(percent, message, **kwargs)

    def _new_child(self, process_id: str, params: dict[str, Any]) -> StandInContext:
        show = self._on_progress

        def messages_only(percent: float | None, message: str | None) -> None:
            if message is not None and show is not None:
                show(None, message)

        return StandInContext(process_id, params, self.metadata, on_progress=messages_only)

    def _no_blob(self, file_id: ObjectId) -> str:
        return (
            f"blob {file_id}: the optio-host CLI has no blob store (blobs live in optio-core's "
            "database); pass the file's path instead, or run the task under optio-core"
        )


class _Worker:
    """The session body: starts the worker, relays its output, remembers how it ended.

    The relays are tasks of their own, not part of the body: when the session
    ends at ``DONE`` the body is cancelled, but the worker's last output must
    still be shown (``finish`` drains it).
    """

    def __init__(self, argv: list[str], env: dict[str, str], view: SessionView) -> None:
        self.argv = argv
        self.env = env
        self.view = view
        self.host: Host | None = None
        self.handle: ProcessHandle | None = None
        self.exit_code: int | None = None
        self._started: asyncio.Future[None] | None = None
        self._relays: list[asyncio.Task[None]] = []

    async def body(self, host: Host, hook_ctx: HookContext) -> None:
        self.host = host
        self._started = asyncio.ensure_future(self._start(host))
        # The worker may write DONE before its start has returned here: the session then
        # cancels the body, but the start goes on (shielded) and ``finish`` takes it over.
        await asyncio.shield(self._started)
        await asyncio.wait(self._relays)  # cancelling the body leaves the relays running
        if self.handle is not None:
            self.exit_code = await self.handle.wait()

    async def _start(self, host: Host) -> None:
        env = {**self.env, LOG_ENV: posixpath.join(host.workdir, LOG_NAME)}
        try:
            self.handle = await host.launch_subprocess(self.argv, env=env, merge_stderr=False)
        except FileNotFoundError:
            raise CliError(f"{self.argv[0]}: worker not found in the workdir or on the PATH") from None
        except PermissionError:
            raise CliError(f"{self.argv[0]}: permission denied (not executable?)") from None
        self._relays = [
            asyncio.create_task(self._relay(self.handle.stdout, err=False)),
            asyncio.create_task(self._relay(self.handle.stderr, err=True)),
        ]

    async def _relay(self, chunks: AsyncIterator[bytes] | None, *, err: bool) -> None:
        if chunks is not None:
            async for chunk in chunks:
                self.view.output(chunk, err=err)
                # A read of a pipe with data waiting does not suspend: without this, a worker
                # flooding its output keeps the loop here and the session's tail never runs.
                await asyncio.sleep(0)

    async def finish(self) -> None:
        """Show the worker's remaining output, then end its process tree if it still runs."""
        if self._started is not None:
            await asyncio.wait([self._started])
            if not self._started.cancelled() and self._started.exception() is not None:
                return  # it never started; the body has raised why
        if self._relays:
            await asyncio.wait(self._relays, timeout=DRAIN_GRACE)
        if self.host is not None and self.handle is not None and self.handle.returncode is None:
            await asyncio.shield(self.host.terminate_subprocess(self.handle))
        if self._relays:
            # Killed: its pipes close, so what it wrote last still arrives.
            _, pending = await asyncio.wait(self._relays, timeout=DRAIN_GRACE)
            for task in pending:
                task.cancel()
        if self.handle is not None:
            await self.handle.aclose()  # ended by now: reap it and close its pipes or channel
            await asyncio.wait(self._relays)
        if self.handle is not None and self.handle.returncode is not None and self.exit_code is None:
            self.exit_code = self.handle.returncode


class _Saver:
    """``on_deliverable_file``: saves each deliverable under the output folder, never outside it."""

    def __init__(self, out_dir: str, view: SessionView) -> None:
        self.root = os.path.abspath(out_dir)
        self.view = view
        self.saved: list[str] = []
        #: The workdir on the host (set once connected), left out of reasons.
        self.workdir = ""
        #: ``(name, reason)`` of every deliverable not saved, in order.
        self.skipped: list[tuple[str, str]] = []

    async def __call__(self, hook_ctx: HookContext, deliverable: Deliverable) -> None:
        relative = deliverable.relative_path
        try:
            target = self.target_for(relative)
            await deliverable.save(target)
        except (OSError, ValueError) as exc:
            self.skipped.append((relative, f"could not be saved: {exc}"))
            return
        self.saved.append(target)
        self.view.note(f"saved {shown_path(target)} ({deliverable.size} bytes)")

    def on_skipped(self, path: str, message: str) -> None:
        """The session's report of a deliverable it did not hand over."""
        reason = message.removeprefix(f"Deliverable {path}: ").removeprefix(f"deliverable {path!r}: ")
        reason = _plain_exception(reason.replace(", skipping", ""))
        if self.workdir:
            reason = reason.replace(self.workdir + "/", "")  # a path that is gone once we end
        self.skipped.append((path, reason))

    def target_for(self, relative: str) -> str:
        """The local file for ``relative``; ``ValueError`` if it (or a symlink) leads outside."""
        return local_target(self.root, relative)


async def _session(
    interrupt: Interrupt, ssh_config: SSHConfig | None, argv: list[str], options: _Options, title: str
) -> int:
    where = describe_target(ssh_config)
    with SessionView(f"{title} on {where}") as view:
        worker = _Worker(argv, options.env, view)
        saver = _Saver(options.out_dir, view)
        ctx = _CliContext(view.progress)
        async with make_host(ssh=ssh_config) as host:
            saver.workdir = host.workdir
            await interrupt.race(upload_into(host, options.uploads, host.workdir))
            try:
                await interrupt.race(
                    run_log_protocol_session(
                        host,
                        ctx,
                        body=worker.body,
                        on_deliverable_file=saver,
                        on_deliverable_skipped=saver.on_skipped,
                    )
                )
            except SessionFailed as exc:
                await worker.finish()
                raise CliError(_failure(exc, worker, host, where, keep=options.keep)) from None
            finally:
                await worker.finish()
        view.complete()  # DONE: the work is complete, whatever the last report said
        if saver.skipped:
            for name, reason in saver.skipped:
                view.note(f"skipped {name}: {reason}")
            raise CliError(
                f"the worker finished, but {len(saver.skipped)} deliverable(s) were skipped: "
                + ", ".join(name for name, _ in saver.skipped),
                code=EXIT_SKIPPED,
            )
        count = len(saver.saved)
        if count:
            view.note(f"done: {count} deliverable(s) saved in {shown_path(saver.root)}")
        else:
            view.note("done: no deliverables")
    return 0


def shown_path(path: str) -> str:
    """``path`` relative to the current folder when it lies inside it, else as given (absolute)."""
    absolute = os.path.abspath(path)
    return os.path.relpath(absolute) if path_inside(absolute, os.getcwd()) else path


#: ``Name(args)`` at the end of a reason: an exception's repr, as the session reports it.
_REPR = re.compile(r"(?P<head>.*?: )(?P<name>[A-Z]\w*)\((?P<args>.*)\)(?P<tail>(, [a-z ]+)?)", re.DOTALL)


def _plain_exception(reason: str) -> str:
    """``fetch failed: PermissionError(13, 'Permission denied')`` as ``fetch failed: Permission denied``.

    The session's texts carry the repr (consumers match them as they are); a
    person reading the CLI wants the message. Anything else is left as it is.
    """
    match = _REPR.fullmatch(reason)
    if match is None:
        return reason
    try:
        args = ast.literal_eval(f"({match['args']},)") if match["args"] else ()
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return reason  # not a repr of literals (or absurdly nested): shown as it came
    texts = [str(arg) for arg in args if isinstance(arg, str) and arg]
    return match["head"] + (": ".join(texts) if texts else match["name"]) + match["tail"]


def _failure(exc: SessionFailed, worker: _Worker, host: Host, where: str, *, keep: bool) -> str:
    """The one-line failure, in terms of the worker; names the kept log only if it is kept."""
    if isinstance(exc, EndedWithoutDone) and worker.exit_code is not None:
        text = f"the worker exited (code {worker.exit_code}) before writing DONE"
    elif isinstance(exc, EndedWithoutDone):
        text = "the worker's log ended before it wrote DONE"
    elif isinstance(exc, WorkerReportedError):
        text = f"the worker reported ERROR: {exc}"
    else:
        text = f"the session failed: {exc}"
    if keep and isinstance(host, BaseHost):
        host.keep_taskdir()
        return f"{text}; kept its workdir {host.workdir} and log {host.workdir}/{LOG_NAME} on {where}"
    return f"{text} (use --keep to keep its workdir and log)"
