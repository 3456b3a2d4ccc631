"""Signals and the borrowed interpreter: a share="vfork" child never runs the caller's handlers.

The child borrows the calling thread's identity (pthread_self), and the
interpreter's "signal tripped" flags are memory it shares with the caller.
Every signal meant for the caller must reach the caller's handler, in the
caller's main thread, after the child: counted here with the pid and the
native thread id of where each handler call ran.
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from pyclone import CLONE_VFORK, CLONE_VM, _pyclone, child_exec
from pyclone._reaper import _active, _cleanup
from pyclone.borrowed import vm_supported
from pyclone.task import spawn_task

from conftest import WAIT, _zombies, run_forked

pytestmark = pytest.mark.skipif(
    not vm_supported(), reason="this interpreter cannot run Python in CLONE_VM children"
)

N = 30


def _work() -> int:
    """Enough bytecode for an eval loop to look at its pending signals many times."""
    total = 0
    for i in range(100_000):
        total += i
    return total


@pytest.fixture
def calls() -> Iterator[list[tuple[int, int]]]:
    """(pid, native thread id) of every SIGUSR1 handler call, with a spare thread running.

    The spare thread has signals unblocked while the caller's thread blocks them
    during a child: the kernel hands a process-directed signal to it, CPython's C
    handler then trips the shared flags, and an eval loop that believes it is the
    main thread's would run the Python handler.
    """
    seen: list[tuple[int, int]] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        seen.append((os.getpid(), threading.get_native_id()))

    old = signal.signal(signal.SIGUSR1, handler)
    stop = threading.Event()
    spare = threading.Thread(target=stop.wait, args=(WAIT,))
    spare.start()
    try:
        yield seen
    finally:
        stop.set()
        spare.join(WAIT)
        signal.signal(signal.SIGUSR1, old)


def _wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.001)


def _run_tasks(calls: list[tuple[int, int]], child: Callable[[], int]) -> None:
    """N vfork tasks, each sending one signal: all N reach the caller, none fails."""
    for i in range(N):
        assert spawn_task(child, share="vfork").result(timeout=WAIT) == _work()
        # one at a time: a standard signal pending twice is delivered once
        handled = i + 1
        _wait_for(lambda: len(calls) >= handled)  # noqa: B023 (called before the next loop)
    me = (os.getpid(), threading.get_native_id())
    assert calls == [me] * N


def test_kernel_signal_from_the_child_reaches_the_caller(calls: list[tuple[int, int]]) -> None:
    """kill(caller) from the child process: pending in the kernel, handled by the caller."""
    caller = os.getpid()

    def child() -> int:
        os.kill(caller, signal.SIGUSR1)
        return _work()

    _run_tasks(calls, child)


def test_tripped_flag_is_left_to_the_caller(calls: list[tuple[int, int]]) -> None:
    """A signal already tripped in the shared flags (as when one arrives just before the clone)."""

    def child() -> int:
        _thread.interrupt_main(signal.SIGUSR1)  # trips the flag, as CPython's C handler does
        return _work()

    _run_tasks(calls, child)


def test_signals_from_another_process_during_tasks(calls: list[tuple[int, int]]) -> None:
    """A stream of signals from a separate process while tasks run: no handler runs in a child."""
    sender = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal, sys, time\n"
            "for _ in range(300):\n"
            "    os.kill(int(sys.argv[1]), signal.SIGUSR1)\n"
            "    time.sleep(0.002)\n",
            str(os.getpid()),
        ]
    )
    tasks = 0
    try:
        while sender.poll() is None:
            assert spawn_task(_work, share="vfork").result(timeout=WAIT) == _work()
            tasks += 1
    finally:
        sender.wait(WAIT)
    _wait_for(lambda: len(calls) > 0)
    me = (os.getpid(), threading.get_native_id())
    assert tasks > 0 and calls
    assert set(calls) == {me}


def test_child_cannot_install_handlers() -> None:
    """The child is not the main thread: signal.signal() refuses, the caller's table is intact."""
    before = signal.getsignal(signal.SIGUSR2)

    def child() -> str:
        try:
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        except ValueError as exc:
            return str(exc)
        return "installed"

    assert "main thread" in spawn_task(child, share="vfork").result(timeout=WAIT)
    assert signal.getsignal(signal.SIGUSR2) is before


