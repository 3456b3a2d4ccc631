"""set_tid: choosing a task's pid, in each pid namespace, against the real kernel."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from pyclone import Task, spawn_task

from conftest import WAIT, Health, become_nobody, require_root, run_forked


def _free_pid() -> int:
    """A pid below the allocator's cursor that no process holds: not handed out until wrap.

    Chosen at random among the free ones, so that two test runs on one
    machine (CI runs interpreters side by side) rarely pick the same pid.
    """
    import random

    with open("/proc/sys/kernel/ns_last_pid") as f:
        last = int(f.read())
    free = [pid for pid in range(300, last - 50) if not os.path.exists(f"/proc/{pid}")]
    if not free:
        pytest.skip("no free pid below the allocator's cursor")
    return random.choice(free)


def _spawn_at_free_pid(make: Callable[[int], Task]) -> tuple[Task, int]:
    """``make(pid)`` with a free pid, retried if another process took it first.

    Between the check of /proc and the clone another run's task can get the
    same pid; the kernel then says EEXIST, and another pid is as good.
    """
    for attempt in range(10):
        pid = _free_pid()
        try:
            return make(pid), pid
        except FileExistsError:
            if attempt == 9:
                raise
    raise AssertionError("unreachable")


def test_set_tid_takes_a_free_pid(healthy: Health) -> None:
    require_root("set_tid needs CAP_CHECKPOINT_RESTORE in the initial pid namespace")
    task, pid = _spawn_at_free_pid(lambda pid: spawn_task(os.getpid, set_tid=[pid]))
    with task:
        assert task.pid == pid
        assert task.result(WAIT) == pid


def test_set_tid_in_use_gives_eexist(healthy: Health) -> None:
    require_root("set_tid needs CAP_CHECKPOINT_RESTORE in the initial pid namespace")
    with pytest.raises(FileExistsError):
        spawn_task(os.getpid, set_tid=[os.getpid()])


@pytest.mark.parametrize("tid", [0, -1, "pid_max"])
def test_set_tid_out_of_range_gives_einval(healthy: Health, tid: int | str) -> None:
    if tid == "pid_max":
        with open("/proc/sys/kernel/pid_max") as f:
            tid = int(f.read())
    assert isinstance(tid, int)
    with pytest.raises(OSError) as info:
        spawn_task(os.getpid, set_tid=[tid])
    assert info.value.errno == errno.EINVAL


def test_set_tid_nested_levels(healthy: Health) -> None:
    """With NEWPID, set_tid names the pid in each namespace, innermost first."""
    require_root()
    task, pid = _spawn_at_free_pid(lambda pid: spawn_task(os.getpid, new="pid", set_tid=[1, pid]))
    with task:
        assert task.pid == pid and task.result(WAIT) == 1
    with pytest.raises(OSError) as info:  # no init yet in the new namespace
        spawn_task(os.getpid, new="pid", set_tid=[2, _free_pid()])
    assert info.value.errno == errno.EINVAL


def _set_tid_unprivileged(pid: int) -> dict[str, object]:
    become_nobody()
    out: dict[str, object] = {}
    for name, kwargs in {
        "plain": {"set_tid": [pid]},
        "innermost": {"new": {"user", "pid"}, "set_tid": [1]},
        "outer": {"new": {"user", "pid"}, "set_tid": [1, pid]},
    }.items():
        try:
            with spawn_task(os.getpid, **kwargs) as task:  # type: ignore[arg-type]
                out[name] = ("ok", task.result(WAIT))
        except OSError as exc:
            out[name] = ("errno", exc.errno)
    return out


def test_set_tid_unprivileged(healthy: Health) -> None:
    require_root("needs root to drop to uid 65534 in a forked child")
    out = run_forked(lambda: _set_tid_unprivileged(_free_pid()))
    assert isinstance(out, dict)
    assert out["plain"] == ("errno", errno.EPERM)
    assert out["innermost"] == ("ok", 1)  # the new user namespace owns the new pid namespace
    assert out["outer"] == ("errno", errno.EPERM)
