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


def test_demo_thread_shows_pid_tgid_and_parent_side_by_side() -> None:
    result = run_cli("demo", "thread")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["pid", "tgid", "ppid"]
    rows = {line[:14].strip(): [int(x) for x in line[14:].split()] for line in lines[1:4]}
    caller, process, thread = rows["caller"], rows["process task"], rows["thread task"]
    assert process[1] == process[0] != caller[0]  # its own thread group
    assert process[2] == caller[0]  # the caller is its parent
    assert thread[0] != caller[0] and thread[1] == caller[0]  # the caller's thread group
    assert thread[2] == caller[2]  # a thread's parent is the group's parent
    assert "tgid" in lines[4]
