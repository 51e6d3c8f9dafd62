"""``python -m optio_host``: the ``optio-host`` command."""

from optio_host.cli import main

if __name__ == "__main__":
    main()
