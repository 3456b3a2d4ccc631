"""spawn_task() and Task against the real kernel (fork-like tasks)."""

from __future__ import annotations

import ast
import asyncio
import errno
import gc
import os
import signal
import socket
import sys
import time
import warnings

import pytest

import pyclone
from pyclone import ChildError, CloneFlag, Task, TimeoutExpired, spawn_task
from pyclone.task import _spawn

from conftest import WAIT, Health, become_nobody, reap, require_root, run_forked


def double(x: int) -> int:
    return 2 * x


def boom() -> None:
    raise KeyError("lost")


class Unpicklable(Exception):
    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("no pickling")


def raise_unpicklable() -> None:
    raise Unpicklable("odd")


def test_result_round_trip(healthy: Health) -> None:
    with spawn_task(double, (21,)) as task:
        assert task.result(WAIT) == 42
        assert task.returncode == 0
    assert task.pidfd is None  # closed by the context manager


@pytest.mark.parametrize("share", ["process", "files"])
def test_none_result_and_exit_status(healthy: Health, share: str) -> None:
    # None travels as a prebuilt frame; "files" keeps the child's end open here
    with spawn_task(print, ("",), share=share) as task:
        assert task.result(WAIT) is None
        assert task.returncode == 0
    with spawn_task(os._exit, (5,), share=share) as task:
        with pytest.raises(ChildError, match="without returning a result"):
            task.result(WAIT)
        assert task.returncode == 5


def test_result_kwargs_and_large_values(healthy: Health) -> None:
    with spawn_task(dict, kwargs={"a": 1, "b": b"x" * 3_000_000}) as task:
        value = task.result(WAIT)
    assert value["a"] == 1 and len(value["b"]) == 3_000_000


def test_exception_is_reraised_with_remote_traceback(
    healthy: Health, capfd: pytest.CaptureFixture[str]
) -> None:
    with spawn_task(boom) as task:
        with pytest.raises(ChildError) as info:
            task.result(WAIT)
    error = info.value
    assert isinstance(error.exception, KeyError)
    assert error.__cause__ is error.exception
    assert error.returncode == 1
    assert error.remote_traceback is not None and "in boom" in error.remote_traceback
    assert "KeyError: 'lost'" in str(error)


def test_unpicklable_exception_still_reports(
    healthy: Health, capfd: pytest.CaptureFixture[str]
) -> None:
    with spawn_task(raise_unpicklable) as task:
        with pytest.raises(ChildError, match="Unpicklable: odd") as info:
            task.result(WAIT)
    assert info.value.exception is None
    assert "raise_unpicklable" in (info.value.remote_traceback or "")


def test_unpicklable_result(healthy: Health, capfd: pytest.CaptureFixture[str]) -> None:
    with spawn_task(lambda: lambda: 0) as task:
        with pytest.raises(ChildError, match="unpicklable result"):
            task.result(WAIT)
    assert task.returncode == 1


@pytest.mark.parametrize(
    ("target", "code"),
    [(lambda: sys.exit(3), 3), (lambda: os._exit(4), 4), (lambda: None, 0)],
)
def test_exit_codes(healthy: Health, target: object, code: int) -> None:
    with spawn_task(target) as task:  # type: ignore[arg-type]
        assert task.wait(WAIT) == code


def test_result_without_a_result(healthy: Health) -> None:
    with spawn_task(lambda: sys.exit(3)) as task:
        with pytest.raises(ChildError, match="exited with status 3 without returning"):
            task.result(WAIT)


def test_wait_timeout_then_kill(healthy: Health) -> None:
    task = spawn_task(time.sleep, (60,))
    with pytest.raises(TimeoutExpired) as info:
        task.wait(0.1)
    assert info.value.pid == task.pid
    assert isinstance(info.value, pyclone.TimeoutExpired)
    assert task.poll() is None
    task.kill()
    assert task.wait(WAIT) == -signal.SIGKILL
    with pytest.raises(ChildError, match="killed by SIGKILL"):
        task.result(WAIT)
    task.close()


def test_terminate_and_send_signal(healthy: Health) -> None:
    with spawn_task(time.sleep, (60,)) as task:
        task.terminate()
        assert task.wait(WAIT) == -signal.SIGTERM
        task.send_signal(signal.SIGKILL)  # reaped: does nothing


def test_context_manager_kills_on_error(healthy: Health) -> None:
    with pytest.raises(RuntimeError):
        with spawn_task(time.sleep, (60,)) as task:
            raise RuntimeError("oops")
    assert task.returncode == -signal.SIGKILL


