"""An optio task type that counts the words of a text on a host, through the log protocol."""

from __future__ import annotations

from typing import Any

from optio_host import HookContext, Host
from optio_host.protocol import run_log_protocol_session

# The worker runs on the host with nothing but /bin/sh.
WORKER = r"""printf '%s\n' 'STATUS: 10% counting' >> optio.log
mkdir -p deliverables
wc -w < input.txt | tr -d ' ' > deliverables/count.txt
printf '%s\n' 'DELIVERABLE: deliverables/count.txt' >> optio.log
printf '%s\n' 'DONE: counted' >> optio.log
"""


async def count_words(host: Host, ctx: Any, text: str) -> int:
    """Count the words of ``text`` on ``host``; progress goes to ``ctx``."""
    counts: list[int] = []

    async def before(hook_ctx: HookContext) -> None:
        await hook_ctx.copy_file(text.encode(), "input.txt")

    async def body(h: Host, _hook_ctx: HookContext) -> None:
        await h.run(["/bin/sh", "-c", WORKER], check=True)

    async def on_deliverable(_hook_ctx: HookContext, relative: str, content: str) -> None:
        if relative == "count.txt":
            counts.append(int(content))

    await run_log_protocol_session(host, ctx, body=body, on_deliverable=on_deliverable, before_execute=before)
    return counts[0]
