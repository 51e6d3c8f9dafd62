"""A host in a network namespace of its own, and faults on the link to it (needs root).

``NetnsLab`` creates a namespace, a veth pair between it and this machine
(addresses in the 198.18.0.0/15 benchmark range, on those two interfaces
only) and runs a real OpenSSH ``sshd`` inside the namespace on the
namespace's address. The faults:

- ``link_down()`` / ``link_up()``: the namespace's end of the link goes down (packets
  vanish silently, as on a cut cable; nothing is refused or reset);
- ``loss(percent)`` / ``clear_loss()``: nftables drops that share of packets both ways;
- ``delay(ms)`` / ``clear_delay()``: netem delays every packet both ways;
- ``kill_sshd()`` / ``start_sshd()``: SIGKILL the server and every connection it has.

Everything the lab makes is removed by ``close()`` (also after a failure): the
processes left in the namespace, the namespace with its nft tables and
qdiscs, the veth pair and the server's folder. Namespaces are named after
this process (``optiof<pid>n<k>``), so those of a crashed earlier run can be
swept (``sweep_stale()``). Every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator

from optio_host.testing.sshd import SshServer, _sshd_descendants

__all__ = [
    "NetnsLab",
    "NetnsSshServer",
    "NetnsUnavailable",
    "netns_problem",
    "sweep_stale",
]

#: The benchmark range (RFC 2544): never routed on the internet, used here as /30 links.
TEST_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
_PREFIX = "optiof"
_NAME = re.compile(rf"^{_PREFIX}(\d+)n(\d+)$")
_COMMAND_TIMEOUT = 15.0
_labs = itertools.count(1)


class NetnsUnavailable(RuntimeError):
    """Network namespaces (or a tool the lab needs) cannot be used here."""


def _run(*argv: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise NetnsUnavailable(f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()}")
    return result


def netns_problem() -> str | None:
    """Why network-namespace tests cannot run here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "network-namespace fault tests need root (ip netns add); CI runs them as root via .ci/run"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    name = f"{_PREFIX}{os.getpid()}n0"
    try:
        _run("ip", "netns", "add", name)
    except (NetnsUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run("ip", "link", "set", "lo", "up", netns=name)
    except (NetnsUnavailable, subprocess.TimeoutExpired) as exc:
        return f"cannot run commands in a network namespace: {exc}"
    finally:
        _run("ip", "netns", "del", name, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Remove namespaces (and their veth ends) left by earlier runs whose process is gone."""
    listing = _run("ip", "netns", "list", check=False).stdout
    removed = []
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAME.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        _kill_namespace_processes(name)
        _run("ip", "netns", "del", name, check=False)
        _run("ip", "link", "del", f"ov{match.group(1)}h{match.group(2)}", check=False)
        removed.append(name)
    return removed


def _kill_namespace_processes(name: str, within: float = 10.0) -> list[int]:
    """SIGKILL every process in the namespace; wait (bounded) until they are gone."""
    killed: list[int] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = [int(p) for p in _run("ip", "netns", "pids", name, check=False).stdout.split()]
        pids = [pid for pid in pids if _state(pid) not in (None, "Z")]
        if not pids:
            return killed
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.05)
    return killed


def _state(pid: int) -> str | None:
    """A process's state letter (``Z`` for a zombie), ``None`` when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()[0]


def _used_networks() -> set[ipaddress.IPv4Network]:
    """/30 networks of the test range already configured on this machine (other runs, other labs)."""
    used: set[ipaddress.IPv4Network] = set()
    for line in _run("ip", "-4", "-o", "addr", "show", check=False).stdout.splitlines():
        match = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/\d+", line)
        if match:
            address = ipaddress.IPv4Address(match.group(1))
            if address in TEST_RANGE:
                used.add(ipaddress.IPv4Network(f"{address}/30", strict=False))
    for line in _run("ip", "-4", "route", "show", check=False).stdout.splitlines():
        match = re.match(r"(\d+\.\d+\.\d+\.\d+)/30\b", line)
        if match and ipaddress.IPv4Address(match.group(1)) in TEST_RANGE:
            used.add(ipaddress.IPv4Network(f"{match.group(1)}/30"))
    return used


def _pick_network(seed: int) -> ipaddress.IPv4Network:
    subnets = TEST_RANGE.num_addresses // 4
    used = _used_networks()
    for step in range(subnets):
        index = (seed + step) % subnets
        if index == 0:
            continue  # skip 198.18.0.0/30: some tools use it as an example
        network = ipaddress.IPv4Network(f"{TEST_RANGE.network_address + index * 4}/30")
        if network not in used:
            return network
    raise NetnsUnavailable("no free /30 left in 198.18.0.0/15")


class NetnsSshServer(SshServer):
    """An ``SshServer`` whose ``sshd`` runs inside network namespace ``netns`` on ``address``.

    The binary it starts is a two-line wrapper that enters the namespace and
    then execs the real ``sshd``, so ``start()``, ``stop()`` and
    ``kill_connections()`` work as for the loopback server.
    """

    def __init__(self, netns: str, address: str, **kwargs: object) -> None:
        self.host = address  # before SshServer.__init__: it writes known_hosts for this address
        self.netns = netns
        super().__init__(**kwargs)  # type: ignore[arg-type]
        real = self._sshd
        wrapper = os.path.join(self.directory, "sshd-in-netns")
        with open(wrapper, "w") as handle:
            handle.write(f'#!/bin/sh\nexec ip netns exec {netns} {real} "$@"\n')
        os.chmod(wrapper, stat.S_IRWXU)
        self._sshd = wrapper

    def kill(self) -> None:
        """SIGKILL the listener and every per-connection ``sshd`` at once (no goodbye to clients)."""
        process = self._process
        if process is None:
            return
        victims = [*_sshd_descendants(process.pid), process.pid]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        self._process = None


class NetnsLab:
    """A namespace with a veth link to this machine, an ``sshd`` inside, and faults to inject."""

    def __init__(self) -> None:
        number = next(_labs)
        pid = os.getpid()
        self.name = f"{_PREFIX}{pid}n{number}"
        self.host_if = f"ov{pid}h{number}"  # this machine's end (at most 15 characters)
        self.ns_if = f"ov{pid}n{number}"  # the namespace's end
        if len(self.host_if) > 15 or len(self.ns_if) > 15:
            raise NetnsUnavailable(f"interface name {self.host_if!r} is too long")
        network = _pick_network(pid * 16 + number)
        self.network = network
        self.local_address = str(network.network_address + 1)
        self.address = str(network.network_address + 2)
        self.server: NetnsSshServer | None = None
        self._created = False
        self._loss = False
        self._delay = False

    def __repr__(self) -> str:
        return f"NetnsLab({self.name}, {self.address})"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> NetnsLab:
        try:
            _run("ip", "netns", "add", self.name)
            self._created = True
            _run(
                "ip",
                "link",
                "add",
                self.host_if,
                "type",
                "veth",
                "peer",
                "name",
                self.ns_if,
                "netns",
                self.name,
            )
            _run("ip", "addr", "add", f"{self.local_address}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            _run("ip", "addr", "add", f"{self.address}/30", "dev", self.ns_if, netns=self.name)
            _run("ip", "link", "set", self.ns_if, "up", netns=self.name)
            _run("ip", "link", "set", "lo", "up", netns=self.name)
            self.server = NetnsSshServer(self.name, self.address)
            self.server.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove everything: sshd, the processes in the namespace, the namespace, the veth pair."""
        server, self.server = self.server, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.kill()
            shutil.rmtree(server.directory, ignore_errors=True)
        if self._created:
            _kill_namespace_processes(self.name)
            # Deleting the namespace also deletes its nft tables, qdiscs and its end of the veth
            # pair, and with it this end.
            _run("ip", "netns", "del", self.name, check=False)
            self._created = False
        _run("ip", "link", "del", self.host_if, check=False)

    def __enter__(self) -> NetnsLab:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def leftovers(self) -> list[str]:
        """What ``close()`` failed to remove (for the tests' own check)."""
        found = []
        if self.name in _run("ip", "netns", "list", check=False).stdout.split():
            found.append(f"namespace {self.name}")
        if _run("ip", "link", "show", self.host_if, check=False).returncode == 0:
            found.append(f"interface {self.host_if}")
        return found

    def stray_processes(self) -> list[str]:
        """``"pid command line"`` of every live process in the namespace that is not an ``sshd``.

        Everything the server's clients started runs in the namespace, so this is every
        command, tail, upload ``cat`` and worker still running on the host.
        """
        found = []
        for word in _run("ip", "netns", "pids", self.name, check=False).stdout.split():
            pid = int(word)
            if _state(pid) in (None, "Z"):
                continue
            try:
                with open(f"/proc/{pid}/comm") as handle:
                    comm = handle.read().strip()
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if comm == "sshd":
                continue
            found.append(f"{pid} {cmdline[:200]}")
        return found

    # ---------------------------------------------------------------- faults

    @property
    def sshd(self) -> NetnsSshServer:
        if self.server is None:
            raise RuntimeError("the lab is not started")
        return self.server

    def link_down(self) -> None:
        """Take the namespace's end of the link down: packets to and from it vanish."""
        _run("ip", "link", "set", self.ns_if, "down", netns=self.name)

    def link_up(self) -> None:
        _run("ip", "link", "set", self.ns_if, "up", netns=self.name)

    @contextlib.contextmanager
    def link_cut(self) -> Iterator[None]:
        self.link_down()
        try:
            yield
        finally:
            self.link_up()

    def loss_problem(self) -> str | None:
        """Why ``loss()`` cannot work here, or ``None``."""
        if shutil.which("nft") is None:
            return "nftables (`nft`) is not installed; packet-loss tests need it (apt-get install nftables)"
        probe = _run("nft", "add", "table", "inet", "optio_probe", netns=self.name, check=False)
        if probe.returncode != 0:
            return f"nftables does not work in a network namespace here: {probe.stderr.strip()}"
        _run("nft", "delete", "table", "inet", "optio_probe", netns=self.name, check=False)
        return None

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of the packets crossing the link, each way, at random (nftables)."""
        if not 0 < percent < 100:
            raise ValueError(f"percent must be 1-99, got {percent}")
        self.clear_loss()
        rules = (
            f"table inet optio {{\n"
            f"  chain input {{ type filter hook input priority 0; policy accept;\n"
            f'    iifname "{self.ns_if}" numgen random mod 100 < {percent} drop\n  }}\n'
            f"  chain output {{ type filter hook output priority 0; policy accept;\n"
            f'    oifname "{self.ns_if}" numgen random mod 100 < {percent} drop\n  }}\n'
            f"}}\n"
        )
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, "nft", "-f", "-"],
            input=rules,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise NetnsUnavailable(f"nft refused the loss rules: {result.stderr.strip()}")
        self._loss = True

    def clear_loss(self) -> None:
        if self._loss:
            _run("nft", "delete", "table", "inet", "optio", netns=self.name, check=False)
            self._loss = False

    def delay_problem(self) -> str | None:
        """Why ``delay()`` cannot work here (no ``sch_netem`` in the kernel...), or ``None``."""
        if shutil.which("tc") is None:
            return "`tc` (iproute2) is not installed"
        probe = _run("tc", "qdisc", "add", "dev", self.host_if, "root", "netem", "delay", "1ms", check=False)
        if probe.returncode != 0:
            return f"netem is not available in this kernel (tc qdisc add ... netem: {probe.stderr.strip()})"
        _run("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)
        return None

    def delay(self, ms: int) -> None:
        """Delay every packet by ``ms`` milliseconds each way (netem on both ends of the link)."""
        self.clear_delay()
        self._delay = True
        _run("tc", "qdisc", "add", "dev", self.host_if, "root", "netem", "delay", f"{ms}ms")
        _run("tc", "qdisc", "add", "dev", self.ns_if, "root", "netem", "delay", f"{ms}ms", netns=self.name)

    def clear_delay(self) -> None:
        if self._delay:
            _run("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)
            _run("tc", "qdisc", "del", "dev", self.ns_if, "root", netns=self.name, check=False)
            self._delay = False

    def kill_sshd(self) -> None:
        """SIGKILL ``sshd`` and all its connections; the commands they started run on."""
        self.sshd.kill()

    def start_sshd(self) -> None:
        """Start ``sshd`` again (same port, same host key); returns once it accepts connections."""
        self.sshd.start()


class DelayRelay:
    """netem's ``delay`` in user space, for kernels without ``sch_netem``.

    A TCP relay on this machine's end of the link (``listen``) to the namespace's
    sshd: every chunk is held back ``delay`` seconds in each direction, in order.
    Clients that connect through it see the link's round trip grow by twice the delay.
    """

    def __init__(self, listen: str, target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self.delay = 0.0
        #: Connections accepted at most (then closed at once, like a firewall's limit); None: any.
        self.max_connections: int | None = None
        self._accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, self.listen, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop listening and end every relayed connection (their handlers then finish by themselves)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if self._server is not None:
            await self._server.wait_closed()

    def drop_connections(self) -> None:
        """Cut every relayed connection at once (like a link going down); keep listening."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        if self.max_connections is not None and self._accepted > self.max_connections:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass  # one side went away: the other is closed below
        finally:
            for side in (writer, up_writer):
                if side is not None:
                    side.transport.abort()
                    self._writers.discard(side)
            if task is not None:
                self._tasks.discard(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await pending.get()
                if not data:
                    if sink.can_write_eof():
                        sink.write_eof()
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                sink.write(data)
                await sink.drain()

        sender = asyncio.ensure_future(forward())
        try:
            while data := await source.read(256 * 1024):
                pending.put_nowait((loop.time() + self.delay, data))
            pending.put_nowait((0.0, b""))
            await sender
        finally:
            if not sender.done():
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
