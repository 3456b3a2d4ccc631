"""The blocking wait of a fork-like task (one C call) against the real kernel.

``wait()`` and ``result()`` without a timeout poll the pidfd, read the
result pipe and reap in ``_pyclone._await_exit``.  These tests call them
without a timeout on purpose; a watchdog timer bounds each of them
instead (its handler raises, which ends the wait).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import time
from collections.abc import Iterator

import pytest

from pyclone import _pyclone, spawn_task

from conftest import WAIT, Health


class _Watchdog(Exception):
    """What the watchdog's SIGALRM handler raises."""


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    """Raise _Watchdog in this thread if the block lasts more than ``seconds``."""

    def fire(signum: int, frame: object) -> None:
        raise _Watchdog(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _returns_after(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


def test_interrupted_wait_keeps_the_task_and_its_result(healthy: Health) -> None:
    task = spawn_task(_returns_after, (0.5, "late"))
    with pytest.raises(_Watchdog):
        with _watchdog(0.05):
            task.wait()  # the handler raises inside the C wait
    assert not task.ended and task.pidfd is not None
    with _watchdog(WAIT):
        assert task.result() == "late"
    assert task.returncode == 0 and task.pidfd is None


def _grandchild_holds_the_pipe(seconds: float) -> int:
    """Fork a process that keeps every inherited descriptor open for ``seconds``."""
    if os.fork() == 0:
        time.sleep(seconds)
        os._exit(0)
    return 42


def test_wait_ends_with_the_child_not_with_the_pipe(healthy: Health) -> None:
    # The grandchild holds the result pipe's write end: the wait must end
    # once the child has ended and sent its frame, not at end of file.
    start = time.monotonic()
    with _watchdog(WAIT):
        task = spawn_task(_grandchild_holds_the_pipe, (3.0,))
        assert task.result() == 42
    assert time.monotonic() - start < 2.5
    assert task.pidfd is None


def _big(size: int) -> bytes:
    return b"x" * size


@pytest.mark.parametrize("size", [0, 65535, 65536, 65537, 3 << 20])
def test_results_around_the_pipe_size(healthy: Health, size: int) -> None:
    with _watchdog(WAIT):
        assert spawn_task(_big, (size,)).result() == b"x" * size


def _exits(code: int) -> None:
    os._exit(code)


def test_a_child_that_sends_nothing(healthy: Health) -> None:
    with _watchdog(WAIT):
        task = spawn_task(_exits, (7,))
        assert task.wait() == 7
    assert task.pidfd is None


def test_sigchld_ignored_the_kernel_reaps(healthy: Health) -> None:
    # With SIGCHLD ignored the kernel reaps the child itself: waitid has
    # nothing for us (ECHILD) and the general wait reads what it can.
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with _watchdog(WAIT):
            task = spawn_task(_returns_after, (0.0, "value"))
            assert task.result() == "value"
        assert task.ended and task.pidfd is None
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_await_exit_checks_its_arguments(healthy: Health) -> None:
    with pytest.raises(TypeError):
        _pyclone._await_exit(0, -1, b"", -1)  # type: ignore[arg-type]
    with pytest.raises(OSError) as info:
        # a number no descriptor can have (past the soft limit), so never open
        _pyclone._await_exit(resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 1, -1, bytearray(), -1)
    assert info.value.errno == errno.EBADF  # the kernel's answer: waitid on no pidfd
