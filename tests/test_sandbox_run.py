"""Launching and waiting: cgroup limits on the sandbox, run()'s timeout and capture, on_start."""

from __future__ import annotations

import errno
import os
import signal

import pytest

import pyclone
from pyclone import Sandbox, Task

from conftest import WAIT, Health, require_root


def _fork_bomb() -> tuple[int, int | None]:
    """Fork until the kernel refuses; return (children made, errno of the refusal)."""
    r, w = os.pipe()
    made, refused = 0, None
    for _ in range(64):
        try:
            pid = os.fork()
        except OSError as exc:
            refused = exc.errno
            break
        if pid == 0:  # pragma: no cover - child: wait until the bomb is over
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        made += 1
    os.close(w)
    for _ in range(made):
        os.wait()
    return made, refused


def _allocate() -> int:
    return len(b"x" * (512 << 20))  # touches every page


def _require_cgroup() -> None:
    try:
        import pyclone.cgroup  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pytest.skip("pyclone.cgroup (pyclone.Cgroup, the clone3 work) is not in this build")


def test_fork_bomb_stops_at_pids_max() -> None:
    _require_cgroup()
    require_root()
    with Sandbox(new={"user", "pid"}, pids_max=8).spawn(_fork_bomb) as task:
        made, refused = task.result(WAIT)
    assert refused == errno.EAGAIN
    assert made <= 6  # 8 tasks: the init, the target and at most 6 children


def test_allocation_beyond_memory_max_kills_only_the_sandbox() -> None:
    _require_cgroup()
    require_root()
    with Sandbox(new={"user", "pid"}, memory_max=64 << 20).spawn(_allocate) as task:
        code = task.wait(WAIT)
    # the OOM killer took the allocating target; its init survived to report it
    assert code == 128 + signal.SIGKILL


def test_run_timeout_kills_and_reaps_the_sandbox(healthy: Health) -> None:
    sb = Sandbox(new={"user", "pid"})
    with pytest.raises(pyclone.TimeoutExpired):
        sb.run(["sleep", "60"], timeout=0.2, capture_output=True)
    with pytest.raises(pyclone.TimeoutExpired):
        sb.run(["sleep", "60"], timeout=0.2)
    done = sb.run(
        ["sh", "-c", "echo out; echo err >&2; kill -9 $$"], capture_output=True, timeout=WAIT
    )
    assert (done.stdout, done.stderr, done.returncode) == (b"out\n", b"err\n", 128 + signal.SIGKILL)


def test_on_start_sees_the_child_before_its_setup() -> None:
    require_root()
    seen: list[tuple[int, str]] = []

    def started(task: Task) -> None:
        seen.append((task.pid, os.readlink(f"/proc/{task.pid}/ns/uts")))

    done = Sandbox(new={"mnt", "uts"}).run(
        ["readlink", "/proc/self/ns/uts"], capture_output=True, on_start=started
    )
    assert done.returncode == 0
    ((pid, uts),) = seen
    assert pid > 0 and done.stdout.decode().strip() == uts


def test_on_start_raising_kills_and_reaps_the_child() -> None:
    require_root()
    pids: list[int] = []

    def refuse(task: Task) -> None:
        pids.append(task.pid)
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        Sandbox(new={"mnt"}).run(["sleep", "1000"], on_start=refuse)
    assert _ended(pids[0])


def _ended(pid: int) -> bool:
    """Has ``pid`` been reaped (or is it a zombie its new parent has yet to reap)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_args_that_are_not_a_sequence_of_arguments_are_refused(healthy: Health) -> None:
    for args in (7, "ab"):
        with pytest.raises(TypeError, match=r"^args must be a tuple"):
            Sandbox(new={"user"}).spawn(os._exit, args)
