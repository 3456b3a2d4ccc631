"""``python -m pyclone demo`` prints the clone(2) article's lines."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import WAIT


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyclone", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_demo_prints_copy_semantics() -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        'Child sees buf = "hello from parent"\n'
        'Child exited with status 0. buf = "hello from parent"\n'
    )


def test_help_lists_demo() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout
