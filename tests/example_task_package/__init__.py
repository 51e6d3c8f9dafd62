"""A tiny task package, as a task author would write one, tested with optio-host's pytest plugin only."""
