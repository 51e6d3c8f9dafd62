"""Processes that outlive the connection that started them.

``host.launch_detached(...)`` starts a command in a new session on the host,
with no tie to any SSH channel: its output goes to a file in the taskdir, its
process-group id and exit status are recorded next to it. A lost connection
does not touch it, and ``DetachedProcess(host, state_dir)`` re-attaches to it
later, from this process or another one.

State folder layout: ``pid`` (process group id), ``output`` (stdout+stderr),
``exit`` (exit status, written when it ends).
"""

from __future__ import annotations

import asyncio
import posixpath
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from optio_host.errors import HostConnectionError
from optio_host.process import TERMINATE_GRACE, RunResult
from optio_host.quoting import script_argv, validate_argv


class _RunsCommands(Protocol):
    """What a detached process needs of its host (every ``Host`` has it)."""

    @property
    def taskdir(self) -> str: ...

    async def run(
        self, cmd: str | Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None
    ) -> RunResult: ...

    async def fetch_bytes_from_host(self, absolute_path: str) -> bytes: ...


__all__ = ["KILLED", "DetachedProcess", "launch_detached"]

#: Exit code reported when the process ended without recording a status (killed with its runner).
KILLED = -9

# $1 state folder, $2 "sh"|"argv", then the command. The runner is a session leader (setsid), so
# its pid is the group to signal; it records the exit status once the command ends.
_START = r"""state=$1; mode=$2; shift 2
mkdir -p -- "$state" || exit 125
if ! command -v setsid >/dev/null 2>&1; then
  echo "setsid is not installed on this host (util-linux)" >&2; exit 127
fi
setsid /bin/sh -c '
  state=$1; mode=$2; shift 2
  echo $$ > "$state/pid.tmp" && mv -f -- "$state/pid.tmp" "$state/pid"
  if [ "$mode" = argv ]; then "$@"; else /bin/sh -c "$1"; fi > "$state/output" 2>&1 < /dev/null
  echo $? > "$state/exit.tmp" && mv -f -- "$state/exit.tmp" "$state/exit"
' /bin/sh "$state" "$mode" "$@" < /dev/null > /dev/null 2>&1 &
i=0
while [ ! -s "$state/pid" ]; do
  i=$((i + 1)); [ "$i" -gt 1000 ] && { echo "the detached process did not start" >&2; exit 124; }
  sleep 0.01
done
cat -- "$state/pid"
"""

# $1 state folder, $2 tenths of a second to wait at most (-1: until it ends). Prints the exit
# status, "running" when the time ran out, or "lost" when it ended without recording one.
# A zombie counts as ended: an orphaned runner is reaped by init, which may take a while.
# Polls every 0.1 s for the first 2 s, then every 0.5 s (one `sleep` process per poll).
_WAIT = r"""state=$1; limit=$2
[ -s "$state/pid" ] || { echo "no detached process in $state" >&2; exit 3; }
read -r pid < "$state/pid"
alive() {
  kill -0 "$pid" 2>/dev/null || return 1
  [ -r "/proc/$pid/stat" ] || return 0
  read -r stat < "/proc/$pid/stat" 2>/dev/null || return 1
  case "$stat" in *") Z "*) return 1 ;; esac
}
waited=0
while [ ! -e "$state/exit" ] && alive; do
  if [ "$limit" -ge 0 ] && [ "$waited" -ge "$limit" ]; then echo running; exit 0; fi
  if [ "$waited" -lt 20 ]; then sleep 0.1; waited=$((waited + 1)); else sleep 0.5; waited=$((waited + 5)); fi
done
if [ -e "$state/exit" ]; then cat -- "$state/exit"; else echo lost; fi
"""

_SIGNAL = r"""pid=$(cat -- "$1/pid") && kill -s "$2" -- "-$pid" 2>/dev/null; exit 0"""


class DetachedProcess:
    """A process started by ``launch_detached``: wait for it, end it, read its output."""

    def __init__(self, host: _RunsCommands, state_dir: str) -> None:
        self.host = host
        self.state_dir = state_dir

    def __repr__(self) -> str:
        return f"DetachedProcess({self.state_dir!r})"

    @property
    def output_path(self) -> str:
        """File on the host with the process's stdout and stderr."""
        return posixpath.join(self.state_dir, "output")

    async def pid(self) -> int:
        """The process group id on the host."""
        return int((await self.host.fetch_bytes_from_host(posixpath.join(self.state_dir, "pid"))).strip())

    async def returncode(self) -> int | None:
        """The exit code if it has ended (``KILLED`` if it ended without one), else ``None``."""
        return await self._wait_at_most(0)

    async def _wait_at_most(self, tenths: int) -> int | None:
        """Exit code, or ``None`` if still running after ``tenths`` / 10 s (-1: no limit)."""
        result = await self.host.run(script_argv(_WAIT, self.state_dir, str(tenths)), cwd="/")
        if result.exit_code != 0:
            raise FileNotFoundError(result.stderr.strip() or f"no detached process in {self.state_dir}")
        status = result.stdout.strip()
        if status == "running":
            return None
        if status == "lost":
            return KILLED
        return int(status)

    async def wait(self, *, reconnect_timeout: float = 300.0) -> int:
        """Wait until it ends and return its exit code, riding out lost connections.

        If the host cannot be reached for ``reconnect_timeout`` seconds in a row,
        the last ``HostConnectionError`` is raised (the process itself goes on).
        """
        unreachable_since: float | None = None
        while True:
            try:
                code = await self._wait_at_most(-1)
            except HostConnectionError:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > reconnect_timeout:
                    raise
                await asyncio.sleep(1.0)
                continue
            if code is not None:
                return code

    async def terminate(self, *, aggressive: bool = False) -> None:
        """End its whole process group: SIGTERM, up to 5 s grace, SIGKILL (``aggressive``: SIGKILL)."""
        if not aggressive:
            await self._signal("TERM")
            if await self._wait_at_most(int(TERMINATE_GRACE * 10)) is not None:
                await self._signal("KILL")  # children that ignored TERM
                return
        await self._signal("KILL")

    async def _signal(self, name: str) -> None:
        await self.host.run(script_argv(_SIGNAL, self.state_dir, name), cwd="/")


async def launch_detached(
    host: _RunsCommands,
    command: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    name: str | None = None,
) -> DetachedProcess:
    """Start ``command`` on ``host`` detached from this connection (see the module docstring).

    Its state lives in ``<taskdir>/.optio/detached/<name>`` (``name`` defaults to a random id).
    """
    if isinstance(command, str):
        mode, words = "sh", [command]
    else:
        mode, words = "argv", validate_argv(command)
    label = name or secrets.token_hex(6)
    if "/" in label or label in ("", ".", ".."):
        raise ValueError(f"detached process name must be a plain file name, got {label!r}")
    state = posixpath.join(host.taskdir, ".optio", "detached", label)
    result = await host.run(script_argv(_START, state, mode, *words), cwd=cwd, env=env)
    if result.exit_code != 0:
        raise OSError(f"could not start a detached process on the host: {result.stderr.strip()}")
    return DetachedProcess(host, state)
