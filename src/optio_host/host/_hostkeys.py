"""Host-key checking for ``RemoteHost``: known_hosts, the three policies, and refusals that say why.

asyncssh checks keys against what ``HostKeyCheck.match`` returns and asks the
client (``HostKeyCheck.accepts``) about any other key. Revoked keys and CAs are
kept out of what asyncssh trusts and refused here, in every policy (asyncssh's
own lookup drops ``@revoked`` lines for a host known only by a revoked key), so
the refusal can name the key. ``@cert-authority`` lines are honoured by asyncssh.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import asyncssh

from optio_host.errors import (
    HostConnectionError,
    HostKeyChanged,
    HostKeyError,
    HostKeyRevoked,
    HostKeyUnknown,
)
from optio_host.host._ssh_config import _DEFAULT_KNOWN_HOSTS, Endpoint
from optio_host.types import HOST_KEY_POLICY_ENV, SSHConfig

__all__ = ["HostKeyCheck"]

_log = logging.getLogger("optio_host")

_KeyLists = tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]


def _default_folder() -> str:
    """The one folder accept-new may create for a known_hosts file: ~/.ssh, as OpenSSH does."""
    return os.path.dirname(os.path.expanduser(_DEFAULT_KNOWN_HOSTS))


def host_pattern(host: str, port: int) -> str:
    """How known_hosts names ``host`` at ``port`` (OpenSSH's form)."""
    return host if port == 22 else f"[{host}]:{port}"


def _unrevoked(keys: list[asyncssh.SSHKey], revoked: list[asyncssh.SSHKey]) -> list[asyncssh.SSHKey]:
    return [key for key in keys if key not in revoked]


class HostKeyCheck:
    """One connection attempt's view of known_hosts, and what it saw of the server's key."""

    def __init__(self, config: SSHConfig, endpoint: Endpoint) -> None:
        self.config = config
        self.endpoint = endpoint
        self.policy = endpoint.policy
        self._known = self._load(endpoint.known_hosts)
        #: The key (or CA key) the server offered that was not already trusted.
        self.offered_key: asyncssh.SSHKey | None = None
        #: Why it was refused: "unknown", "changed" or "revoked".
        self.verdict: str | None = None
        self._revoked: list[asyncssh.SSHKey] = []
        self._recorded: list[asyncssh.SSHKey] = []

    @staticmethod
    def _load(files: Sequence[str]) -> asyncssh.SSHKnownHosts | None:
        existing = [path for path in files if os.path.exists(path)]
        if not existing:
            return None
        try:
            return asyncssh.read_known_hosts(existing)
        except (OSError, ValueError) as exc:
            raise HostConnectionError(f"cannot read known_hosts {', '.join(existing)}: {exc}") from None

    def _lookup(self, host: str, addr: str, port: int | None) -> _KeyLists:
        if self._known is None:
            return [], [], []
        known = self._known
        trusted, cas, revoked = (list(items) for items in known.match(host, addr, port)[:3])
        if port:
            # asyncssh's lookup falls back to the bare host when the [host]:port lines trust
            # nothing, and then drops their @revoked keys: look those up on their own.
            for name in {host, addr} - {""}:
                revoked += known.match(f"[{name}]:{port}", "", None)[2]
            revoked += known.match(host, addr, None)[2]
        return trusted, cas, revoked

    def match(self, host: str, addr: str, port: int | None) -> _KeyLists:
        """What asyncssh may trust for this host: recorded keys and CAs, minus revoked ones."""
        trusted, cas, revoked = self._lookup(host, addr, port)
        self._revoked = revoked
        self._recorded = trusted + cas
        return _unrevoked(trusted, revoked), _unrevoked(cas, revoked), []

    def preferred_algorithms(self, addresses: Sequence[str]) -> list[str] | None:
        """Host-key algorithms in OpenSSH's order: those of the keys known_hosts trusts for this
        host first, then every other, so a server without such a key still shows the key it has
        (refused as changed, by name) instead of ending the handshake. ``None`` when nothing is
        recorded (asyncssh's own order then)."""
        port = self.endpoint.port if self.endpoint.port != 22 else None
        trusted: list[asyncssh.SSHKey] = []
        cas: list[asyncssh.SSHKey] = []
        for address in ["", *addresses]:
            keys, authorities, revoked = self._lookup(self.endpoint.host, address, port)
            trusted += _unrevoked(keys, revoked)
            cas += _unrevoked(authorities, revoked)
        if not trusted and not cas:
            return None
        first = [alg for key in trusted for alg in key.sig_algorithms]
        if cas:
            first = asyncssh.public_key.get_default_certificate_algs() + first
        rest = (
            asyncssh.public_key.get_default_certificate_algs()
            + asyncssh.public_key.get_default_public_key_algs()
        )
        return [alg.decode() for alg in dict.fromkeys(first + rest)]

    def accepts(self, host: str, port: int, key: asyncssh.SSHKey, *, is_ca: bool = False) -> bool:
        """Called by asyncssh for a key (or CA) it does not already trust."""
        self.offered_key = key
        if key in self._revoked:
            self.verdict = "revoked"
            return False
        if self._recorded:
            self.verdict = "changed"
            if self.policy == "off":
                _log.warning("%s", self.error().args[0] + " (accepted: host_key_policy is off)")
                return True
            return False
        self.verdict = "unknown"
        if self.policy == "off":
            return True
        if self.policy == "accept-new" and not is_ca:
            if self._missing_folder():
                self.verdict = "unrecordable"
                return False
            self._record(host, port, key)
            return True
        return False

    def _missing_folder(self) -> str:
        """The folder of the file to record in if it is missing and may not be created, else ``""``.

        Only ~/.ssh is created: a missing folder of an explicit path is more
        likely a typo than a wish for a new folder.
        """
        folder = os.path.dirname(self.endpoint.record_to)
        if not folder or os.path.isdir(folder) or folder == _default_folder():
            return ""
        return folder

    def check_connected(self, key: asyncssh.SSHKey | None) -> None:
        """After the handshake: refuse a certificate whose own key is revoked (its CA was trusted)."""
        if key is not None and key in self._revoked:
            self.offered_key, self.verdict = key, "revoked"
            raise self.error()

    def _record(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        path = self.endpoint.record_to
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        kind, data = key.export_public_key("openssh").decode().split()[:2]
        with open(path, "a") as handle:
            handle.write(f"{host_pattern(host, port)} {kind} {data}\n")

    def error(self) -> HostKeyError:
        """The refusal, naming the host (and where an alias leads), the key and the fix."""
        config, endpoint = self.config, self.endpoint
        key = self.offered_key
        fingerprint = key.get_fingerprint("sha256") if key is not None else None
        shown = f"{key.get_algorithm()} key {fingerprint}" if key is not None else "its key"
        name = f"{config.host} port {endpoint.port}"
        if endpoint.host != config.host:
            name = f"{config.host} ({endpoint.host} port {endpoint.port})"
        files = ", ".join(endpoint.known_hosts)
        pattern = host_pattern(endpoint.host, endpoint.port)
        if self.verdict == "revoked":
            message = (
                f"host key for {name} is REVOKED: {shown} is marked @revoked in {files}. "
                "It is refused whatever the host-key policy; the host needs a new key."
            )
            kind: type[HostKeyError] = HostKeyRevoked
        elif self.verdict == "changed":
            recorded = sorted({known.get_algorithm() for known in self._recorded})
            other = (
                ""
                if key is None or key.get_algorithm() in recorded
                else f" (it records {', '.join(recorded)})"
            )
            message = (
                f"host key for {name} has CHANGED: it now offers {shown}, which does not match "
                f"{files}{other}. This can mean someone is intercepting the connection. If the change is "
                f"expected, remove the old entry (ssh-keygen -R '{pattern}' -f {endpoint.record_to}) "
                "and connect again."
            )
            kind = HostKeyChanged
        else:
            message = self._unknown_message(name, shown)
            kind = HostKeyUnknown
        return kind(message, host=config.host, port=endpoint.port, fingerprint=fingerprint)

    def _unknown_message(self, name: str, shown: str) -> str:
        """Why a first-seen key was refused, and a fix that can work with the files as they are."""
        endpoint = self.endpoint
        files, record_to = ", ".join(endpoint.known_hosts), endpoint.record_to
        folder = os.path.dirname(record_to) or "."
        accept_new = f'SSHConfig(host_key_policy="accept-new") or {HOST_KEY_POLICY_ENV}=accept-new'
        if self.verdict == "unrecordable":
            return (
                f"host key for {name} is not trusted and cannot be recorded: {shown} is new, and the "
                f"folder {folder} of the known_hosts file {record_to} does not exist. Create it "
                f"(mkdir -p {folder}) or give a known_hosts file in an existing folder "
                "(--known-hosts / SSHConfig.known_hosts)."
            )
        trust = f"If you trust this host, let the first connection record its key with {accept_new}"
        if os.path.isdir(folder):
            absent = "" if os.path.exists(record_to) else f" (the file {record_to} does not exist)"
            return (
                f"host key for {name} is not trusted: {shown} is not in {files}{absent}. If you trust "
                f"this host, add its key to known_hosts (ssh-keyscan -p {endpoint.port} {endpoint.host} "
                f">> {record_to}), or let the first connection record it with {accept_new}."
            )
        missing = f"the known_hosts file {record_to} does not exist, nor does its folder {folder}"
        if self._missing_folder():
            trust = f"If you trust this host, create the folder (mkdir -p {folder}), then use accept-new"
        return (
            f"host key for {name} is not trusted: {shown} cannot be checked, as {missing}. Check the "
            f"path (--known-hosts / SSHConfig.known_hosts). {trust}."
        )
