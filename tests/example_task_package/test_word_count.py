"""Uses only what the optio_host pytest plugin provides: the `host` fixture and RecordingContext."""

from __future__ import annotations

from optio_host import Host
from optio_host.testing import RecordingContext

from .word_count import count_words


async def test_counts_words_on_both_hosts(host: Host) -> None:
    ctx = RecordingContext()
    assert await count_words(host, ctx, "one two three\nfour") == 4
    assert (10, "counting") in ctx.progress
    assert ctx.messages[-1] == "counted"
