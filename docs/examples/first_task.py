"""Your first optio task with optio-host: count the words of a text on a host.

The task uploads a text and a worker, runs the worker through the log protocol,
and keeps the deliverable it hands back. optio-core's own executor runs it, on an
in-memory MongoDB (mongomock-motor), four times: on this machine and over SSH,
with a shell worker and a Python worker. The SSH server is the testing kit's
real OpenSSH sshd on 127.0.0.1, so nothing here needs a second machine.

    pip install optio-host mongomock-motor   # and Debian's openssh-server for sshd
    python first_task.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from mongomock_motor import AsyncMongoMockClient
from optio_core.lifecycle import Optio
from optio_core.models import TaskInstance

from optio_host import HookContext, Host, SSHConfig, make_host
from optio_host.protocol import run_log_protocol_session
from optio_host.testing import SshServer

TEXT = "the quick brown fox\njumps over the lazy dog\n"

# A worker needs nothing on the host but /bin/sh: it appends protocol lines to $OPTIO_LOG.
SHELL_WORKER = r"""log=${OPTIO_LOG:-optio.log}
printf '%s\n' "STATUS: 10% counting words" >> "$log"
wc -w < input.txt | tr -d ' ' > deliverables/count.txt
printf '%s\n' "DELIVERABLE: deliverables/count.txt" >> "$log"
printf '%s\n' "DONE: counted" >> "$log"
"""

# The same in Python, with the standard library only (the host's python3 has no optio-host).
PYTHON_WORKER = """import os
log = os.environ.get("OPTIO_LOG", "optio.log")
def say(line):
    with open(log, "a") as out:   # one write per line, appended
        out.write(line + "\\n")
say("STATUS: 10% counting words")
with open("input.txt") as text, open("deliverables/count.txt", "w") as count:
    count.write(str(len(text.read().split())) + "\\n")
say("DELIVERABLE: deliverables/count.txt")
say("DONE: counted")
"""

WORKERS = {"sh": ("worker.sh", SHELL_WORKER), "python": ("worker.py", PYTHON_WORKER)}
INTERPRETERS = {"sh": "/bin/sh", "python": "python3"}
COUNTS: dict[str, int] = {}  # process id -> the count the worker handed over


def count_words_task(process_id: str, ssh: SSHConfig | None, language: str) -> TaskInstance:
    """An optio-core task that runs the ``language`` worker on this machine (``ssh=None``) or over SSH."""
    script_name, script = WORKERS[language]

    async def execute(ctx: Any) -> None:  # ctx: optio-core's ProcessContext
        async def before(hook_ctx: HookContext) -> None:
            await hook_ctx.copy_file(TEXT.encode(), "input.txt")  # relative: inside the workdir
            await hook_ctx.copy_file(script.encode(), script_name)

        async def body(host: Host, hook_ctx: HookContext) -> None:
            # The session has set up the workdir, deliverables/ and an empty optio.log.
            await host.run([INTERPRETERS[language], script_name], env={"OPTIO_LOG": "optio.log"}, check=True)

        async def on_deliverable(hook_ctx: HookContext, relative_path: str, text: str) -> None:
            COUNTS[process_id] = int(text)

        async with make_host(ssh=ssh) as host:  # a private taskdir, removed at the end
            await run_log_protocol_session(
                host, ctx, body=body, before_execute=before, on_deliverable=on_deliverable
            )

    return TaskInstance(execute=execute, process_id=process_id, name=f"count words ({language})")


async def main() -> None:
    db = AsyncMongoMockClient()["first_task"]
    optio = Optio()
    await optio.init(mongo_db=db, prefix="first")
    try:
        with SshServer() as sshd:  # a real sshd on 127.0.0.1; as root it logs in as optio-sshd-test
            for where, ssh in (("local", None), ("remote", sshd.ssh_config())):
                for language in WORKERS:
                    process_id = f"count-{where}-{language}"
                    await optio.adhoc_define(count_words_task(process_id, ssh, language))
                    # optio-core 0.7 wants session_id; before 0.7, leave it out.
                    await optio.launch_and_wait(process_id, session_id=None)
                    record = await db["first_processes"].find_one({"processId": process_id})
                    state = record["status"]["state"]
                    messages = [entry["message"] for entry in record.get("log", [])]
                    print(f"{process_id}: {state}, {COUNTS.get(process_id)} words; {messages}")
                    assert state == "done" and COUNTS[process_id] == 9, record["status"]
    finally:
        await optio.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