def test_caller_is_the_main_thread_again_after_the_child() -> None:
    """Afterwards the caller handles signals and installs handlers as before."""
    spawn_task(_work, share="vfork").result(timeout=WAIT)
    hits: list[int] = []
    old = signal.signal(signal.SIGUSR2, lambda signum, frame: hits.append(signum))
    try:
        signal.raise_signal(signal.SIGUSR2)
        _wait_for(lambda: bool(hits))
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert hits == [signal.SIGUSR2]


# -- the launch holds signals; the exec gets the mask from before ---------------


class _Boom(Exception):
    """What the SIGUSR2 handler raises."""


def _interrupted_as_the_clone_returns() -> tuple[int, int, int, int]:
    """Each child sends the caller a signal whose handler raises: it is due as the clone returns.

    The signal waits, blocked, while the child runs; it can be handled no
    earlier than when the launch releases the signals, once the task owns
    its pid and pidfd.  Returns (interrupts, leaked fds, zombies, deferred).
    """
    caller = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Boom

    def child() -> int:
        os.kill(caller, signal.SIGUSR2)
        return 7

    before = set(os.listdir("/proc/self/fd"))
    old = signal.signal(signal.SIGUSR2, handler)
    caught = 0
    try:
        for _ in range(50):
            try:
                spawn_task(child, share="vfork")
            except _Boom:
                caught += 1
    finally:
        signal.signal(signal.SIGUSR2, old)
    deadline = time.monotonic() + WAIT
    while _active and time.monotonic() < deadline:
        _cleanup()
        time.sleep(0.001)
    leaked = len(set(os.listdir("/proc/self/fd")) - before)
    return caught, leaked, len(_zombies()), len(_active)


def test_handler_raising_as_the_clone_returns_loses_nothing() -> None:
    """The interrupt surfaces from spawn_task; the task is reaped later; no fd or zombie stays."""
    outcome = run_forked(_interrupted_as_the_clone_returns)
    assert outcome == (50, 0, 0, 0)


def _sig_line(path: str, key: str) -> int:
    with open(path) as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1], 16) & ~((1 << 31) | (1 << 32))  # glibc's own 32 and 33


def test_exec_starts_with_the_callers_mask_not_the_held_one(tmp_path: Path) -> None:
    """A caller blocking SIGWINCH: the program child_exec starts has exactly that mask."""
    out = tmp_path / "status"

    def child() -> None:
        child_exec("/bin/sh", ["sh", "-c", f"exec cat /proc/self/status > {out}"])

    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
    try:
        with spawn_task(child, share="vfork") as task:
            assert task.wait(WAIT) == 0
        mine = _sig_line("/proc/self/status", "SigBlk")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    assert mine & (1 << (signal.SIGWINCH - 1))
    assert _sig_line(str(out), "SigBlk") == mine


@pytest.mark.parametrize("api", ["clone", "clone3"])
def test_exec_mask_is_what_the_exec_installs(tmp_path: Path, api: str) -> None:
    """The C layer's exec_mask= replaces the mask of the call for the child's exec."""
    out = tmp_path / "status"

    def child() -> None:
        child_exec("/bin/sh", ["sh", "-c", f"exec cat /proc/self/status > {out}"])

    wanted = {signal.SIGUSR1, signal.SIGTERM, signal.SIGRTMIN + 1}
    flags = CLONE_VM | CLONE_VFORK
    if api == "clone":
        pid = _pyclone.clone(child, flags | signal.SIGCHLD, exec_mask=wanted)
    else:
        pid, _ = _pyclone.clone3(child, flags, exec_mask=wanted)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert _sig_line(str(out), "SigBlk") == sum(1 << (sig - 1) for sig in wanted)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (0, TypeError, "exec_mask must be an iterable of signal numbers"),
        (["1"], TypeError, "cannot be interpreted as an integer"),
        ([0], ValueError, "exec_mask: 0 is not a signal number"),
        ([65], ValueError, "exec_mask: 65 is not a signal number"),
    ],
)
def test_exec_mask_is_checked(bad: object, error: type[Exception], message: str) -> None:
    """Checked before anything is created (the function would be a child's)."""
    with pytest.raises(error, match=message):
        _pyclone.clone3(int, CLONE_VM | CLONE_VFORK, exec_mask=bad)  # type: ignore[arg-type]
