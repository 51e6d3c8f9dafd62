"""A real OpenSSH server on loopback, for tests (no Docker, no shared config).

``SshServer`` writes a private ``sshd_config`` with its own host key and
authorized key, listens on ``127.0.0.1`` on a free port, and can be stopped,
restarted, or restarted with a new host key.

Which account it logs in as: when run as root it uses a dedicated account
(``optio-sshd-test``, shell ``/bin/sh``, home ``/var/lib/optio-sshd-test``),
creating it with ``useradd`` the first time, so that no heavy ``~/.bashrc`` is
sourced per command (bash sources it for every SSH command) and tests do not
run as root; otherwise the current user. ``OPTIO_HOST_SSHD_USER=NAME`` picks an
existing account instead (``root`` included), and then nothing is created.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from optio_host.types import SSHConfig

__all__ = ["ACCOUNT_ENV", "TEST_ACCOUNT", "SshServer", "SshdUnavailable", "account_note", "find_sshd"]

TEST_ACCOUNT = "optio-sshd-test"
#: Names an existing account to log in as instead of creating ``TEST_ACCOUNT`` (the opt-out).
ACCOUNT_ENV = "OPTIO_HOST_SSHD_USER"
_START_TIMEOUT = 15.0


class SshdUnavailable(RuntimeError):
    """OpenSSH's ``sshd`` (or ``ssh-keygen``) is not installed here."""


def find_sshd() -> str | None:
    """Path of the ``sshd`` binary, if installed."""
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _keygen(path: str, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def account_note() -> str | None:
    """One line saying which account the server logs in as, when that is not the current user."""
    chosen = os.environ.get(ACCOUNT_ENV)
    if chosen:
        return f"optio-host testing: sshd logs in as {chosen!r} ({ACCOUNT_ENV})"
    if os.geteuid() != 0:
        return None
    return (
        f"optio-host testing: running as root, so sshd logs in as the account {TEST_ACCOUNT!r} "
        f"(created with useradd if missing; {ACCOUNT_ENV}=NAME uses an existing account instead)"
    )


def _default_user() -> str:
    """The account to log in as: ``$OPTIO_HOST_SSHD_USER``, else the test account (root), else ours."""
    chosen = os.environ.get(ACCOUNT_ENV)
    if chosen:
        try:
            pwd.getpwnam(chosen)
        except KeyError:
            raise SshdUnavailable(f"{ACCOUNT_ENV}={chosen}: no such account on this machine") from None
        return chosen
    return _ensure_test_account() if os.geteuid() == 0 else getpass.getuser()


def _ensure_test_account() -> str:
    """Create (once) a plain-shell account for the server to log in as; needs root."""
    try:
        pwd.getpwnam(TEST_ACCOUNT)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--create-home",
                "--home-dir",
                f"/var/lib/{TEST_ACCOUNT}",
                "--shell",
                "/bin/sh",
                TEST_ACCOUNT,
            ],
            check=True,
        )
        print(
            f"optio-host testing: created the account {TEST_ACCOUNT!r} for the test sshd to log in as "
            f"(remove it with: userdel -r {TEST_ACCOUNT}; {ACCOUNT_ENV}=NAME uses an existing one)",
            file=sys.stderr,
        )
    # A locked account ("!" password) refuses even key logins when PAM is off.
    subprocess.run(["usermod", "-p", "*", TEST_ACCOUNT], check=True)
    return TEST_ACCOUNT


