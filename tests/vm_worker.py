"""A worker process for the risky borrowed-interpreter cases (see test_borrowed.py).

The tests run every case that could crash or hang an interpreter in this
worker, not in pytest: a bug then fails the test instead of killing the run.
Protocol: one JSON object per line on stdin (a case), one JSON object per
line on stdout (its outcome, after a parent-health check).  Two busy Python
threads run in the worker throughout, as the research asks.

The process forks once at start: the outer process only reaps (children
created with CLONE_PARENT become its children, not pytest's) and exits with
the inner one's status.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyclone
from pyclone import _pyclone

from conftest import Health, check_health

WAIT = 20.0
SH = "/bin/sh"

#: What each behaviour should end with in the child: (exit status, abandons a thread state).
EXPECTED: dict[str, tuple[int, bool]] = {
    "return": (0, False),
    "raise": (1, False),
    "sysexit": (5, False),
    "child_exit": (6, False),
    "child_exec": (7, False),
    "os_exit": (8, True),
    "os_execv": (9, True),
    "sigkill": (-9, True),
    "recursion": (1, False),
}

_shared: list[Any] = []


def behave(name: str) -> Any:
    """The child's body for one behaviour."""
    if name == "return":
        value = object()
        _shared.append(value)  # a CLONE_VM child writes the caller's list
        return value
    if name == "raise":
        raise ValueError("raised in the child")
    if name == "sysexit":
        sys.exit(5)
    if name == "child_exit":
        try:
            pyclone.child_exit(6)
        finally:
            _shared.append("unwound")
    if name == "child_exec":
        pyclone.child_exec(SH, ["sh", "-c", "exit 7"])
    if name == "os_exit":
        os._exit(8)
    if name == "os_execv":
        os.execv(SH, ["sh", "-c", "exit 9"])
    if name == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
        return 11  # init of a new pid namespace ignores it
    if name == "recursion":

        def down(n: int) -> int:
            return down(n + 1) + 1

        return down(0)
    raise AssertionError(name)


def wait_pid(pid: int) -> int:
    """Reap a task made by clone()/clone3() within WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        got, status = os.waitpid(pid, os.WNOHANG | _pyclone.WALL)
        if got == pid:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, _pyclone.WALL)
            raise TimeoutError(f"task {pid} did not end")
        time.sleep(0.001)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Create one task as the case says; classify how it ended."""
    behaviour, api, flags = case["behaviour"], case["api"], case["flags"]
    exit_signal = case.get("exit_signal", signal.SIGCHLD)
    stack = case.get("stack", 0)
    if flags & pyclone.CLONE_PARENT:
        api = "spawn"  # not our child: only a Task (pidfd) can wait for it
    _shared.clear()
    abandoned = pyclone.abandoned_thread_states()
    result: dict[str, Any] = {}
    try:
        if api == "spawn":
            task = pyclone.spawn_task(behave, (behaviour,), flags=flags, exit_signal=exit_signal)
            code = task.wait(WAIT)
            try:
                value = task.result(WAIT)
                result["result"] = "ok"
                if flags & pyclone.CLONE_VM and behaviour == "return":
                    result["identical"] = bool(_shared) and value is _shared[0]
            except pyclone.ChildError as exc:
                result["result"] = type(exc.exception).__name__ if exc.exception else "none"
            task.close()
        elif api == "clone":
            pid = pyclone.clone(lambda: behave(behaviour) and 0, flags | exit_signal, stack)
            code = wait_pid(pid)
        else:
            pid, pidfd = pyclone.clone3(
                lambda: behave(behaviour) and 0,
                flags,
                exit_signal=exit_signal,
                pidfd=True,
                stack_size=stack,
            )
            code = wait_pid(pid)
            if pidfd is not None:
                os.close(pidfd)
    except (ValueError, RuntimeError) as exc:  # UnsupportedFlags is a ValueError
        result.update(kind="refused", error=f"{type(exc).__name__}: {exc}")
        return result
    except OSError as exc:
        result.update(kind="oserror", errno=exc.errno, error=str(exc))
        return result
    result.update(
        kind="ran",
        code=code,
        abandoned=pyclone.abandoned_thread_states() - abandoned,
        unwound=_shared == ["unwound"],
    )
    return result


def main() -> int:
    """Serve cases from stdin until end of file."""
    warnings.simplefilter("ignore", ResourceWarning)
    stop = threading.Event()
    running = threading.Event()  # cleared while the health check runs, to keep it quick
    running.set()

    def busy() -> None:
        n = 0
        while not stop.is_set():
            running.wait()
            n += sum(i * i for i in range(200))
            str(n)

    threads = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    before = Health.take()
    for line in sys.stdin:
        case = json.loads(line)
        try:
            outcome = run_case(case)
            running.clear()
            check_health(before)
            outcome["healthy"] = True
        except BaseException:
            outcome = {"kind": "failed", "healthy": False, "error": traceback.format_exc()}
        finally:
            running.set()
        outcome["id"] = case.get("id")
        sys.stdout.write(json.dumps(outcome) + "\n")
        sys.stdout.flush()
    stop.set()
    running.set()
    for t in threads:
        t.join(WAIT)
    return 0


def reaper() -> int:
    """Fork: the parent reaps everything (CLONE_PARENT tasks land here), the child serves."""
    pid = os.fork()
    if pid == 0:
        os._exit(main())
    while True:
        try:
            got, status = os.waitpid(-1, _pyclone.WALL)
        except ChildProcessError:
            return 1
        if got == pid:
            return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(reaper())
