"""Small helpers shared by the test modules (no fixtures here: those live in the plugin)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable

from optio_host.host.base import Host

#: File names that break naive quoting: spaces, quotes, $, backticks, newlines, leading dash.
HOSTILE_NAMES = [
    "with space.txt",
    'it\'s "quoted".txt',
    "$HOME and $(id).txt",
    "`uname`.txt",
    "new\nline.txt",
    "-leading-dash.txt",
    "back\\slash;&|<>*?.txt",
    "ünïcødé ✓.txt",
]

#: Arguments that must reach a program byte for byte.
HOSTILE_ARGS = [*HOSTILE_NAMES, "", " ", "'", '"', "\\", "$(touch /tmp/pwned)", "a\tb", "--", "-n", "%s"]

#: A protocol worker (sh): 500 STATUS lines and 20 deliverables, pausing $1 seconds per step,
#: then DONE. Run it in the workdir: ``["/bin/sh", "-c", PACED_WORKER, "worker", "0.005"]``.
PACED_WORKER = r"""i=0
while [ $i -lt 500 ]; do
  echo "STATUS: $((i / 5))% step $i" >> optio.log
  if [ $((i % 25)) -eq 24 ]; then
    n=$((i / 25)); echo "deliverable $n" > "deliverables/d$n.txt"
    echo "DELIVERABLE: deliverables/d$n.txt" >> optio.log
  fi
  i=$((i + 1)); sleep "$1"
done
echo "DONE: all steps" >> optio.log
"""

# A process is alive if /proc has it and it is not a zombie (PID 1 here may not reap).
_ALIVE = r"""s=$(cat "/proc/$1/stat" 2>/dev/null) || exit 1
case "$s" in *") Z "*) exit 1 ;; esac
exit 0
"""


async def is_alive(host: Host, pid: int) -> bool:
    """Whether process ``pid`` is running on ``host``."""
    result = await host.run(["/bin/sh", "-c", _ALIVE, "sh", str(pid)], cwd="/")
    return result.exit_code == 0


async def wait_gone(host: Host, pid: int, within: float = 5.0) -> bool:
    """Wait (bounded) until ``pid`` is gone on ``host``; True if it went."""
    deadline = asyncio.get_running_loop().time() + within
    while await is_alive(host, pid):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def read_pid(host: Host, path: str, within: float = 10.0) -> int:
    """Wait until a command has written its pid to ``path`` on the host, then return it."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            text = (await host.fetch_bytes_from_host(path)).decode().strip()
        except FileNotFoundError:
            text = ""
        if text.endswith("!"):
            return int(text[:-1])
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no pid appeared in {path}")
        await asyncio.sleep(0.02)


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def from_list(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
