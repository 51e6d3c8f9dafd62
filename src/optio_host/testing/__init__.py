"""Test kit for task authors: a real sshd fixture, host fixtures and a recording context.

Installed as a pytest plugin; the fixtures ``optio_sshd``, ``local_host``,
``remote_host`` and ``host`` are available in any test once optio-host is
installed. ``RecordingContext`` stands in for optio-core's ``ProcessContext``.
"""

from typing import Any

from optio_host.testing.context import RecordingContext
from optio_host.testing.sshd import SshdUnavailable, SshServer

__all__ = ["RecordingContext", "SshServer", "SshdUnavailable"]


def pytest_configure(config: Any) -> None:
    """``-p optio_host.testing`` works like the entry point (e.g. with plugin autoloading off).

    Registers the plugin module under the entry point's name unless it is already
    loaded (``pytest_plugins`` here would register it a second time, under another name).
    """
    from optio_host.testing import plugin

    if not config.pluginmanager.is_registered(plugin) and not config.pluginmanager.is_blocked("optio_host"):
        config.pluginmanager.register(plugin, "optio_host")
