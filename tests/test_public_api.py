"""The SPEC's module map: every name importable from every listed module, as the same object."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

MODULE_MAP = {
    "optio_host": [
        "Host",
        "LocalHost",
        "RemoteHost",
        "ProcessHandle",
        "make_host",
        "HookContext",
        "HookContextProtocol",
        "HostCommandError",
        "RunResult",
        "SSHConfig",
        "DownloadFailed",
        "create_download_task",
    ],
    "optio_host.types": ["SSHConfig"],
    "optio_host.host": [
        "Host",
        "LocalHost",
        "RemoteHost",
        "ProcessHandle",
        "make_host",
        "RunResult",
        "HostCommandError",
    ],
    "optio_host.context": ["RunResult", "HostCommandError", "HookContext", "HookContextProtocol"],
    "optio_host.paths": ["task_dir"],
    "optio_host.archive": ["DEFAULT_WORKDIR_EXCLUDES", "yield_workdir_archive", "consume_workdir_archive"],
    "optio_host.download": ["DownloadFailed", "create_download_task"],
    "optio_host.protocol": [
        "parse_log_line",
        "StatusEvent",
        "DeliverableEvent",
        "DoneEvent",
        "ErrorEvent",
        "UnknownLine",
        "LogEvent",
        "validate_deliverable_path",
        "relativize_deliverable_path",
        "run_log_protocol_session",
        "DeliverableCallback",
        "HookCallback",
        "fetch_deliverable_text",
        "DELIVERABLE_QUEUE_BOUND",
    ],
    "optio_host.protocol.parser": [
        "parse_log_line",
        "StatusEvent",
        "DeliverableEvent",
        "DoneEvent",
        "ErrorEvent",
        "UnknownLine",
        "LogEvent",
        "validate_deliverable_path",
        "relativize_deliverable_path",
    ],
    "optio_host.protocol.session": [
        "run_log_protocol_session",
        "DeliverableCallback",
        "HookCallback",
        "fetch_deliverable_text",
        "DELIVERABLE_QUEUE_BOUND",
        "SessionFailed",
        "_SessionFailed",
    ],
}
BEYOND = ["CommandTimeout", "HostKeyError", "SessionFailed", "HostConnectionError", "AuthenticationFailed"]


@pytest.mark.parametrize("module_name", sorted(MODULE_MAP))
def test_module_map(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in MODULE_MAP[module_name]:
        assert hasattr(module, name), f"{module_name}.{name} is missing"


def test_a_name_is_the_same_object_everywhere() -> None:
    seen: dict[str, object] = {}
    for module_name, names in MODULE_MAP.items():
        module = importlib.import_module(module_name)
        for name in names:
            value = getattr(module, name)
            key = "SessionFailed" if name == "_SessionFailed" else name
            assert seen.setdefault(key, value) is value, f"{module_name}.{name} is a different object"
    errors = importlib.import_module("optio_host.errors")
    top = importlib.import_module("optio_host")
    for name in [*BEYOND, "HostCommandError", "DownloadFailed"]:
        assert getattr(top, name) is getattr(errors, name)


@pytest.mark.parametrize("module_name", sorted(MODULE_MAP))
def test_all_lists_exactly_what_the_module_exports(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    assert set(MODULE_MAP[module_name]) - {"_SessionFailed"} <= exported | {"_SessionFailed"}
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names {name}, which does not exist"


def test_dataclass_fields_and_signatures() -> None:
    from optio_host import ProcessHandle, RunResult, SSHConfig
    from optio_host.download import create_download_task
    from optio_host.protocol.session import run_log_protocol_session

    assert [f.name for f in dataclasses.fields(SSHConfig)][:4] == ["host", "user", "key_path", "port"]
    assert all(f.default is not dataclasses.MISSING for f in dataclasses.fields(SSHConfig)[3:])
    assert [f.name for f in dataclasses.fields(RunResult)] == ["stdout", "stderr", "exit_code"]
    assert [f.name for f in dataclasses.fields(ProcessHandle)] == ["pid_like", "stdout", "stderr", "stdin"]
    download = inspect.signature(create_download_task).parameters
    assert list(download)[:2] == ["process_id", "name"]
    assert {k: download[k].default for k in ("host", "description", "cleanup_on_fail")} == {
        "host": None,
        "description": None,
        "cleanup_on_fail": True,
    }
    session = inspect.signature(run_log_protocol_session).parameters
    assert list(session)[:2] == ["host", "ctx"]
    assert all(session[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("body", "on_deliverable"))


def test_archive_workdir_is_a_plain_method_returning_an_async_iterator() -> None:
    from optio_host import LocalHost, RemoteHost

    for cls in (LocalHost, RemoteHost):
        assert not inspect.iscoroutinefunction(cls.archive_workdir)


def test_the_top_level_package_imports_lazily_with_the_same_names() -> None:
    """``import optio_host`` is cheap (workers import ``optio_host.worker``); every name still resolves."""
    import subprocess
    import sys

    probe = (
        "import sys, optio_host\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncssh', 'optio_core', 'bson')))\n"
        "names = {}\n"
        "exec('from optio_host import *', names)\n"
        "print(sorted(set(names) - {'__builtins__'}) == sorted(optio_host.__all__))\n"
        "print(set(optio_host.__all__) <= set(dir(optio_host)))\n"
        "print(optio_host.protocol.parse_log_line('DONE'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == ["[]", "True", "True", "DoneEvent(summary=None)"]
    top = importlib.import_module("optio_host")
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = top.no_such_name