def _sshd_descendants(root: int) -> list[int]:
    """The sshd processes below ``root`` (its per-connection monitors and session processes)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
        names[int(entry)] = name
    found: list[int] = []
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        if names.get(pid) == "sshd":
            found.append(pid)
            pending.extend(children.get(pid, []))
    return found


@dataclass
class _Account:
    name: str
    uid: int
    gid: int
    home: str


class SshServer:
    """An ``sshd`` on ``127.0.0.1``, owned by the test that started it.

    Attributes a test needs: ``host``, ``port``, ``user``, ``key_path`` (the
    client's private key), ``known_hosts`` (a file trusting this server's
    host key) and ``ssh_config()``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        directory: str | None = None,
        *,
        user: str | None = None,
        max_sessions: int = 10,
        extra_config: str = "",
    ) -> None:
        sshd = find_sshd()
        if sshd is None:
            raise SshdUnavailable(
                "OpenSSH sshd is not installed (Debian/Ubuntu: apt-get install openssh-server)"
            )
        if shutil.which("ssh-keygen") is None:
            raise SshdUnavailable("ssh-keygen is not installed (apt-get install openssh-client)")
        self._sshd = sshd
        self.directory = directory or tempfile.mkdtemp(prefix="optio-sshd-")
        os.chmod(self.directory, 0o755)
        if user is None:
            user = _default_user()
        entry = pwd.getpwnam(user)
        self.account = _Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
        self.user = entry.pw_name
        self.max_sessions = max_sessions
        self.extra_config = extra_config
        self.port = _free_port()
        self.key_path = os.path.join(self.directory, "client_key")
        self.known_hosts = os.path.join(self.directory, "known_hosts")
        self.host_key_path = os.path.join(self.directory, "host_key")
        self.log_path = os.path.join(self.directory, "sshd.log")
        self._process: subprocess.Popen[bytes] | None = None
        _keygen(self.key_path, "optio-host test client")
        _keygen(self.host_key_path, "optio-host test server")
        shutil.copy(self.key_path + ".pub", os.path.join(self.directory, "authorized_keys"))
        self._write_known_hosts()
        #: A folder the server's account can write to, for task dirs in tests.
        self.scratch = os.path.join(self.directory, "scratch")
        os.makedirs(self.scratch, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.scratch, self.account.uid, self.account.gid)

    # ---------------------------------------------------------------- config

    def ssh_config(self, **overrides: object) -> SSHConfig:
        """An ``SSHConfig`` that reaches this server with strict host-key checking."""
        fields: dict[str, object] = {
            "host": self.host,
            "user": self.user,
            "key_path": self.key_path,
            "port": self.port,
            "host_key_policy": "strict",
            "known_hosts": self.known_hosts,
        }
        fields.update(overrides)
        return SSHConfig(**fields)  # type: ignore[arg-type]

    def host_public_key(self) -> str:
        """The server's public host key line (``type base64 comment``)."""
        with open(self.host_key_path + ".pub") as handle:
            return handle.read().strip()

    def _write_known_hosts(self) -> None:
        key_type, key_data = self.host_public_key().split()[:2]
        with open(self.known_hosts, "w") as handle:
            handle.write(f"[{self.host}]:{self.port} {key_type} {key_data}\n")

    def _config_text(self) -> str:
        return "\n".join(
            [
                f"Port {self.port}",
                f"ListenAddress {self.host}",
                f"HostKey {self.host_key_path}",
                f"PidFile {os.path.join(self.directory, 'sshd.pid')}",
                f"AuthorizedKeysFile {os.path.join(self.directory, 'authorized_keys')}",
                f"AllowUsers {self.user}",
                "UsePAM no",
                "StrictModes no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "AllowTcpForwarding yes",
                "X11Forwarding no",
                "PrintMotd no",
                "UseDNS no",
                f"MaxSessions {self.max_sessions}",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                self.extra_config,
                "",
            ]
        )

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> SshServer:
        """Start ``sshd`` and wait until it accepts connections."""
        if self._process is not None and self._process.poll() is None:
            return self
        config = os.path.join(self.directory, "sshd_config")
        with open(config, "w") as handle:
            handle.write(self._config_text())
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation folder
        check = subprocess.run([self._sshd, "-t", "-f", config], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejected its test config: {check.stderr.strip()}")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self._process = subprocess.Popen(
                [self._sshd, "-D", "-e", "-f", config],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        self._wait_until_listening()
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"sshd exited at start; its log:\n{self.read_log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5) as probe,
            ):
                probe.settimeout(2.0)
                if probe.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"sshd did not start listening within {_START_TIMEOUT}s")

    def stop(self) -> None:
        """Stop the server: the listener and every connection (as if sshd were killed)."""
        process = self._process
        if process is None:
            return
        self.kill_connections()
        self._process = None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def kill_connections(self) -> None:
        """Kill every per-connection sshd process: clients see their connections drop at once.

        The commands those connections started are left running (as after a network cut).
        """
        if self._process is None:
            return
        for pid in _sshd_descendants(self._process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self, *, new_host_key: bool = False) -> None:
        """Stop and start again on the same port, optionally with a fresh host key."""
        self.stop()
        if new_host_key:
            for path in (self.host_key_path, self.host_key_path + ".pub"):
                os.unlink(path)
            _keygen(self.host_key_path, "optio-host test server (new)")
        self.start()

    def read_log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()