def test_task_attributes_and_repr(healthy: Health) -> None:
    with spawn_task(lambda: 0, share={"fs"}) as task:
        assert task.tgid == task.pid != os.getpid()
        assert task.flags == CloneFlag.FS
        assert isinstance(task.pidfd, int)
        assert f"pid={task.pid}" in repr(task) and "CLONE_FS" in repr(task)
        assert "running" in repr(task) or "returncode" in repr(task)
        task.wait(WAIT)
        assert repr(task).endswith("returncode=0>")


def test_namespaces_through_spawn_task(healthy: Health) -> None:
    require_root()
    hostname = socket.gethostname()

    def inside() -> tuple[int, str]:
        socket.sethostname("inside")
        return os.getpid(), socket.gethostname()

    with spawn_task(inside, new={"pid", "uts"}) as task:
        assert task.result(WAIT) == (1, "inside")
    assert socket.gethostname() == hostname


def test_exit_signal_zero_and_other(healthy: Health) -> None:
    with spawn_task(lambda: 5, exit_signal=0) as task:
        assert task.result(WAIT) == 5
    got = []
    old = signal.signal(signal.SIGUSR2, lambda *_: got.append(1))
    try:
        with spawn_task(lambda: 0, exit_signal=signal.SIGUSR2) as task:
            assert task.wait(WAIT) == 0
        deadline = time.monotonic() + WAIT
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [1]
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_clone_files_task_keeps_result_channel(healthy: Health) -> None:
    with spawn_task(lambda: "shared table", share="files") as task:
        assert task.result(WAIT) == "shared table"


def test_unwaited_task_warns_and_is_reaped_later(healthy: Health) -> None:
    task = spawn_task(time.sleep, (0.2,))
    pid = task.pid
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del task
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    time.sleep(0.3)
    with spawn_task(lambda: 0) as other:  # a later spawn reaps the abandoned task
        other.wait(WAIT)
    assert not os.path.exists(f"/proc/{pid}") or "Z" not in open(f"/proc/{pid}/stat").read()


def test_close_before_wait_is_an_error(healthy: Health) -> None:
    task = spawn_task(time.sleep, (60,))
    with pytest.raises(ValueError, match="still running"):
        task.close()
    task.kill()
    task.wait(WAIT)
    task.close()


def test_bad_arguments(healthy: Health) -> None:
    with pytest.raises(TypeError, match="callable"):
        spawn_task(3)  # type: ignore[arg-type]
    for args in (7, "ab", b"ab"):  # a str would pass as its characters
        with pytest.raises(TypeError, match=r"^args must be a tuple"):
            spawn_task(os._exit, args)
    with pytest.raises(ValueError, match="valid names"):
        spawn_task(lambda: 0, share={"memory"})
    with pytest.raises(ValueError, match="valid names"):
        spawn_task(lambda: 0, new={"pids"})
    with pytest.raises(ValueError, match="exit_signal"):
        spawn_task(lambda: 0, exit_signal=99)
    with pytest.raises(ValueError, match="timeout"):
        with spawn_task(lambda: 0) as task:
            task.wait(-1)


def test_kernel_rejection_leaks_nothing(healthy: Health) -> None:
    with pytest.raises(OSError, match="CLONE_FS"):
        spawn_task(lambda: 0, share={"fs"}, new={"mnt"})


def test_refusal_leaks_nothing(healthy: Health) -> None:
    with pytest.raises(pyclone.UnsupportedFlags):
        spawn_task(lambda: 0, flags=CloneFlag.SETTLS)


def test_before_start_runs_before_the_target(healthy: Health) -> None:
    require_root()

    def write_map(task: Task) -> None:
        with open(f"/proc/{task.pid}/uid_map", "w") as f:
            f.write(f"0 {os.getuid()} 1\n")

    task = _spawn(os.getuid, (), None, CloneFlag.NEWUSER, before_start=write_map)
    with task:
        assert task.result(WAIT) == 0


def test_before_start_failure_kills_and_reaps(healthy: Health) -> None:
    def refuse(task: Task) -> None:
        raise LookupError("cannot prepare")

    with pytest.raises(LookupError):
        _spawn(time.sleep, (60,), None, CloneFlag(0), before_start=refuse)


# -- clone3: pidfds everywhere, CLONE_PARENT, asyncio, set_tid, time namespaces ----------


