"""Test kit for task authors: a real sshd fixture, host fixtures and a recording context.

Installed as a pytest plugin; the fixtures ``optio_sshd``, ``local_host``,
``remote_host`` and ``host`` are available in any test once optio-host is
installed. ``RecordingContext`` stands in for optio-core's ``ProcessContext``.
"""

from optio_host.testing.context import RecordingContext
from optio_host.testing.sshd import SshdUnavailable, SshServer

__all__ = ["RecordingContext", "SshServer", "SshdUnavailable"]
