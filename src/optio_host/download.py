"""A ready-made optio task that downloads a URL to a file on a host with ``curl``.

``curl`` runs on the host itself (so the bytes never pass through the
worker), through the host's process API: the same code path serves a
``LocalHost``, a ``RemoteHost`` and "this machine" (``host=None``).

The body is written to an unpredictable temporary name beside the target and
renamed only once curl has exited successfully and, when asked, its SHA-256
matched. Only ``http``/``https`` are fetched unless ``protocols`` widens that
(curl's ``--proto``, for redirects too). The URL reaches curl in a config on
its stdin (``--config -``), so credentials in it never show on a command line,
and messages show them as ``***@``. A target inside the host's workdir must
really be inside it: every step (curl's output, the rename, the clean-up)
runs in the target's folder, entered with ``cd -P`` and verified to be under
the real workdir, and names only ``./NAME``; a folder that a symlink leads
out of the workdir is refused, even one a worker swaps in meanwhile.

Only the 0.1.2 ``Host`` methods are needed (``launch_subprocess``,
``terminate_subprocess``, ``run_command``), so a consumer's
own host object works too. Progress comes from curl's own progress bar (``--progress-bar``) on
stderr: curl prints ``<bar> NN.N%`` segments separated by carriage returns, at
most ten times a second, and a final ``100.0%`` for a body of known size.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import posixpath
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from optio_host._streams import ProgressThrottle
from optio_host.errors import DownloadFailed, redact_credentials, redact_url
from optio_host.host import _scripts as scripts
from optio_host.host.base import Host, checksum_mismatch, normalize_sha256
from optio_host.host.local import LocalHost
from optio_host.paths import temp_name_for
from optio_host.process import ProcessHandle, RunResult, owned_by
from optio_host.quoting import join, script_argv
from optio_host.worker import path_inside

if TYPE_CHECKING:
    from optio_core.models import TaskInstance

__all__ = ["DEFAULT_PROTOCOLS", "DownloadFailed", "create_download_task"]

#: What a download may fetch unless ``protocols=`` widens it (redirects included).
DEFAULT_PROTOCOLS = ("http", "https")
_PROTOCOL = re.compile(r"[a-z][a-z0-9+.-]*")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")

#: How much of curl's error output a ``DownloadFailed`` carries.
STDERR_TAIL = 1024
#: How often a running download checks ``ctx.should_continue()``.
CANCEL_POLL = 0.2
#: After terminating curl, how long to wait for its output streams to close.
_DRAIN_AFTER_KILL = 5.0
#: A percent is reported only when it grew by at least this much (curl already caps at 10 Hz).
_REPORT_STEP = 1.0

# One carriage-return/newline-separated piece of curl's stderr that is progress bar, not text:
# "#####   45.6%", or the animation curl draws when the size is unknown ("#=#=#", "-=O=#  #").
_BAR = re.compile(r"[#=O\-\s]*(?:(\d{1,3}(?:[.,]\d+)?)%\s*)?")
_SEGMENT_MAX = 4096

# Every step on the host's files (curl's output, the rename, the clean-up) runs in the target's
# folder, entered and verified first, and names only `./NAME`: a worker swapping a folder on the
# way for a link out (before or during the step) cannot redirect the write or the removal.
# `sh -c ENTER+STEP sh MKDIR ROOT N PART1..PARTN STEP-ARGS...`: enter ROOT (its real path is the
# bound), then each PART in turn (made first if MKDIR is 1: one level at a time, never through
# a link), checking after each `cd -P` that the real path is still under ROOT. The folder is
# thereby this process's own cwd, whatever the names lead to afterwards. A refusal exits with
# _REFUSED (no curl exit code is that high). ("$(pwd -P)" would eat trailing newlines of a
# name, hence the ".")
_REFUSED = 111
_ENTER = r"""_optio_mk=$1; _optio_n=$3
cd -P -- "$2" 2>/dev/null || { printf 'cannot enter %s as a folder\n' "$2" >&2; exit 111; }
_optio_root=$(pwd -P && echo .); _optio_root=${_optio_root%??}; shift 3
while [ "$_optio_n" -gt 0 ]; do
  if [ "$_optio_mk" = 1 ] && [ ! -e "$1" ] && [ ! -L "$1" ]; then mkdir -- "$1" 2>/dev/null; fi
  cd -P -- "$1" 2>/dev/null || { printf 'cannot enter %s as a folder\n' "$1" >&2; exit 111; }
  _optio_here=$(pwd -P && echo .); _optio_here=${_optio_here%??}
  case $_optio_here/ in
    "${_optio_root%/}"/*) ;;
    *) printf '%s leads to %s, outside %s (a symlink leads out of it)\n' \
         "$1" "$_optio_here" "$_optio_root" >&2; exit 111 ;;
  esac
  _optio_n=$((_optio_n - 1)); shift
done
"""
# curl is looked for before anything is made, so a host without it fails plainly.
_NEED_CURL = "command -v curl >/dev/null 2>&1 || { printf 'curl: command not found\\n' >&2; exit 127; }\n"
_CURL = _NEED_CURL + _ENTER + 'exec "$@"\n'
# In the folder: refuse to move into a folder (mv would), else rename ./TMP over ./TARGET.
_MOVE = r"""if [ -d "$2" ]; then
  printf 'the download target is a directory: %s\n' "$2" >&2; exit 3
fi
exec mv -f -- "$1" "$2"
"""
_COMMIT = _ENTER + _MOVE
_REMOVE = _ENTER + 'exec rm -f -- "$@"\n'
_SHA256 = _ENTER + scripts.SHA256


def create_download_task(
    process_id: str,
    name: str,
    *,
    url: str,
    target: str,
    host: Host | None = None,
    description: str | None = None,
    cleanup_on_fail: bool = True,
    expected_sha256: str | None = None,
    protocols: Sequence[str] = DEFAULT_PROTOCOLS,
) -> TaskInstance:
    """A task that downloads ``url`` to ``target`` (an absolute path on ``host``).

    ``host=None`` downloads on this machine. Progress: ``(None, "Downloading
    <basename>")`` first, then rising percents (to 100 for a body of known
    size). A failure raises ``DownloadFailed`` (``exit_code`` is curl's, e.g.
    22 for an HTTP error, 18 for a body shorter than announced) and, with
    ``cleanup_on_fail``, removes the target. With ``expected_sha256`` a body
    whose SHA-256 differs fails the same way and is never put at the target.
    When ``ctx.should_continue()`` turns false curl is stopped, the target
    removed (with ``cleanup_on_fail``) and the task returns without error.
    ``protocols``: the URL schemes curl may use, redirects included (e.g. add
    ``"ftp"``); others are refused.
    """
    allowed = _check_protocols(protocols)
    _check_url(url, allowed)
    if not isinstance(target, str) or not target.startswith("/") or "\0" in target:
        raise ValueError(
            f"download target must be an absolute path on the host, got {target!r}; "
            "HookContext.download_file resolves relative paths against the workdir"
        )
    if posixpath.basename(target) in ("", ".", ".."):
        raise ValueError(f"download target must name a file, not a folder, got {target!r}")
    expected = normalize_sha256(expected_sha256) if expected_sha256 is not None else None

    # Imported here: optio-core takes half a second to import, and workers and the CLI that
    # import optio_host never build tasks.
    from optio_core.models import TaskInstance

    download = _Download(url, target, host, cleanup_on_fail, expected, allowed)
    return TaskInstance(
        execute=download.execute,
        process_id=process_id,
        name=name,
        description=description,
        cancellable=True,
        supports_resume=False,
    )


def _check_protocols(protocols: Sequence[str]) -> tuple[str, ...]:
    if isinstance(protocols, (str, bytes)) or not protocols:
        raise TypeError(
            f"protocols must be a non-empty sequence of URL schemes such as ('https',), not {protocols!r}"
        )
    allowed = tuple(protocol.lower() if isinstance(protocol, str) else protocol for protocol in protocols)
    for protocol in allowed:
        if not isinstance(protocol, str) or not _PROTOCOL.fullmatch(protocol):
            raise ValueError(f"protocols must be URL schemes such as 'https' or 'ftp', got {protocol!r}")
    return allowed


def _check_url(url: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"url must be a non-empty string, got {redact_url(str(url))!r}")
    if any(ord(char) < 32 or ord(char) == 127 for char in url):
        raise ValueError(f"url contains a control character: {redact_url(url)!r}")
    scheme = _SCHEME.match(url)
    if scheme is not None and scheme.group(1).lower() not in allowed:
        raise ValueError(
            f"url scheme {scheme.group(1)!r} is not allowed (the download task fetches "
            f"{', '.join(allowed)}); pass protocols=(..., {scheme.group(1).lower()!r}) to allow it"
        )


def _curl_config(url: str) -> bytes:
    """The URL as a curl config line (``--config -``): off the command line, where anyone could read it."""
    escaped = url.replace("\\", "\\\\").replace('"', '\\"')
    return f'url = "{escaped}"\n'.encode()


class _Download:
    def __init__(
        self,
        url: str,
        target: str,
        host: Host | None,
        cleanup_on_fail: bool,
        expected: str | None,
        protocols: tuple[str, ...],
    ) -> None:
        self.url = url
        self.target = target
        self.host = host
        self.cleanup_on_fail = cleanup_on_fail
        self.expected = expected
        self.protocols = protocols

    def _failed(self, exit_code: int | None, stderr_tail: str) -> DownloadFailed:
        # curl's own words could quote the URL: its credentials never leave in a message.
        tail = redact_credentials(self.url, stderr_tail)[-STDERR_TAIL:]
        return DownloadFailed(url=self.url, target=self.target, exit_code=exit_code, stderr_tail=tail)

    async def execute(self, ctx: Any) -> None:
        basename = posixpath.basename(self.target)
        ctx.report_progress(None, f"Downloading {basename}")
        # An unconnected LocalHost needs no taskdir as long as every path and cwd is absolute.
        host: Host = self.host if self.host is not None else LocalHost()
        folder = self._folder()
        name = posixpath.basename(self.target)
        temp = posixpath.basename(temp_name_for(name))
        meter = _ProgressMeter(lambda percent: ctx.report_progress(percent, None))
        committed = False
        try:
            if not ctx.should_continue():
                return  # cancelled before it began; the finally below still cleans up
            outcome = await self._run_curl(host, ctx, folder, temp, meter)
            if outcome is None:
                return  # cancelled: the finally below removes what was written
            code, errors = outcome
            if code == _REFUSED:
                raise self._refused(errors)
            if code == 127:
                raise self._failed(127, f"{errors}; install curl on the host to use the download task")
            if code != 0:
                raise self._failed(code, errors or f"curl exited with code {code}")
            if self.expected is not None:
                actual = await self._sha256(host, folder, temp)
                if actual != self.expected:
                    mismatch = checksum_mismatch(self.target, self.expected, actual or "(no file)")
                    raise self._failed(None, str(mismatch)) from mismatch
            if not ctx.should_continue():
                return  # cancelled while verifying: a cancelled download leaves no target
            result = await self._in_folder(host, folder, _COMMIT, "./" + temp, "./" + name)
            if result.exit_code != 0:
                detail = result.stderr.strip() or f"mv exited with code {result.exit_code}"
                raise self._failed(result.exit_code, f"could not move the download into place: {detail}")
            committed = True
            meter.finish()
        finally:
            if not committed:
                await asyncio.shield(self._discard(host, folder, temp, name))

    def _folder(self) -> list[str]:
        """``[ROOT, N, PART...]``: the target's folder as ``_ENTER`` walks it.

        A target inside the host's workdir is walked from the workdir, which bounds it; any other
        from ``/`` (no bound: the caller chose that path). "Inside" is decided lexically here, by
        the package's one rule (``worker.path_inside``); ``_ENTER`` then checks every step again
        on the host, where links are resolved.
        """
        workdir = _workdir_of(self.host) if self.host is not None else None
        folder = posixpath.dirname(posixpath.normpath(self.target))
        root = "/"
        if workdir is not None and path_inside(folder, workdir):
            root = posixpath.normpath(workdir)
        parts = [part for part in folder[len(root) :].split("/") if part]
        return [root, str(len(parts)), *parts]

    async def _in_folder(self, host: Host, folder: list[str], script: str, *args: str) -> RunResult:
        """Run a step ``script`` in the target's folder, entered and verified; refusals raised."""
        result = await host.run_command(join(script_argv(script, "0", *folder, *args)), cwd="/")
        if result.exit_code == _REFUSED:
            raise self._refused(result.stderr)
        return result

    def _refused(self, detail: str) -> DownloadFailed:
        return self._failed(
            None,
            f"refused: the target's folder is not a folder inside the workdir: {detail.strip()}; remove "
            "the link or give a target outside the workdir explicitly",
        )

    async def _sha256(self, host: Host, folder: list[str], temp: str) -> str | None:
        """The downloaded file's SHA-256, computed on the host in its folder (``None`` if missing)."""
        result = await self._in_folder(host, folder, _SHA256, "./" + temp)
        if result.exit_code != 0:
            return None
        return result.stdout.lstrip("\\")[:64].lower()

    async def _discard(self, host: Host, folder: list[str], temp: str, name: str) -> None:
        """Remove what a failed or cancelled download left; never masks the original error."""
        names = ["./" + temp, "./" + name] if self.cleanup_on_fail else ["./" + temp]
        with contextlib.suppress(Exception):
            await self._in_folder(host, folder, _REMOVE, *names)

    async def _run_curl(
        self, host: Host, ctx: Any, folder: list[str], temp: str, meter: _ProgressMeter
    ) -> tuple[int, str] | None:
        """Run curl in the target's folder: ``(exit code, its error text)``, or ``None`` if cancelled."""
        protocols = "=" + ",".join(self.protocols)
        curl = [
            "curl",
            "-q",  # first: ignore ~/.curlrc, so the options below mean what they say
            "--fail",
            "--location",
            "--globoff",  # "[1-3]" and "{a,b}" in a URL are literal, not a batch of URLs
            "--proto",
            protocols,
            "--proto-redir",
            protocols,
            "--progress-bar",
            "--output",
            "./" + temp,
            "--config",  # the URL comes on stdin: its credentials never show in a process list
            "-",
        ]
        argv = script_argv(_CURL, "1", *folder, *curl)
        try:
            handle = owned_by(
                await host.launch_subprocess(argv, cwd="/", merge_stderr=False, stdin=True), host
            )
        except FileNotFoundError as exc:
            raise self._failed(127, f"{exc}; install curl on the host to use the download task") from exc
        try:
            await _send_config(handle, _curl_config(self.url))
        except BaseException:
            await handle.kill()
            raise
        stderr = _StderrReader(meter)
        completion = asyncio.ensure_future(_complete(handle, stderr))
        try:
            while True:
                done, _ = await asyncio.wait({completion}, timeout=CANCEL_POLL)
                if done:
                    return completion.result(), stderr.text()
                if not ctx.should_continue():
                    await host.terminate_subprocess(handle)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(completion), _DRAIN_AFTER_KILL)
                    return None
        finally:
            if not completion.done():
                completion.cancel()
                await handle.kill()
                with contextlib.suppress(BaseException):
                    await completion


def _workdir_of(host: Host) -> str | None:
    try:
        workdir = getattr(host, "workdir", None)
    except Exception:  # e.g. a host without a taskdir yet
        return None
    return workdir if isinstance(workdir, str) and workdir.startswith("/") else None


async def _send_config(handle: ProcessHandle, config: bytes) -> None:
    stdin = handle.stdin
    if stdin is None:  # pragma: no cover - launched with stdin=True
        raise RuntimeError("curl was started without stdin")
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(config)
        await stdin.drain()
    stdin.close()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await stdin.wait_closed()


async def _complete(handle: ProcessHandle, stderr: _StderrReader) -> int:
    async def drain(chunks: AsyncIterator[bytes]) -> None:
        async for _ in chunks:
            pass  # curl writes the body to --output; nothing useful comes here

    await asyncio.gather(drain(handle.stdout), stderr.consume(handle.stderr))
    return await handle.wait()


class _ProgressMeter:
    """Turns curl's percentages into reports: never decreasing, at most one per percent point."""

    def __init__(self, report: Callable[[float], None]) -> None:
        self._report = report
        self._throttle = ProgressThrottle(_REPORT_STEP)

    def update(self, percent: float) -> None:
        shown = self._throttle.admit(percent)
        if shown is not None:
            self._report(shown)

    def finish(self) -> None:
        # The file is complete: say so even when curl never knew the size.
        if self._throttle.admit(100.0) is not None:
            self._report(100.0)


class _StderrReader:
    """Splits curl's stderr into progress-bar pieces (fed to the meter) and error text (kept)."""

    def __init__(self, meter: _ProgressMeter) -> None:
        self._meter = meter
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._kept = ""

    async def consume(self, chunks: AsyncIterator[bytes] | None) -> None:
        if chunks is None:
            return
        async for chunk in chunks:
            self._feed(self._decoder.decode(chunk))
        self._feed(self._decoder.decode(b"", final=True) + "\n")

    def _feed(self, text: str) -> None:
        pieces = re.split(r"([\r\n])", self._partial + text)
        # The last piece has no separator after it yet: it may still grow.
        self._partial = pieces.pop()[-_SEGMENT_MAX:]
        for index in range(0, len(pieces), 2):
            self._segment(pieces[index], pieces[index + 1])

    def _segment(self, piece: str, separator: str) -> None:
        bar = _BAR.fullmatch(piece)
        if bar is not None:
            if bar.group(1) is not None:
                self._meter.update(float(bar.group(1).replace(",", ".")))
            return
        self._kept = (self._kept + piece + ("\n" if separator == "\n" else " "))[-STDERR_TAIL * 4 :]

    def text(self) -> str:
        return self._kept.strip()[-STDERR_TAIL:]
