"""Faults on a real network link: the host is an ``sshd`` in a network namespace (needs root).

Each test starts, on the namespace's host, all three kinds of load at once:

(a) a long ``run()`` (silent for most of its life, like a real job);
(b) a log-protocol session whose worker (started with ``launch_detached`` and awaited with
    ``proc.wait(reconnect_timeout=...)``) writes 500 STATUS lines and 20 deliverables;
(c) a 200 MiB upload and a 200 MiB download;

then injects one fault while all of them are in flight, and checks each outcome:
completed (with exactly the right data / every event exactly once, in order), or
failed with the documented error (``HostConnectionError`` for a command or a transfer,
``SessionFailed`` for a session past its reconnect budget) within a bound, leaving no
partial target, no temporary file and no process of ours on the host.

Without root (or where ``ip netns`` cannot be used) the tests skip with the reason;
under ``CI=true`` (or ``OPTIO_HOST_REQUIRE_NETNS=1``) they fail instead, as the sshd
fixture does. The faults without namespaces (killed connections, sshd restarts, load)
are in test_reliability.py; RELIABILITY.md lists every fault with its outcome and figures
(``pytest -s`` prints each test's timings).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

from optio_host import Host, HostConnectionError, RemoteHost, RunResult, SessionFailed, SSHConfig
from optio_host.detached import DetachedProcess
from optio_host.protocol import run_log_protocol_session
from optio_host.testing import RecordingContext
from optio_host.testing.sshd import SshdUnavailable

from ._netns import DelayRelay, NetnsLab, NetnsUnavailable, netns_problem, sweep_stale
from ._support import PACED_WORKER

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(150)]

#: Seconds of silence after which asyncssh declares a connection dead: keepalive_interval x (2 + 1).
KEEPALIVE = 1.0
DETECTION = KEEPALIVE * 3
CONNECT_TIMEOUT = 3.0
#: One full reconnect cycle of the pool while the host is unreachable: 4 attempts, each up to
#: connect_timeout, with 3.5 s of pauses between them.
RECONNECT_CYCLE = 4 * CONNECT_TIMEOUT + 3.5
BIG = 200 * 1024 * 1024

# The long run(): one line, a long silence, one line ($1 seconds).
LONG_JOB = 'echo begin; sleep "$1"; echo end'


def _required() -> bool:
    """Whether a missing capability must fail the run (CI) rather than skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get(
        "OPTIO_HOST_REQUIRE_NETNS", ""
    ) not in ("", "0")


