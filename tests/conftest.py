"""Shared test setup. Host fixtures (``host``, ``local_host``, ``remote_host``,
``optio_sshd``) come from optio-host's own pytest plugin, ``optio_host.testing``."""

pytest_plugins = ["pytester"]
