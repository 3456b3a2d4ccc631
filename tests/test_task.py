"""spawn_task() and Task against the real kernel (fork-like tasks)."""

from __future__ import annotations

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

from conftest import WAIT, Health, require_root


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
    with pytest.raises(RuntimeError, match="still running"):
        task.close()
    task.kill()
    task.wait(WAIT)
    task.close()


def test_bad_arguments(healthy: Health) -> None:
    with pytest.raises(TypeError, match="callable"):
        spawn_task(3)  # type: ignore[arg-type]
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
