"""The README's examples run as written (the complete ones; fragments need a real remote host)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README.read_text(), re.DOTALL)

pytestmark = pytest.mark.timeout(60)


def _blocks(language: str, marker: str) -> list[str]:
    return [code for lang, code in BLOCKS if lang == language and marker in code]


def test_setup_commands_open_the_readme() -> None:
    text = README.read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert first_block is not None
    assert first_block.group(1).strip().splitlines() == [
        "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/optio-host demo",
        "sh scripts/test.sh",
    ]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "\nsh scripts/test.sh\n" in ci  # CI runs exactly the README's test command


@pytest.mark.parametrize("code", _blocks("python", "asyncio.run("), ids=lambda c: c.splitlines()[-1][:40])
def test_complete_python_examples_run(code: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=50, check=False
    )
    assert result.returncode == 0, result.stderr


def test_python_worker_example(tmp_path: Path) -> None:
    (code,) = _blocks("python", "from optio_host import worker")
    (tmp_path / "optio.log").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "OPTIO_LOG"}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=50)
    assert (tmp_path / "optio.log").read_text().splitlines() == [
        "STATUS: 30% analysing",
        "DELIVERABLE: deliverables/summary.txt",
        "DONE: analysis complete",
    ]
    assert (tmp_path / "deliverables" / "summary.txt").read_text() == "42\n"


def test_shell_worker_example(tmp_path: Path) -> None:
    (code,) = [c for lang, c in BLOCKS if lang == "sh" and c.startswith("#!/bin/sh")]
    env = {k: v for k, v in os.environ.items() if k != "OPTIO_LOG"}
    subprocess.run(["/bin/sh", "-c", code], cwd=tmp_path, env=env, check=True, timeout=50)
    assert (tmp_path / "optio.log").read_text().splitlines() == [
        "STATUS: 10% counting lines",
        "DELIVERABLE: deliverables/count.txt",
        "DONE: counted",
    ]
