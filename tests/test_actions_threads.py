"""pyclone.actions thread tasks: ids, sharing, joining with the GIL released, reclaiming."""

from __future__ import annotations

import errno
import gc
import os
import signal
import threading
import time

import pytest

import pyclone
from pyclone import CloneFlag, _pyclone, actions, spawn_task

from actions_support import THREAD, maps_lines, wait_thread_gone, wait_threads_settle
from conftest import WAIT, Health

# -- thread tasks ------------------------------------------------------------------------------


def test_thread_ids(healthy: Health) -> None:
    with spawn_task(actions.sleep(WAIT * 10), share="thread") as task:
        assert task.tgid == os.getpid()
        assert task.pid != os.getpid()
        assert task.pidfd is None
        assert os.path.isdir(f"/proc/self/task/{task.pid}")
        with open(f"/proc/{task.pid}/status") as f:
            status = f.read()
        assert f"Tgid:\t{os.getpid()}\n" in status
        task.kill()
        assert task.wait(WAIT) == -signal.SIGKILL
    # wait() returns once the kernel cleared the tid word, as pthread_join does;
    # the thread may still be finishing its exit in the kernel for a moment
    wait_thread_gone(task.pid)


def test_thread_shares_vm_files_fs_sighand(healthy: Health) -> None:
    with spawn_task(actions.sleep(WAIT * 10), share="thread") as task:
        try:
            for kind in ("KCMP_VM", "KCMP_FILES", "KCMP_FS", "KCMP_SIGHAND"):
                assert pyclone.kcmp(os.getpid(), task.pid, getattr(_pyclone, kind)) == 0, kind
        finally:
            task.kill()


def test_process_action_shares_nothing_by_default(healthy: Health) -> None:
    with spawn_task(actions.sleep(WAIT * 10)) as task:
        try:
            for kind in ("KCMP_VM", "KCMP_FILES", "KCMP_FS", "KCMP_SIGHAND"):
                assert pyclone.kcmp(os.getpid(), task.pid, getattr(_pyclone, kind)) != 0, kind
        finally:
            task.kill()


def test_thread_join_releases_the_gil(healthy: Health) -> None:
    ticks = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        with spawn_task(actions.sleep(0.2), share="thread") as task:
            count = len(ticks)
            assert task.wait(WAIT) == 0
            assert len(ticks) > count
    finally:
        stop.set()
        ticker.join(WAIT)


def test_thread_join_runs_signal_handlers_and_goes_on(healthy: Health) -> None:
    got: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    try:
        task = spawn_task(actions.sequence(actions.sleep(0.3), actions.exit(4)), share="thread")
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGUSR1))
        timer.start()
        assert task.wait(WAIT) == 4  # EINTR from the futex wait: handler run, wait resumed
        timer.join(WAIT)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == [signal.SIGUSR1]


def test_thousand_threads_leak_nothing(healthy: Health) -> None:
    action = actions.exit(7)
    for _ in range(50):  # warm the stack and page caches
        spawn_task(action, share="thread").wait(WAIT)
    lines = maps_lines()
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(1000):
        task = spawn_task(action, share="thread")
        assert task.wait(WAIT) == 7
    assert len(os.listdir("/proc/self/fd")) == fds
    assert maps_lines() - lines < 16  # the allocator's arenas may move a little; stacks did not
    wait_threads_settle(healthy.threads)


def test_raw_clone_threads_are_reclaimed(healthy: Health) -> None:
    lines = maps_lines()
    for _ in range(200):
        tid = pyclone.clone(actions.exit(0), THREAD)
        wait_thread_gone(tid)
    assert maps_lines() - lines < 16


def test_unwaited_thread_task_is_reaped_later(healthy: Health) -> None:
    from pyclone import task as task_module

    with pytest.warns(ResourceWarning, match="never waited for"):
        task = spawn_task(actions.sleep(0.05), share="thread")
        tid = task.pid
        del task
        gc.collect()
    assert tid in [t.pid for t in task_module._active]
    wait_thread_gone(tid)
    spawn_task(actions.exit(0), share="thread").wait(WAIT)  # runs the deferred cleanup
    assert tid not in [t.pid for t in task_module._active]


# -- the untimed wait: one collect() call ----------------------------------------------------


def _ended(task: pyclone.Task) -> pyclone.Task:
    """Join the thread with a time limit first, so the untimed wait after it cannot hang."""
    assert task._run is not None
    assert task._run.join(WAIT)
    return task


def test_untimed_wait_of_a_thread_reports_its_code_and_its_failed_step(healthy: Health) -> None:
    task = _ended(spawn_task(actions.exit(3), share="thread"))
    assert task.wait() == 3
    assert task.ended and task.pidfd is None
    wait_thread_gone(task.pid)
    failing = _ended(spawn_task(actions.chdir("/nonexistent/pyclone"), share="thread"))
    with pytest.raises(actions.ActionError) as caught:
        failing.wait()
    assert caught.value.errno == errno.ENOENT
    assert failing.ended and failing.returncode == 127
    assert failing.wait() == 127  # collected once: the error is not raised again
    wait_thread_gone(failing.pid)


def test_private_collect_joins_reads_and_releases(healthy: Health) -> None:
    pid, _, run = _pyclone._spawn_action(actions.exit(5), int(THREAD), 0, False, True, 0, None)
    assert run.join(WAIT)
    assert run.collect() == (5, None, True)  # no on_end to run: released in the same call
    with pytest.raises(ValueError, match=r"collect\(\) needs a CLONE_VM task"):
        run.collect()
    run.release()  # a second release is harmless
    wait_thread_gone(pid)


def test_private_collect_leaves_the_release_to_a_program_with_on_end(healthy: Health) -> None:
    ended: list[bool] = []
    program = _pyclone._action_program(
        [("exit", "exit", 4)], actions.ActionError, lambda: ended.append(True)
    )
    pid, run = _pyclone._spawn_thread(program, int(THREAD | CloneFlag.SIGHAND), 0)
    assert run.collect() == (4, None, False)
    assert run.outcome()[:2] == (_pyclone._act_exited, 4)  # the report is still there
    assert ended == []
    run.release()  # runs on_end: the task has ended
    assert ended == [True]
    wait_thread_gone(pid)


@pytest.mark.parametrize(
    "flags",
    [int(CloneFlag.VM), int(THREAD | CloneFlag.PIDFD), int(THREAD) | 17, int(THREAD) | 1 << 32],
)
def test_private_spawn_thread_refuses_what_it_cannot_start(flags: int) -> None:
    with pytest.raises(ValueError, match="_spawn_thread needs CLONE_THREAD"):
        _pyclone._spawn_thread(actions.exit(0), flags, 0)
