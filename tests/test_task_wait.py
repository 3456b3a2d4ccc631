"""The wait of a fork-like task (one C call) against the real kernel.

``wait()``, ``result()`` and ``poll()`` poll the pidfd, read the result
pipe and reap in ``_pyclone._await_exit``, with or without a timeout.
Most of these tests wait without one on purpose; a watchdog timer bounds
each of them instead (its handler raises, which ends the wait).
"""

from __future__ import annotations

import errno
import functools
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable

import pytest

from pyclone import Task, TimeoutExpired, _pyclone, actions, spawn_task

from conftest import WAIT, Health, Watchdog, watchdog


def _returns_after(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


def test_interrupted_wait_keeps_the_task_and_its_result(healthy: Health) -> None:
    task = spawn_task(_returns_after, (0.5, "late"))
    with pytest.raises(Watchdog):
        with watchdog(0.05):
            task.wait()  # the handler raises inside the C wait
    assert not task.ended and task.pidfd is not None
    with watchdog(WAIT):
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
    with watchdog(WAIT):
        task = spawn_task(_grandchild_holds_the_pipe, (3.0,))
        assert task.result() == 42
    assert time.monotonic() - start < 2.5
    assert task.pidfd is None


def _big(size: int) -> bytes:
    return b"x" * size


@pytest.mark.parametrize("size", [0, 65535, 65536, 65537, 3 << 20])
def test_results_around_the_pipe_size(healthy: Health, size: int) -> None:
    with watchdog(WAIT):
        assert spawn_task(_big, (size,)).result() == b"x" * size


def _exits(code: int) -> None:
    os._exit(code)


def test_a_child_that_sends_nothing(healthy: Health) -> None:
    with watchdog(WAIT):
        task = spawn_task(_exits, (7,))
        assert task.wait() == 7
    assert task.pidfd is None


def test_sigchld_ignored_the_kernel_reaps(healthy: Health) -> None:
    # With SIGCHLD ignored the kernel reaps the child itself: waitid has
    # nothing for us (ECHILD) and the general wait reads what it can.
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with watchdog(WAIT):
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


class _SlowFlush:
    """A stdout whose flush lingers: the child's last step, after its frame is sent."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        time.sleep(0.5)


def _answers_then_lingers(value: object) -> object:
    sys.stdout = _SlowFlush()  # type: ignore[assignment]
    return value


def test_a_timed_wait_keeps_the_frame_and_the_task(healthy: Health) -> None:
    """The whole frame can come before the task ends: a wait that times out keeps it."""
    task = spawn_task(_answers_then_lingers, ("sent early",))
    with pytest.raises(TimeoutExpired):
        task.wait(0.1)
    assert not task.ended and task.pidfd is not None and task.poll() is None
    assert task.wait(WAIT) == 0
    assert task.result() == "sent early" and task.pidfd is None


def test_await_exit_with_no_time_left_reaps_nothing(healthy: Health) -> None:
    task = spawn_task(_returns_after, (0.3, None))
    assert task.pidfd is not None
    assert _pyclone._await_exit(task.pidfd, -1, bytearray(), -1, 0.0) == (False, None, False)
    with pytest.raises(ValueError, match="NaN"):
        _pyclone._await_exit(task.pidfd, -1, bytearray(), -1, float("nan"))
    assert task.wait(WAIT) == 0  # still there to be waited for


# -- several threads, one task ------------------------------------------------


def _os_threads() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def _until_threads_gone(count: int) -> None:
    """A joined thread can outlive join() for a moment: a launch then would warn of it."""
    deadline = time.monotonic() + WAIT
    while _os_threads() > count and time.monotonic() < deadline:
        time.sleep(0.001)


def _in_threads(ways: dict[str, Callable[[], object]]) -> dict[str, object]:
    """Run each way at once, one thread each; what each returned (or raised)."""
    before = _os_threads()
    got: dict[str, object] = {}

    def run(name: str, how: Callable[[], object]) -> None:
        try:
            got[name] = how()
        except BaseException as exc:  # the comparison shows it
            got[name] = exc

    threads = [threading.Thread(target=run, args=item) for item in ways.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    _until_threads_gone(before)
    return got


def _poll_until_ended(task: Task[object]) -> object:
    while task.poll() is None:
        time.sleep(0.001)
    return task.returncode


def test_threads_waiting_for_one_task_all_get_its_status(healthy: Health) -> None:
    """One collects it (and closes its descriptors); the others wait for that, as Popen's do."""
    for _ in range(20):
        task = spawn_task(_returns_after, (0.05, "v"))
        got = _in_threads(
            {
                "wait": task.wait,
                "timed": functools.partial(task.wait, WAIT),
                "result": functools.partial(task.result, WAIT),
                "poll": functools.partial(_poll_until_ended, task),
            }
        )
        assert got == {"wait": 0, "timed": 0, "result": "v", "poll": 0}
        assert task.pidfd is None


def test_poll_and_a_timed_wait_do_not_wait_for_another_threads_wait(healthy: Health) -> None:
    before = _os_threads()
    task = spawn_task(_returns_after, (0.5, None))
    waiter = threading.Thread(target=task.wait)
    waiter.start()
    try:
        deadline = time.monotonic() + WAIT
        while task._wait_lock.acquire(False):  # until the waiter holds it
            task._wait_lock.release()
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert task.poll() is None  # at once: the other thread collects it
        with pytest.raises(TimeoutExpired):
            task.wait(0.05)
        assert not task.ended
    finally:
        waiter.join(WAIT)
        _until_threads_gone(before)
    assert task.ended and task.returncode == 0 and task.poll() == 0


def test_two_threads_join_one_thread_task(healthy: Health) -> None:
    task = spawn_task(actions.sleep(0.05), share="thread")
    got = _in_threads({"a": functools.partial(task.wait, WAIT), "b": task.wait})
    assert got == {"a": 0, "b": 0}


# -- a signal handler that waits for the task the interrupted wait is on -------


def _waits_for_release(r: int) -> int:
    return len(os.read(r, 1))


def _numbers(task: Task[object]) -> set[int | None]:
    return {task.pidfd, task._result_number()} - {None}


def _nested_wait_then_launch(kind: str) -> None:
    """The handler collects the task under the main thread's wait, then launches another.

    The new task's descriptors take the numbers the collected one freed: an
    interrupted wait that went on with its old numbers would wait on the
    newcomer (and hang, or reap it).
    """
    r, w = os.pipe()
    newcomer: list[Task[int]] = []
    if kind == "callable":
        task: Task[object] = spawn_task(_returns_after, (60.0, None))
    else:
        task = spawn_task(actions.sleep(60.0))  # an action: the general wait
    numbers = _numbers(task)

    def handler(signum: int, frame: object) -> None:
        task.kill()
        assert task.wait() == -signal.SIGKILL
        newcomer.append(spawn_task(_waits_for_release, (r,)))

    previous = signal.signal(signal.SIGUSR1, handler)
    main = threading.get_ident()
    timer = threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGUSR1))
    try:
        timer.start()
        with watchdog(WAIT):
            assert task.wait() == -signal.SIGKILL
        assert newcomer and numbers & _numbers(newcomer[0])  # a number was reused
        assert newcomer[0].poll() is None and not newcomer[0].ended  # not reaped by it
    finally:
        timer.join(WAIT)
        signal.signal(signal.SIGUSR1, previous)
        os.write(w, b"x")
        for other in newcomer:
            assert other.result(WAIT) == 1
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("kind", ["callable", "action"])
def test_a_handler_that_collects_the_task_ends_the_interrupted_wait(
    healthy: Health, kind: str
) -> None:
    _nested_wait_then_launch(kind)
