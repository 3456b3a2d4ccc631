"""Per-call overhead of pyclone's entry points, with pytest-benchmark.

Not part of the default test run (pytest's testpaths is tests/).  Run::

    PYTHONPATH=. python -m pytest benchmarks/ --benchmark-columns=min,median,iqr,rounds

Pin the run (``taskset -c 0 ...``) and compare figures from one run only:
absolute times on a shared or virtual machine move by tens of percent.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterator
from typing import Any

import pytest

import pyclone
from pyclone import CLONE_VM, Task, spawn_task

pytest.importorskip(
    "pytest_benchmark", reason="needs pytest-benchmark: pip install 'pyclone[bench]'"
)

WAIT_MS = 20_000


def _noop() -> None:
    pass


@pytest.fixture
def reap() -> Iterator[list[Task]]:
    """Tasks started by a launch-only benchmark, reaped afterwards."""
    tasks: list[Task] = []
    yield tasks
    for task in tasks:
        task.wait(WAIT_MS / 1000)
        task.close()


def test_clone_waitpid(benchmark: Any) -> None:
    """pyclone.clone(fn, SIGCHLD) + os.waitpid: the thinnest fork-like round trip."""
    benchmark(lambda: os.waitpid(pyclone.clone(_noop, signal.SIGCHLD), 0))


def test_os_fork_waitpid(benchmark: Any) -> None:
    """The reference for the row above, in the same run."""

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    benchmark(fork)


def test_clone_refused(benchmark: Any) -> None:
    """Argument conversion and the refusal path of clone(), no task created."""

    word = CLONE_VM | signal.SIGCHLD  # a Python callable with CLONE_VM alone: always refused
    with pytest.raises(pyclone.UnsupportedFlags):
        pyclone.clone(_noop, word)

    def refused() -> None:
        with contextlib.suppress(pyclone.UnsupportedFlags):
            pyclone.clone(_noop, word)

    benchmark(refused)


def test_spawn_task_wait(benchmark: Any) -> None:
    """spawn_task(fn).wait() + close(): the Task round trip."""

    def round_trip() -> None:
        task = spawn_task(_noop)
        task.wait()
        task.close()

    benchmark(round_trip)


def test_spawn_task_result(benchmark: Any) -> None:
    """spawn_task(fn).result(): the round trip with a pickled value coming back."""

    def round_trip() -> None:
        task = spawn_task(_noop)
        task.result()
        task.close()

    benchmark(round_trip)


def test_spawn_task_launch(benchmark: Any, reap: list[Task]) -> None:
    """spawn_task(fn) alone: until the Task is returned to the caller."""
    benchmark.pedantic(lambda: reap.append(spawn_task(_noop)), rounds=200, iterations=1)


def _ended_task() -> tuple[tuple[Task], dict[str, Any]]:
    task = spawn_task(_noop)
    assert task.pidfd is not None
    poller = select.poll()
    poller.register(task.pidfd, select.POLLIN)
    assert poller.poll(WAIT_MS), "task did not end"
    return (task,), {}


def test_wait_on_ended_task(benchmark: Any) -> None:
    """Task.wait() on a task that has already ended: reaping and draining the result pipe."""
    done: list[Task] = []

    def wait(task: Task) -> None:
        task.wait()
        done.append(task)

    benchmark.pedantic(wait, setup=_ended_task, rounds=200, iterations=1)
    for task in done:
        task.close()


def test_predict_errno(benchmark: Any) -> None:
    """pyclone.predict_errno: the flag-rule model (branch rules)."""
    try:
        from pyclone import rules
    except ImportError:
        pytest.skip("pyclone.rules is not built yet (branch rules): no predict_errno")
    predict = getattr(pyclone, "predict_errno", None) or rules.predict_errno
    flags = int(pyclone.CLONE_THREAD | pyclone.CLONE_SIGHAND | pyclone.CLONE_VM)
    benchmark(predict, flags, api="clone3", exit_signal=0)
