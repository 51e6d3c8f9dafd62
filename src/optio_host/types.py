"""Plain configuration and result types shared by every host."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["HOST_KEY_POLICIES", "SSHConfig", "effective_host_key_policy"]

HOST_KEY_POLICIES = ("strict", "accept-new", "off")
HOST_KEY_POLICY_ENV = "OPTIO_HOST_KEY_POLICY"


@dataclass
class SSHConfig:
    """How to reach a remote host over SSH.

    ``host`` may be an alias from ``~/.ssh/config`` (its HostName, Port, User,
    IdentityFile, ProxyJump, UserKnownHostsFile and StrictHostKeyChecking
    apply), so ``SSHConfig(host="alias")`` is enough. An empty ``user`` means the
    config's User, else the login name; an empty ``key_path`` means the keys
    ``~/.ssh/config`` names, or the ssh-agent. Port 22 leaves room for the
    config's Port.

    ``host_key_policy``: ``"strict"`` accepts only keys already in
    ``known_hosts``; ``"accept-new"`` records a first-seen key and refuses a
    changed one; ``"off"`` checks nothing but ``@revoked``. ``None`` means the
    ``OPTIO_HOST_KEY_POLICY`` environment variable, else the alias's
    ``StrictHostKeyChecking`` (yes/ask: strict, accept-new, no/off: off), else
    ``"strict"``. ``known_hosts`` ``None`` means the alias's ``UserKnownHostsFile``,
    else ``~/.ssh/known_hosts``.
    """

    host: str
    user: str = ""
    key_path: str = ""
    port: int = 22
    host_key_policy: str | None = None
    known_hosts: str | None = None
    proxy_jump: str | None = None
    connect_timeout: float = 15.0
    keepalive_interval: float = 10.0
    max_sessions: int = 10

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("SSHConfig.host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"SSHConfig.port must be 1-65535, got {self.port}")
        if self.host_key_policy is not None and self.host_key_policy not in HOST_KEY_POLICIES:
            raise ValueError(
                f"SSHConfig.host_key_policy must be one of {', '.join(HOST_KEY_POLICIES)}, "
                f"got {self.host_key_policy!r}"
            )
        if self.max_sessions < 1:
            raise ValueError("SSHConfig.max_sessions must be at least 1")
        if self.connect_timeout <= 0:
            raise ValueError("SSHConfig.connect_timeout must be positive")
        if self.keepalive_interval < 0:
            raise ValueError("SSHConfig.keepalive_interval must not be negative")


#: ``StrictHostKeyChecking`` values of ``~/.ssh/config`` and the policy each maps to.
SSH_CONFIG_POLICIES = {
    "yes": "strict",
    "ask": "strict",
    "accept-new": "accept-new",
    "no": "off",
    "off": "off",
}


def effective_host_key_policy(config: SSHConfig, from_ssh_config: str | None = None) -> str:
    """The policy in force: the config's own, else the environment's, else the one
    ``~/.ssh/config``'s ``StrictHostKeyChecking`` maps to (``from_ssh_config``), else strict."""
    if config.host_key_policy is not None:
        return config.host_key_policy
    from_env = os.environ.get(HOST_KEY_POLICY_ENV, "").strip()
    if not from_env:
        return SSH_CONFIG_POLICIES.get((from_ssh_config or "").lower(), "strict")
    if from_env not in HOST_KEY_POLICIES:
        raise ValueError(f"{HOST_KEY_POLICY_ENV}={from_env!r} is not one of {', '.join(HOST_KEY_POLICIES)}")
    return from_env
