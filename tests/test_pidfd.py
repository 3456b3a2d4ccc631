"""pyclone.pidfd: signals with a value, stale pidfds after pid reuse, exit status without waitid."""

from __future__ import annotations

import errno
import os
import signal
import sys

import pytest

import pyclone
from pyclone import spawn_task
from pyclone.pidfd import pidfd_exit_status, pidfd_info_available, pidfd_reaped

from conftest import WAIT, Health, require_root, run_forked, sigwait_info


def _wait_for_sigusr1() -> tuple[int, int, int, int] | None:
    return sigwait_info(signal.SIGUSR1, WAIT)


def test_signal_with_a_value_reaches_the_task(healthy: Health) -> None:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])  # inherited by the task
    try:
        with spawn_task(_wait_for_sigusr1) as task:
            task.send_signal(signal.SIGUSR1, value=777)
            got = task.result(WAIT)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    assert got is not None
    signo, code, pid, value = got
    assert (signo, code, pid, value) == (signal.SIGUSR1, -1, os.getpid(), 777)  # -1: SI_QUEUE


def test_pidfd_send_signal_arguments(healthy: Health) -> None:
    with pytest.raises(TypeError, match="value"):
        pyclone.pidfd_send_signal(0, signal.SIGUSR1, "x")  # type: ignore[arg-type]
    with pytest.raises(OSError) as info:
        pyclone.pidfd_send_signal(-1, signal.SIGUSR1)
    assert info.value.errno == errno.EBADF


def test_pidfd_send_signal_takes_an_owner(healthy: Health) -> None:
    """Read and used in one C call; a closed owner is a collected task: ESRCH."""
    task = spawn_task(signal.pause)
    owner = task._pidfd
    assert owner is not None
    pyclone.pidfd_send_signal(owner, signal.SIGTERM)
    assert task.wait(WAIT) == -signal.SIGTERM
    assert owner.fd is None  # collecting the task closed it
    with pytest.raises(ProcessLookupError):
        pyclone.pidfd_send_signal(owner, signal.SIGKILL)
    task.kill()  # a no-op on a collected task, as before
    with pytest.raises(TypeError):
        pyclone.pidfd_send_signal(1.5, signal.SIGUSR1)  # type: ignore[arg-type]


def _other_process(r: int) -> int:
    return len(os.read(r, 1))


def test_stale_pidfd_never_hits_the_process_that_reuses_the_pid(healthy: Health) -> None:
    """The pid of a reaped task is given to a new process; the old pidfd reaches nothing."""
    require_root("set_tid (to force the pid reuse) needs CAP_CHECKPOINT_RESTORE")
    r, w = os.pipe()
    stale = -1
    try:
        for _attempt in range(5):
            old = spawn_task(lambda: 0)
            # The Task closes its pidfd once it has collected the task: keep a copy
            assert old.pidfd is not None
            stale = os.dup(old.pidfd)
            assert old.wait(WAIT) == 0  # reaped through waitid(P_PIDFD)
            assert old.pidfd is None and pidfd_reaped(stale)
            try:
                other = spawn_task(_other_process, (r,), set_tid=[old.pid])
            except FileExistsError:  # someone else took the pid first: try again
                os.close(stale)
                stale = -1
                continue
            break
        else:
            pytest.fail("could not reuse a pid in 5 attempts")
        try:
            assert other.pid == old.pid
            with pytest.raises(ProcessLookupError):
                pyclone.pidfd_send_signal(stale, signal.SIGKILL)
            old.kill()  # a no-op on a collected task
            assert other.poll() is None and not other.ended  # the newcomer survived
            os.write(w, b"x")
            assert other.result(WAIT) == 1 and other.returncode == 0
        finally:
            other.kill()
            other.wait(WAIT)
            other.close()
            old.close()
    finally:
        if stale >= 0:
            os.close(stale)
        os.close(r)
        os.close(w)


def test_exit_status_while_running_is_none(healthy: Health) -> None:
    r, w = os.pipe()
    try:
        with spawn_task(_other_process, (r,)) as task:
            assert task.pidfd is not None
            assert pidfd_info_available(task.pidfd)
            assert pidfd_exit_status(task.pidfd) is None
            assert not pidfd_reaped(task.pidfd)
            os.write(w, b"x")
            task.wait(WAIT)
    finally:
        os.close(r)
        os.close(w)


def _auto_reaped() -> tuple[int | None, bool]:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps children at once
    task = spawn_task(sys.exit, (5,), share="fs")
    code = task.wait(WAIT)
    task.close()
    return code, task.ended


def test_status_of_an_auto_reaped_child_comes_from_the_pidfd(healthy: Health) -> None:
    code, ended = run_forked(_auto_reaped)  # type: ignore[misc]
    assert ended
    fd = os.pidfd_open(os.getpid())
    try:
        supported = pidfd_info_available(fd)
    finally:
        os.close(fd)
    if not supported:
        pytest.skip("this kernel has no PIDFD_GET_INFO (Linux 6.13+)")
    assert code == 5  # waitid gave ECHILD; PIDFD_GET_INFO (Linux 6.15+) had the status