@pytest.mark.parametrize(
    ("share", "new", "exit_signal"),
    [
        ("process", None, signal.SIGCHLD),
        ({"fs"}, None, signal.SIGCHLD),
        ({"files"}, None, 0),
        ({"sysvsem", "io"}, None, signal.SIGCHLD),
        ("process", {"pid", "net"}, signal.SIGCHLD),
        ("vfork", None, signal.SIGCHLD),
    ],
)
def test_every_task_holds_a_pidfd(
    healthy: Health, share: str | set[str], new: set[str] | None, exit_signal: int
) -> None:
    if new:
        require_root()
    try:
        task = spawn_task(os.getpid, share=share, new=new, exit_signal=exit_signal)
    except pyclone.UnsupportedFlags as exc:  # a CLONE_VM child this interpreter cannot run
        pytest.skip(str(exc))
    with task:
        assert task.pidfd is not None
        with open(f"/proc/self/fdinfo/{task.pidfd}") as f:
            assert f"Pid:\t{task.pid}\n" in f.read()
        task.result(WAIT)
        assert task.ended


def test_exit_signal_is_delivered_to_the_parent(healthy: Health) -> None:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        # blocked and collected here: the caller opts in to a fatal-by-default signal
        with spawn_task(
            lambda: 0, exit_signal=signal.SIGUSR2, allow_fatal_exit_signal=True
        ) as task:
            assert task.wait(WAIT) == 0  # waitid(P_PIDFD, __WALL)
            got = signal.sigtimedwait([signal.SIGUSR2], WAIT)
            assert got is not None and got.si_pid == task.pid
            assert got.si_code == os.CLD_EXITED
    finally:
        while signal.sigtimedwait([signal.SIGUSR2], 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _parent_task(go: int) -> None:
    os.read(go, 1)
    sys.exit(7)


def _in_intermediate(to_test: int) -> dict[str, object]:
    """Runs in a forked child of the test: its CLONE_PARENT tasks become the test's children."""
    go_r, go_w = os.pipe()
    out: dict[str, object] = {}
    task = spawn_task(_parent_task, (go_r,), share={"parent"})
    late = spawn_task(_parent_task, (go_r,), share={"parent"})
    out["exit_signal"] = task.exit_signal
    with open(f"/proc/{task.pid}/status") as f:
        out["ppid"] = int(next(line for line in f if line.startswith("PPid:")).split()[1])
    os.write(to_test, f"{task.pid} {late.pid}\n".encode())
    os.write(go_w, b"xx")
    out["code"] = task.wait(WAIT)
    out["ended"] = task.ended
    out["repr"] = repr(task)
    task.close()
    out["async_code"] = asyncio.run(asyncio.wait_for(late.wait_async(), WAIT))
    late.close()
    return out


def test_clone_parent_task_is_waited_through_its_pidfd(healthy: Health) -> None:
    """The test is the task's parent and reaps it; its creator reads the status from the pidfd."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the intermediate
        os.close(r)
        code = 1
        try:
            out = _in_intermediate(w)
            os.write(w, (repr(out) + "\n").encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as reader:
        children = [int(p) for p in reader.readline().split()]
        assert len(children) == 2
        statuses = [reap(child) for child in children]  # the test is their parent
        out = ast.literal_eval(reader.readline())  # repr() of a dict of plain values
    assert os.waitstatus_to_exitcode(reap(pid)) == 0
    assert [os.waitstatus_to_exitcode(s) for s in statuses] == [7, 7]
    assert out["ppid"] == os.getpid()
    assert out["exit_signal"] == 0  # the kernel requires 0 with CLONE_PARENT
    assert out["ended"] is True
    if _kernel_keeps_exit_status():
        assert out["code"] == 7 and out["async_code"] == 7
        assert "returncode=7" in str(out["repr"])
    else:  # documented: unknown without PIDFD_INFO_EXIT
        assert out["code"] is None and "status unknown" in str(out["repr"])


def _kernel_keeps_exit_status() -> bool:
    """Does PIDFD_GET_INFO give a reaped child's status (Linux 6.15+)?  Asks the kernel."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(3)
    fd = os.pidfd_open(pid)
    try:
        reap(pid)
        return pyclone.pidfd_exit_status(fd) == 3
    finally:
        os.close(fd)


def _wait_go(go: int, index: int) -> int:
    os.read(go, 1)
    return index


def test_200_tasks_awaited_concurrently(healthy: Health) -> None:
    go_r, go_w = os.pipe()
    tasks: list[Task] = []
    try:
        for i in range(200):
            tasks.append(spawn_task(_wait_go, (go_r, i)))

        async def main() -> list[int | None]:
            waits = asyncio.gather(*(t.wait_async() for t in tasks))
            await asyncio.sleep(0)
            assert not any(t.ended for t in tasks)  # all still blocked on the pipe
            os.write(go_w, b"x" * 200)
            return await asyncio.wait_for(waits, WAIT)

        start = time.perf_counter()
        codes = asyncio.run(main())
        elapsed = time.perf_counter() - start
        print(f"200 concurrent wait_async: {elapsed * 1000:.1f} ms")
        assert codes == [0] * 200
        assert [t.result(0) for t in tasks] == list(range(200))
    finally:
        for t in tasks:
            if not t.ended:
                t.kill()
                t.wait(WAIT)
            t.close()
        os.close(go_r)
        os.close(go_w)


def test_wait_async_reads_large_results_and_async_with(healthy: Health) -> None:
    async def main() -> bytes:
        async with spawn_task(bytes, (3_000_000,)) as task:
            assert await task.wait_async() == 0
            return task.result(0)  # type: ignore[no-any-return]

    assert len(asyncio.run(main())) == 3_000_000


def test_async_with_kills_on_error(healthy: Health) -> None:
    async def main() -> Task:
        task = spawn_task(time.sleep, (60,))
        with pytest.raises(KeyError):
            async with task:
                raise KeyError("stop")
        return task

    task = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert task.returncode == -signal.SIGKILL and task.pidfd is None


def test_wait_async_cancelled_leaves_the_task_running(healthy: Health) -> None:
    r, w = os.pipe()

    async def main() -> int | None:
        with spawn_task(_other_end, (r,)) as task:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(task.wait_async(), 0.05)
            assert not task.ended and task.poll() is None
            os.write(w, b"x")
            return await asyncio.wait_for(task.wait_async(), WAIT)

    try:
        assert asyncio.run(main()) == 0
    finally:
        os.close(r)
        os.close(w)


def _other_end(r: int) -> None:
    os.read(r, 1)


def _clocks() -> tuple[float, float]:
    return time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME)


