"""A Task's lifetime against the real kernel: descriptors, interrupts, early signals, checks."""

from __future__ import annotations

import errno
import gc
import math
import os
import pickle
import random
import resource
import signal
import sys
import time
from typing import Any

import pytest

import pyclone
from pyclone import ChildError, TimeoutExpired, spawn_task
from pyclone._reaper import _active, _cleanup

from conftest import WAIT, Health, _zombies, run_forked


def _noop() -> None:
    return None


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _nap(seconds: float) -> None:
    """Sleep in slices, so that a Python handler due is run within one slice.

    A signal that lands after the last check of the eval loop and before
    ``time.sleep`` enters the kernel is handled only once the sleep ends: that
    is CPython's own window, in any process, and not the one these tests are
    about (a signal lost between fork and the target).
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


# -- descriptors ---------------------------------------------------------------


def _ten_thousand_under_a_low_limit() -> tuple[int, int, int]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    before = len(_fds())
    kept = []
    # Mostly CLONE_VM|CLONE_VFORK tasks: they hold a pidfd like any process
    # task but cost the same at any heap size, so 10,000 stay quick even on
    # a debug build; every tenth is fork-like, whose result comes by pipe.
    for i in range(10_000):
        task = spawn_task(int, ("7",)) if i % 10 == 0 else spawn_task(_noop, share="vfork")
        task.wait(WAIT)
        kept.append(task)
    assert kept[1].result() is None and kept[0].result() == 7  # results stay readable
    open_pidfds = sum(task.pidfd is not None for task in kept)
    return before, len(_fds()), open_pidfds


@pytest.mark.timeout(900)
def test_finished_tasks_keep_no_descriptor(healthy: Health) -> None:
    """10,000 collected Tasks kept in a list under RLIMIT_NOFILE 256 hold no fd."""
    outcome = run_forked(_ten_thousand_under_a_low_limit, timeout=850)
    before, after, open_pidfds = outcome  # type: ignore[misc]
    assert open_pidfds == 0
    assert after == before


def test_collected_task_has_no_pidfd(healthy: Health) -> None:
    task = spawn_task(_noop)
    assert task.pidfd is not None
    assert task.wait(WAIT) == 0
    assert task.pidfd is None and task.ended
    task.close()  # still allowed, a no-op
    task.kill()  # a no-op on a collected task


# -- interrupts at any moment ------------------------------------------------


class _Storm(Exception):
    """What the storm's SIGALRM handler raises."""