def _unavailable(reason: str) -> NoReturn:
    if _required():
        pytest.fail(f"{reason} (CI=true / OPTIO_HOST_REQUIRE_NETNS: the network-namespace tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def netns_ready() -> None:
    problem = netns_problem()
    if problem is not None:
        _unavailable(problem)
    sweep_stale()


@pytest.fixture
def lab(netns_ready: None) -> Iterator[NetnsLab]:
    try:
        made = NetnsLab().start()
    except SshdUnavailable as exc:
        _unavailable(str(exc))
    except NetnsUnavailable as exc:
        _unavailable(f"cannot set up a network namespace with sshd: {exc}")
    try:
        yield made
    finally:
        made.close()
    assert made.leftovers() == []


@dataclass(frozen=True)
class BigFile:
    path: str
    sha256: str


@pytest.fixture(scope="module")
def big_file(netns_ready: None) -> Iterator[BigFile]:
    """200 MiB of random bytes, readable by the test server's account (upload and download source)."""
    folder = tempfile.mkdtemp(prefix="optio-netns-big-")
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "big.bin")
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for _ in range(BIG // (8 << 20)):
            chunk = os.urandom(8 << 20)
            digest.update(chunk)
            handle.write(chunk)
    os.chmod(path, 0o644)
    try:
        yield BigFile(path, digest.hexdigest())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass
class Outcome:
    """How one load ended: its result or its exception, and when (seconds after the fault)."""

    name: str
    value: object = None
    error: BaseException | None = None
    after_fault: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        how = "completed" if self.ok else f"{type(self.error).__name__}: {str(self.error)[:160]}"
        when = "" if self.after_fault is None else f" at {self.after_fault:+.1f}s"
        return f"{self.name}: {how}{when}"


@dataclass
class Loads:
    """(a) a long run(), (b) a session, (c) a 200 MiB upload and download, on one lab host."""

    lab: NetnsLab
    big: BigFile
    local_dir: str
    #: The session's reconnect budget, and the pause between the worker's lines.
    reconnect_timeout: float
    pace: float
    #: How long the long run() sleeps.
    job_seconds: float
    hosts: dict[str, RemoteHost] = field(default_factory=dict)
    ctx: RecordingContext = field(default_factory=RecordingContext)
    received: dict[str, str] = field(default_factory=dict)
    worker: DetachedProcess | None = None
    tasks: dict[str, asyncio.Task[object]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    fault_at: float = 0.0
    fault_over_at: float = 0.0
    marker: str = field(default_factory=lambda: f"optio-job-{secrets.token_hex(4)}")
    #: Seconds after the fault at which the session reported a lost connection.
    lost_seen: list[float] = field(default_factory=list)
    #: Reach the server through this relay (address, port) instead of directly.
    via: tuple[str, int] | None = None

    # ---------------------------------------------------------------- setup

    def _config(self) -> SSHConfig:
        config = self.lab.sshd.ssh_config(keepalive_interval=KEEPALIVE, connect_timeout=CONNECT_TIMEOUT)
        if self.via is None:
            return config
        # The relay's address and port, trusting the server's own host key there.
        known_hosts = os.path.join(self.lab.sshd.directory, "relay_known_hosts")
        key_type, key = self.lab.sshd.host_public_key().split()[:2]
        with open(known_hosts, "w") as handle:
            handle.write(f"[{self.via[0]}]:{self.via[1]} {key_type} {key}\n")
        return dataclasses.replace(config, host=self.via[0], port=self.via[1], known_hosts=known_hosts)

    async def open(self) -> None:
        """One host per kind of load (each its own connection pool)."""
        for name in ("run", "session", "transfer"):
            host = RemoteHost(self._config(), f"{self.lab.sshd.scratch}/{name}")
            await host.connect()
            self.hosts[name] = host
            await host.setup_workdir()

    async def close(self) -> None:
        for host in self.hosts.values():
            await host.disconnect()

    @property
    def upload_target(self) -> str:
        return self.hosts["transfer"].workdir + "/up/big.bin"

    @property
    def download_target(self) -> str:
        return os.path.join(self.local_dir, "big.bin")

    async def start(self) -> None:
        """Start every load; return once all of them are in flight."""
        steps = asyncio.Event()
        up, down = asyncio.Event(), asyncio.Event()

        def on_progress(_percent: float | None, message: str | None) -> None:
            if message == "step 50":
                steps.set()
            elif message and self.fault_at and message.startswith("Lost the connection"):
                self.lost_seen.append(time.monotonic() - self.fault_at)

        self.ctx = RecordingContext(on_progress=on_progress)
        self._spawn("run", self._long_run())
        self._spawn("session", self._session())
        await asyncio.wait_for(steps.wait(), 60)
        assert await self._job_running(), "the long run() did not start"

        def at_ten_percent(event: asyncio.Event) -> Callable[[float | None, str | None], None]:
            def progress(percent: float | None, _message: str | None) -> None:
                if percent is not None and percent >= 10:
                    event.set()

            return progress

        transfer = self.hosts["transfer"]
        self._spawn(
            "upload",
            transfer.put_file_to_host(self.big.path, self.upload_target, progress_cb=at_ten_percent(up)),
        )
        self._spawn(
            "download",
            transfer.fetch_file_from_host(
                self.big.path, self.download_target, progress_cb=at_ten_percent(down)
            ),
        )
        await asyncio.wait_for(asyncio.gather(up.wait(), down.wait()), 60)
        for name, task in self.tasks.items():
            assert not task.done(), f"{name} ended before the fault: {task}"
        self.fault_at = time.monotonic()

    def fault_over(self) -> None:
        self.fault_over_at = time.monotonic()

    def _spawn(self, name: str, work: Awaitable[object]) -> None:
        async def timed() -> object:
            try:
                value = await work
            except Exception as exc:
                self.outcomes[name] = Outcome(name, error=exc, after_fault=self._since_fault())
                raise
            self.outcomes[name] = Outcome(name, value=value, after_fault=self._since_fault())
            return value

        self.tasks[name] = asyncio.create_task(timed(), name=f"load-{name}")

    def _since_fault(self) -> float | None:
        return time.monotonic() - self.fault_at if self.fault_at else None

    async def _long_run(self) -> RunResult:
        return await self.hosts["run"].run(["/bin/sh", "-c", LONG_JOB, self.marker, str(self.job_seconds)])

    async def _job_running(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(self.marker in line for line in self.lab.stray_processes()):
                return True
            await asyncio.sleep(0.05)
        return False

    async def _session(self) -> None:
        pace = str(self.pace)

        async def body(h: Host, _hook: object) -> None:
            self.worker = await h.launch_detached(
                ["/bin/sh", "-c", PACED_WORKER, "optio-worker", pace], name="worker"
            )
            assert await self.worker.wait(reconnect_timeout=120) == 0

        async def on_deliverable(_hook: object, relative: str, text: str) -> None:
            assert relative not in self.received, f"{relative} delivered twice"
            self.received[relative] = text

        await run_log_protocol_session(
            self.hosts["session"],
            self.ctx,
            body=body,
            on_deliverable=on_deliverable,  # type: ignore[arg-type]
            reconnect_timeout=self.reconnect_timeout,
        )

    # ---------------------------------------------------------------- outcomes

    async def settle(self, within: float) -> dict[str, Outcome]:
        """Wait (bounded) until every load has ended; their outcomes by name."""
        done, pending = await asyncio.wait(self.tasks.values(), timeout=within)
        for task in pending:
            task.cancel()
        assert not pending, f"still running {within:g}s later: {sorted(t.get_name() for t in pending)}"
        for task in done:
            task.exception()  # retrieved: the outcome holds it
        return self.outcomes

    def report(self, title: str) -> str:
        lines = [title, *(f"  {outcome.describe()}" for outcome in self.outcomes.values())]
        reconnects = self.ctx.messages.count("Reconnected to the host")
        lost = ", ".join(f"{t:+.1f}s" for t in self.lost_seen) or "never"
        lines.append(
            f"  session: {len(self._steps())} steps, {len(self.received)} deliverables, "
            f"{reconnects} reconnects; saw the link lost at {lost}"
        )
        text = "\n".join(lines)
        print(text)
        return text

    def _steps(self) -> list[str]:
        return [m for m in self.ctx.messages if m.startswith("step ")]

    async def check(
        self, *, may_fail: frozenset[str] = frozenset(), must_fail: frozenset[str] = frozenset()
    ) -> None:
        """Every load either completed correctly or failed as documented; nothing is left over.

        Call once the link is back.
        """
        for name, outcome in self.outcomes.items():
            if name in must_fail:
                assert not outcome.ok, f"{name} should have failed: {outcome.describe()}"
            if not outcome.ok:
                assert name in may_fail | must_fail, f"unexpected failure: {outcome.describe()}"
                expected = SessionFailed if name == "session" else HostConnectionError
                assert isinstance(outcome.error, expected), outcome.describe()
        # Each host answers again at its next call.
        for name, host in self.hosts.items():
            result = await asyncio.wait_for(host.run(["echo", "back"]), RECONNECT_CYCLE + 10)
            assert result.stdout == "back\n", name
        self._check_run()
        self._check_session()
        await self._check_transfers()
        await self._check_no_processes_left()

    def _check_run(self) -> None:
        outcome = self.outcomes["run"]
        if outcome.ok:
            result = outcome.value
            assert isinstance(result, RunResult)
            assert (result.exit_code, result.stdout) == (0, "begin\nend\n")

    def _check_session(self) -> None:
        steps = self._steps()
        assert steps == [f"step {i}" for i in range(len(steps))], (
            "a STATUS line was lost, repeated or reordered"
        )
        names = list(self.received)
        assert names == [f"d{n}.txt" for n in range(len(names))]
        assert all(self.received[f"d{n}.txt"] == f"deliverable {n}\n" for n in range(len(names)))
        reported = [m for m in self.ctx.messages if m.startswith("Deliverable: ")]
        assert reported == [f"Deliverable: d{n}.txt" for n in range(len(reported))]
        if self.outcomes["session"].ok:
            assert len(steps) == 500 and len(names) == 20 and len(reported) == 20
            assert self.ctx.messages.count("all steps") == 1
        else:
            assert self.ctx.messages.count("all steps") == 0

    async def _check_transfers(self) -> None:
        host = self.hosts["transfer"]
        folder = os.path.dirname(self.upload_target)
        if self.outcomes["upload"].ok:
            assert await host.file_sha256(self.upload_target) == self.big.sha256
        else:
            assert await host.file_size(self.upload_target) is None, "a partial upload target was left"
        # A temporary file the lost connection kept us from removing goes once the host answers.
        expected = "big.bin\n" if self.outcomes["upload"].ok else ""
        deadline = time.monotonic() + 10
        while True:
            listing = (await host.run(["ls", "-A", folder])).stdout
            if listing == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert listing == expected, f"temporary upload files left 10s after reconnecting: {listing!r}"
        if self.outcomes["download"].ok:
            assert _file_sha256(self.download_target) == self.big.sha256
            assert os.listdir(self.local_dir) == ["big.bin"]
        else:
            assert os.listdir(self.local_dir) == [], "a partial download or its temporary file was left"

    async def _check_no_processes_left(self, within: float = 30.0) -> None:
        """No process of ours runs on the host any more (a worker that outlived its session is ended)."""
        if self.worker is not None and not self.outcomes["session"].ok:
            await self.worker.terminate(aggressive=True)
        started = time.monotonic()
        first = left = self.lab.stray_processes()
        while left and time.monotonic() < started + within:
            await asyncio.sleep(0.2)
            left = self.lab.stray_processes()
        waited = time.monotonic() - started
        print(f"  host processes of ours at the check: {len(first)}, all gone {waited:.1f}s later")
        assert left == [], f"processes left on the host {within:g}s after the checks began: {left}"


def _assert_failed_promptly(outcomes: dict[str, Outcome], bound: float) -> None:
    """The in-flight command and transfers failed soon after the connection died (not after a reconnect)."""
    for name in ("run", "upload", "download"):
        after = outcomes[name].after_fault
        assert after is not None and after < bound, (
            f"failed only {bound:g}s+ after the fault: {outcomes[name].describe()}"
        )


@contextlib.asynccontextmanager
async def open_loads(
    lab: NetnsLab, big_file: BigFile, via: tuple[str, int] | None = None
) -> AsyncIterator[Loads]:
    local_dir = tempfile.mkdtemp(prefix="optio-netns-down-")
    made = Loads(lab, big_file, local_dir, reconnect_timeout=60, pace=0.02, job_seconds=60, via=via)
    try:
        await made.open()
        yield made
    finally:
        for task in made.tasks.values():
            task.cancel()
        await asyncio.gather(*made.tasks.values(), return_exceptions=True)
        await made.close()
        shutil.rmtree(local_dir, ignore_errors=True)


@pytest.fixture
async def loads(lab: NetnsLab, big_file: BigFile) -> AsyncIterator[Loads]:
    async with open_loads(lab, big_file) as made:
        yield made


# ---------------------------------------------------------------------- link down, then up


async def test_link_blip_shorter_than_keepalive_is_invisible(lab: NetnsLab, loads: Loads) -> None:
    """Down for 1 s (the keepalive verdict takes 4 s of silence): TCP retransmits, nothing fails."""
    loads.job_seconds = 8
    await loads.start()
    with lab.link_cut():
        await asyncio.sleep(1.0)
    loads.fault_over()
    await loads.settle(within=90)
    loads.report("link down 1 s")
    await loads.check()
    assert "Reconnected to the host" not in loads.ctx.messages


async def test_link_down_within_budget_recovers(lab: NetnsLab, loads: Loads) -> None:
    """Down for 8 s: connections are declared dead; the session resumes and completes."""
    await loads.start()
    with lab.link_cut():
        await asyncio.sleep(8.0)
    loads.fault_over()
    outcomes = await loads.settle(within=120)
    loads.report("link down 8 s (session budget 60 s)")
    await loads.check(must_fail=frozenset({"run", "upload", "download"}))
    _assert_failed_promptly(outcomes, DETECTION + 4)
    assert loads.ctx.messages.count("Reconnected to the host") >= 1


async def test_link_down_past_budget_fails_the_session(lab: NetnsLab, loads: Loads) -> None:
    """Down until everything has ended (session budget 3 s): SessionFailed within a bound, then all clean."""
    loads.reconnect_timeout = 3
    await loads.start()
    with lab.link_cut():
        # Everything must end while the link is still down: nothing may wait for it to come back.
        await loads.settle(within=DETECTION + 2 * RECONNECT_CYCLE + 10)
    loads.fault_over()
    loads.report(f"link down past the session budget ({loads.fault_over_at - loads.fault_at:.1f} s)")
    session = loads.outcomes["session"]
    assert isinstance(session.error, SessionFailed), session.describe()
    assert "could not get it back within 3s" in str(session.error)
    # The budget counts from the moment the loss was noticed (keepalive).
    assert session.after_fault is not None and session.after_fault < DETECTION + loads.reconnect_timeout + 5
    _assert_failed_promptly(loads.outcomes, DETECTION + 4)
    await loads.check(must_fail=frozenset({"run", "upload", "download", "session"}))


# ---------------------------------------------------------------------- loss and delay


async def test_packet_loss(lab: NetnsLab, loads: Loads) -> None:
    """20 % of packets dropped each way for 6 s: commands and transfers may fail, the session may not."""
    problem = lab.loss_problem()
    if problem is not None:
        _unavailable(problem)
    loads.job_seconds = 12
    await loads.start()
    lab.loss(20)
    try:
        await asyncio.sleep(6.0)
    finally:
        lab.clear_loss()
    loads.fault_over()
    await loads.settle(within=120)
    loads.report("20 % loss each way for 6 s")
    await loads.check(may_fail=frozenset({"run", "upload", "download"}))


async def test_delay(lab: NetnsLab, big_file: BigFile) -> None:
    """300 ms more each way for 6 s: everything completes, only slower.

    With netem where the kernel has it; otherwise (as here: no sch_netem) a relay on this
    machine's end of the link holds every chunk back by the same amount.
    """
    relay: DelayRelay | None = None
    via = None
    if lab.delay_problem() is not None:
        relay = DelayRelay(lab.local_address, (lab.address, lab.sshd.port))
        via = (lab.local_address, await relay.start())
    try:
        async with open_loads(lab, big_file, via=via) as loads:
            loads.job_seconds = 12
            await loads.start()
            if relay is None:
                lab.delay(300)
            else:
                relay.delay = 0.3
            try:
                await asyncio.sleep(6.0)
            finally:
                if relay is None:
                    lab.clear_delay()
                else:
                    relay.delay = 0.0
            loads.fault_over()
            await loads.settle(within=120)
            loads.report("300 ms delay each way for 6 s" + (" (user-space relay)" if relay else " (netem)"))
            await loads.check()
    finally:
        if relay is not None:
            await relay.close()


# ---------------------------------------------------------------------- sshd killed, then started


async def test_sshd_killed_and_restarted(lab: NetnsLab, loads: Loads) -> None:
    """sshd SIGKILLed (listener and connections) and started again 5 s later: the session completes."""
    await loads.start()
    lab.kill_sshd()
    await asyncio.sleep(5.0)
    await asyncio.to_thread(lab.start_sshd)
    loads.fault_over()
    outcomes = await loads.settle(within=120)
    loads.report("sshd killed, started again after 5 s")
    # The connections died at once (reset): failing took no reconnect attempts.
    _assert_failed_promptly(outcomes, 2.5)
    await loads.check(must_fail=frozenset({"run", "upload", "download"}))