def test_time_namespace_offsets(healthy: Health) -> None:
    require_root()
    before = _clocks()
    offsets = {"monotonic": 86400, "boottime": 3600.5}
    with spawn_task(_clocks, new="time", time_offsets=offsets) as task:
        inside = task.result(WAIT)
    after = _clocks()
    assert before[0] + 86400 <= inside[0] <= after[0] + 86400
    assert before[1] + 3600.5 <= inside[1] <= after[1] + 3600.5
    unshifted = spawn_task(_clocks, new="time")
    with unshifted:
        plain = unshifted.result(WAIT)
    assert plain[0] <= _clocks()[0]


def _time_unprivileged() -> float:
    become_nobody()
    before = time.monotonic()
    with spawn_task(time.monotonic, new={"user", "time"}, time_offsets={"monotonic": 1000}) as t:
        return float(t.result(WAIT)) - before


def test_time_namespace_offsets_unprivileged(healthy: Health) -> None:
    require_root("needs root to drop to uid 65534 in a forked child")
    shift = run_forked(_time_unprivileged)
    assert isinstance(shift, float) and shift >= 1000


def test_time_offsets_errors(healthy: Health) -> None:
    with pytest.raises(ValueError, match="new="):
        spawn_task(os.getpid, time_offsets={"monotonic": 1})
    with pytest.raises(ValueError, match="unknown clock"):
        spawn_task(os.getpid, new="time", time_offsets={"realtime": 1})
    with pytest.raises(TypeError, match="seconds"):
        spawn_task(os.getpid, new="time", time_offsets={"monotonic": "1"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="mapping"):
        spawn_task(os.getpid, new="time", time_offsets=[("monotonic", 1)])  # type: ignore[arg-type]
    # finite, and within the kernel's +-KTIME_SEC_MAX seconds (its parser would wrap)
    ktime_sec_max = ((1 << 63) - 1) // 10**9
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError, match=r"time_offsets\['monotonic'\] must be a finite"):
            spawn_task(os.getpid, new="time", time_offsets={"monotonic": bad})
    for bad in (1 << 70, (1 << 64) + 3600, ktime_sec_max + 1, -(1 << 40), 1e300):
        with pytest.raises(ValueError, match=r"time_offsets\['boottime'\].*out of range"):
            spawn_task(os.getpid, new="time", time_offsets={"boottime": bad})
    require_root()
    with pytest.raises(OSError) as info:  # the kernel refuses a clock that would be negative
        spawn_task(os.getpid, new="time", time_offsets={"monotonic": -(1 << 32)})
    assert info.value.errno in (errno.ERANGE, errno.EINVAL)


def test_cgroup_argument_errors(healthy: Health) -> None:
    with pytest.raises(TypeError, match="Cgroup"):
        spawn_task(os.getpid, cgroup="/sys/fs/cgroup")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not created"):
        spawn_task(os.getpid, cgroup=pyclone.Cgroup())