def _storm(seconds: float, kinds: str = "pvt") -> dict[str, int]:
    """Launch, wait and drop tasks while SIGALRM handlers raise at random.

    ``kinds``: ``p`` fork-like, ``v`` share="vfork", ``t`` a thread action,
    ``a`` an action in a process of its own.
    """
    exit_action = pyclone.actions.exit(0)
    rng = random.Random(1234)
    counts = {"launches": 0, "interrupts": 0, "caught": 0, "ebadf": 0, "unraisable": 0}
    ebadf: list[str] = []

    def hook(info: Any) -> None:
        counts["unraisable"] += 1
        if isinstance(info.exc_value, OSError) and info.exc_value.errno == errno.EBADF:
            ebadf.append(repr(info.exc_value))

    # warm up every kind once, so lazily opened descriptors are not counted
    for kind in ("process", "vfork"):
        spawn_task(_noop, share=kind).wait(WAIT)
    spawn_task(exit_action, share="thread").wait(WAIT)
    fds, threads = _fds(), _threads()

    # The handler raises only inside the loop body's try: the loop's own
    # bookkeeping (its jumps are check points too) must not be hit.
    armed = [False]

    def handler(signum: int, frame: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0003, 0.0023))
        if armed[0]:
            armed[0] = False
            counts["interrupts"] += 1
            raise _Storm

    old_hook, sys.unraisablehook = sys.unraisablehook, hook
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.001)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        counts["launches"] += 1
        kind = kinds[i % len(kinds)]
        try:
            armed[0] = True
            if kind == "p":
                with spawn_task(_noop) as task:
                    task.result(WAIT)
            elif kind == "v":
                way = (i // len(kinds)) % 3
                if way == 0:
                    with spawn_task(_noop, share="vfork") as task:
                        task.result(WAIT)
                else:
                    task = spawn_task(_noop, share="vfork")
                    if way == 1:
                        task.wait(WAIT)
            elif kind == "a":
                task = spawn_task(exit_action)
                if i % 3 == 0:
                    task.wait(WAIT)
            else:
                task = spawn_task(exit_action, share="thread")
                if i % 4 == 0:
                    task.wait(WAIT)
            del task
            armed[0] = False
        except _Storm:
            counts["caught"] += 1
        except OSError as exc:
            armed[0] = False
            if exc.errno != errno.EBADF:
                raise
            ebadf.append(repr(exc))
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    sys.unraisablehook = old_hook
    # The last iteration may have been interrupted before its ``del task``:
    # that Task is still the storm's, not a leak, until it is dropped here.
    task = None
    counts["ebadf"] = len(ebadf)
    gc.collect()
    deadline = time.monotonic() + WAIT
    while _active and time.monotonic() < deadline:
        _cleanup()
        time.sleep(0.01)
    gc.collect()
    counts["deferred_left"] = len(_active)
    counts["leaked_fds"] = len(_fds() - fds)
    # A thread's tid word is cleared just before it leaves the task list: on a
    # busy machine the last ones may still be leaving.
    while _threads() > threads and time.monotonic() < deadline:
        time.sleep(0.001)
    counts["extra_threads"] = _threads() - threads
    counts["zombies"] = len(_zombies())
    counts["works_after"] = int(spawn_task(int, ("42",)).result(WAIT) == 42)
    return counts


def _check_storm(counts: dict[str, int]) -> None:
    print("storm:", counts)
    assert counts["interrupts"] > 0 and counts["caught"] > 0
    assert counts["ebadf"] == 0
    assert counts["deferred_left"] == 0
    assert counts["leaked_fds"] == 0
    assert counts["extra_threads"] == 0
    assert counts["zombies"] == 0
    assert counts["works_after"] == 1


def test_signal_storm_leaves_nothing_behind(healthy: Health) -> None:
    """Handlers raising every ~1.3 ms at random points: no fd, zombie, thread or EBADF.

    Fork-like, share="vfork", thread-action and process-action tasks are
    launched, waited for, dropped and used in ``with``.
    """
    _check_storm(run_forked(lambda: _storm(12.0, "pvta"), timeout=120))  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_signal_storm_long(healthy: Health) -> None:
    _check_storm(run_forked(lambda: _storm(120.0, "pvta"), timeout=300))  # type: ignore[arg-type]


def _dropped_while_del_is_interrupted(share: str) -> tuple[int, int, int, int]:
    """Tasks dropped unwaited while Task.__del__ raises at its first instruction.

    That is where a handler's exception lands when a signal is due as the
    finalizer starts: none of its lines run.  Returns (unraisable, zombies
    and fds left, deferred entries left, tasks).
    """
    from pyclone._task import Task

    raised: list[object] = []

    def interrupted(self: object) -> None:
        raise _Storm

    def hook(info: Any) -> None:
        raised.append(info.exc_type)

    fds = _fds()
    old_del, Task.__del__ = Task.__del__, interrupted  # type: ignore[method-assign]
    old_hook, sys.unraisablehook = sys.unraisablehook, hook
    try:
        for _ in range(20):
            task = spawn_task(time.sleep, (0.05,), share=share)
            del task
    finally:
        Task.__del__ = old_del  # type: ignore[method-assign]
        sys.unraisablehook = old_hook
    deadline = time.monotonic() + WAIT
    while _active and time.monotonic() < deadline:
        _cleanup()
        time.sleep(0.01)
    return raised.count(_Storm), len(_zombies()) + len(_fds() - fds), len(_active), 20


@pytest.mark.parametrize("share", ["process", "vfork"])
def test_task_freed_without_its_finalizer_is_still_reaped(healthy: Health, share: str) -> None:
    """The Task's weak reference puts its pidfd on the reaper list whatever __del__ did."""
    outcome = run_forked(lambda: _dropped_while_del_is_interrupted(share))
    raised, left, deferred, tasks = outcome  # type: ignore[misc]
    assert raised == tasks
    assert (left, deferred) == (0, 0)


# -- signals sent right after the launch ------------------------------------------


def test_sigint_right_after_launch_takes_effect(healthy: Health) -> None:
    """A SIGINT sent as soon as spawn_task returns ends the task, 50 times out of 50."""
    # Python leaves SIGINT ignored when it started ignored (a background job of a
    # non-interactive shell): give the task the handler an interactive caller has.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for _ in range(50):
            task = spawn_task(_nap, (5,))
            task.send_signal(signal.SIGINT)
            # the target sleeps 5 s: a swallowed signal would time out here
            with pytest.raises(ChildError) as info:
                task.result(4.0)
            assert task.returncode == -signal.SIGINT
            assert isinstance(info.value.__cause__, KeyboardInterrupt)
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def test_sigterm_right_after_launch_kills(healthy: Health) -> None:
    for _ in range(20):
        task = spawn_task(time.sleep, (5,))
        task.terminate()
        assert task.wait(4.0) == -signal.SIGTERM


def test_keyboard_interrupt_in_target_ends_by_sigint(healthy: Health) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with spawn_task(interrupted) as task:
        with pytest.raises(ChildError) as info:
            task.result(WAIT)
    assert task.returncode == -signal.SIGINT
    assert isinstance(info.value.__cause__, KeyboardInterrupt)


def test_target_runs_with_the_creator_mask(healthy: Health) -> None:
    def blocked() -> int:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("SigBlk"))
        return int(line.split()[1], 16)

    mine = int(dict(healthy.signals)["SigBlk"], 16)
    assert spawn_task(blocked).result(WAIT) & ~((1 << 31) | (1 << 32)) == mine


# -- checks at the API boundary --------------------------------------------------


@pytest.mark.parametrize("bad", [math.inf, math.nan, -1, -0.5])
def test_bad_timeout_values(healthy: Health, bad: float) -> None:
    with spawn_task(time.sleep, (60,)) as task:
        for call in (task.wait, task.result):
            with pytest.raises(ValueError, match="timeout"):
                call(bad)
        task.kill()


@pytest.mark.parametrize("bad", ["1", True, [1]])
def test_timeout_must_be_a_number(healthy: Health, bad: Any) -> None:
    with spawn_task(_noop) as task:
        for call in (task.wait, task.result):
            with pytest.raises(TypeError, match="timeout"):
                call(bad)


class _TwoArgs(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}+{b}")


def _raise_two_args() -> None:
    raise _TwoArgs(1, 2)


def test_exception_that_does_not_unpickle_comes_back_as_child_error(healthy: Health) -> None:
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(_TwoArgs(1, 2)))
    with spawn_task(_raise_two_args) as task:
        with pytest.raises(ChildError, match=r"_TwoArgs: 1\+2") as info:
            task.result(WAIT)
    assert info.value.exception is None
    assert info.value.remote_traceback is not None
    assert "_raise_two_args" in info.value.remote_traceback


def test_timeout_expired_is_a_timeout_error(healthy: Health) -> None:
    with spawn_task(time.sleep, (60,)) as task:
        with pytest.raises(TimeoutError):
            task.wait(0.01)
        with pytest.raises(TimeoutExpired):
            task.result(0.01)
        task.kill()


def test_task_is_not_built_directly() -> None:
    with pytest.raises(TypeError, match="spawn_task"):
        pyclone.Task()  # type: ignore[call-arg]


# -- other event loops ---------------------------------------------------------


def test_wait_from_trio_on_the_pidfd(healthy: Health) -> None:
    """The pidfd becomes readable when the task ends: trio can wait on it (docs/howto/clone3)."""
    trio = pytest.importorskip("trio")

    async def wait_task(task: pyclone.Task) -> int | None:
        pidfd = task.pidfd
        assert pidfd is not None
        await trio.lowlevel.wait_readable(pidfd)
        assert task.pidfd is not None  # readable, not yet collected
        return task.wait(WAIT)

    async def main() -> list[int]:
        tasks = [spawn_task(pow, (n, 2)) for n in range(10)]
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for task in tasks:
                    nursery.start_soon(wait_task, task)
        assert all(task.ended and task.pidfd is None for task in tasks)
        return [task.result(0) for task in tasks]

    assert trio.run(main) == [n * n for n in range(10)]
