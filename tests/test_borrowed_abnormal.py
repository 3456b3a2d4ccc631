"""CLONE_VM children that end abnormally: os._exit, os.execv, SIGKILL, random flag sets.

Each case abandons a thread state or could hang, so it runs in a worker
process (tests/vm_worker.py) or a fresh interpreter, with a timeout: a bug
fails the test instead of the run.  The cases that end normally are in
tests/test_borrowed.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyclone import (
    CLONE_FILES,
    CLONE_FS,
    CLONE_IO,
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    CLONE_PARENT,
    CLONE_PTRACE,
    CLONE_SETTLS,
    CLONE_SIGHAND,
    CLONE_SYSVSEM,
    CLONE_THREAD,
    CLONE_UNTRACED,
    CLONE_VFORK,
    CLONE_VM,
)
from pyclone.borrowed import vm_supported

from conftest import WAIT
from vm_worker import EXPECTED  # the behaviours and what each should end with

VMV = CLONE_VM | CLONE_VFORK
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _needs_vm() -> None:
    if not vm_supported():
        pytest.skip(
            "this interpreter cannot run Python in CLONE_VM children (free-threaded or "
            "not 3.10-3.13); test_borrowed.py checks the refusal"
        )


# -- helpers -----------------------------------------------------------------


def run_python(
    code: str, *args: str, timeout: float = 60.0, dev: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter with this tree on the path (risky cases)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    options = ["-X", "dev"] if dev else []
    return subprocess.run(
        [sys.executable, *options, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


class Worker:
    """tests/vm_worker.py: runs one case per request, replies after a health check."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "vm_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.sent = 0

    def run(self, case: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.sent += 1
        try:
            self.proc.stdin.write(json.dumps(dict(case, id=self.sent)) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pytest.fail(f"worker died before {case}: {self.stop()}")
        ready, _, _ = select.select([self.proc.stdout], [], [], 2 * WAIT)
        if not ready:
            pytest.fail(f"worker hung on {case}: {self.stop()}")
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"worker died on {case}: {self.stop()}")
        outcome: dict[str, Any] = json.loads(line)
        # an interrupted earlier run() (a timeout) would shift every later answer
        assert outcome.pop("id") == self.sent, "worker answers out of step"
        return outcome

    def stop(self) -> str:
        """End the worker; return what it said on stderr."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(WAIT)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()
        return f"status {self.proc.returncode}, stderr:\n{err[-3000:]}"


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    if FUZZ_COUNTS:  # shown with -s: how the random cases ended
        print(f"\nrandom cases by outcome: {dict(sorted(FUZZ_COUNTS.items()))}")
    w.stop()
    assert w.proc.returncode == 0, "worker did not exit cleanly"


BEHAVIOURS = sorted(EXPECTED)


def check_outcome(case: dict[str, Any], out: dict[str, Any]) -> None:
    """What every case must satisfy: a result or a clean refusal, and a healthy parent."""
    assert out.get("healthy"), f"{case}: {out}"
    assert out["kind"] in ("ran", "refused", "oserror"), f"{case}: {out}"
    flags = case["flags"]
    vm = bool(flags & CLONE_VM)
    if out["kind"] == "refused":
        # refusals are policy (UnsupportedFlags/ValueError/RuntimeError) and say why
        assert out["error"], out
        return
    if out["kind"] == "oserror":
        assert out["errno"] in (errno.EINVAL, errno.EPERM, errno.ENOSPC, errno.EUSERS), out
        return
    code, abandons = EXPECTED[case["behaviour"]]
    if case["behaviour"] == "sigkill" and flags & CLONE_NEWPID and out["code"] in (0, 11):
        code, abandons = out["code"], False  # init of a pid namespace ignores its own SIGKILL
    if case["api"] != "spawn" and case["behaviour"] == "return":
        code = 0
    if flags & CLONE_PARENT and out["code"] == -255:
        # not our child: its status is only known once its real parent (the
        # worker's reaper) has reaped it; Task reports -255 before that
        code = -255
    assert out["code"] == code, f"{case}: {out}"
    assert out["abandoned"] == (1 if vm and abandons else 0), f"{case}: {out}"
    if vm and case["behaviour"] == "child_exit":
        assert out["unwound"], "child_exit did not run the finally block"
    if vm and case["behaviour"] == "return" and case["api"] == "spawn":
        assert out["identical"], "result() is not the child's object itself"


# -- abnormal exits, in a worker ------------------------------------------------

MATRIX_FLAGS = {
    "vm|vfork": VMV,
    "+files|fs|sighand": VMV | CLONE_FILES | CLONE_FS | CLONE_SIGHAND,
    "+parent": VMV | CLONE_PARENT,
    "+newuser|newpid": VMV | CLONE_NEWUSER | CLONE_NEWPID,
}


@pytest.mark.parametrize("api", ["spawn", "clone", "clone3"])
@pytest.mark.parametrize("flags", list(MATRIX_FLAGS.values()), ids=list(MATRIX_FLAGS))
def test_every_behaviour_in_worker(worker: Worker, flags: int, api: str) -> None:
    for behaviour in BEHAVIOURS:
        case = {"behaviour": behaviour, "api": api, "flags": flags}
        out = worker.run(case)
        check_outcome(case, out)
        assert out["kind"] == "ran", f"{case}: {out}"


def test_separate_stack_in_worker(worker: Worker) -> None:
    for behaviour in BEHAVIOURS:
        for api in ("clone", "clone3"):
            case = {"behaviour": behaviour, "api": api, "flags": VMV, "stack": 8 * MIB}
            out = worker.run(case)
            check_outcome(case, out)
            assert out["kind"] == "ran", f"{case}: {out}"


FUZZ_FLAGS = [
    CLONE_VM,
    CLONE_VFORK,
    CLONE_FS,
    CLONE_FILES,
    CLONE_SIGHAND,
    CLONE_THREAD,
    CLONE_SETTLS,
    CLONE_PTRACE,
    CLONE_UNTRACED,
    CLONE_SYSVSEM,
    CLONE_IO,
    CLONE_PARENT,
    CLONE_NEWNS,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
    CLONE_NEWCGROUP,
]


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    """A flag set (biased towards CLONE_VM|CLONE_VFORK) and a child behaviour."""
    flags = 0
    for bit in draw(st.lists(st.sampled_from(FUZZ_FLAGS), max_size=6)):
        flags |= bit
    if draw(st.integers(0, 3)):
        flags |= VMV
    return {
        "behaviour": draw(st.sampled_from(BEHAVIOURS)),
        "api": draw(st.sampled_from(["spawn", "clone", "clone3"])),
        "flags": flags,
        "exit_signal": draw(st.sampled_from([signal.SIGCHLD, 0])),
    }


FUZZ_COUNTS: dict[str, int] = {}


def _fuzz(worker: Worker, case: dict[str, Any]) -> None:
    out = worker.run(case)
    check_outcome(case, out)
    key = out["kind"] + ("-vm" if case["flags"] & CLONE_VM else "")
    FUZZ_COUNTS[key] = FUZZ_COUNTS.get(key, 0) + 1


@settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
def test_random_flags_and_behaviours(worker: Worker, case: dict[str, Any]) -> None:
    _fuzz(worker, case)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
def test_random_flags_and_behaviours_long(worker: Worker, case: dict[str, Any]) -> None:
    _fuzz(worker, case)


# -- abandoned thread states, in subprocesses ----------------------------------


def test_abandoned_thread_state_is_counted_and_warned() -> None:
    proc = run_python(
        """
        import os, signal, warnings
        import pyclone
        V = pyclone.CLONE_VM | pyclone.CLONE_VFORK | signal.SIGCHLD
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for body in (lambda: os._exit(3), lambda: os.execv("/bin/true", ["true"]),
                         lambda: os.kill(os.getpid(), signal.SIGKILL)):
                os.waitpid(pyclone.clone(body, V), 0)
        print(pyclone.abandoned_thread_states(), sum(
            issubclass(w.category, ResourceWarning) and "abandoned" in str(w.message)
            for w in caught))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "3"]


@pytest.mark.parametrize("stack", [0, 8 * MIB], ids=["default-stack", "explicit-stack"])
def test_abandoned_frames_stay_safe(stack: int) -> None:
    """frames, tracebacks and generators of dead children survive stack reuse and GC."""
    proc = run_python(
        """
        import gc, io, json, os, signal, sys, traceback, faulthandler
        import pyclone
        stack = int(sys.argv[1])
        keep = []
        def gen():
            yield 1
            os._exit(4)
        def child(i):
            def inner(d):
                if d:
                    return inner(d - 1)
                keep.append(sys._getframe())
                try:
                    1 / 0
                except ZeroDivisionError as e:
                    keep.append(e)
                g = gen(); next(g); keep.append(g)
                if i % 3 == 0: os._exit(3)
                if i % 3 == 1: next(g)
                os.kill(os.getpid(), signal.SIGKILL)
            inner(20)
        def deep(n):
            return deep(n - 1) if n else 0
        V = pyclone.CLONE_VM | pyclone.CLONE_VFORK | signal.SIGCHLD
        import warnings; warnings.simplefilter("ignore")
        for i in range(15):
            os.waitpid(pyclone.clone(lambda: child(i), V, stack), 0)
            try:
                deep(800)
            except RecursionError:
                pass
            json.dumps(json.loads("[" * 400 + "]" * 400))
            gc.collect()
            for o in gc.get_objects():
                if type(o).__name__ == "frame":
                    f = o
                    while f is not None:
                        f.f_lineno; f.f_locals; f = f.f_back
            for e in keep:
                if isinstance(e, BaseException):
                    traceback.format_exception(type(e), e, e.__traceback__)
                elif type(e).__name__ == "frame":
                    traceback.format_stack(e)
            sys._current_frames()
            faulthandler.dump_traceback(open(os.devnull, "w"), all_threads=True)
        print(pyclone.abandoned_thread_states())
        """,
        str(stack),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["15"]


def test_dev_mode_and_parallel_callers() -> None:
    """-X dev (debug allocator, GIL checks) with 3 threads each making 40 children at once."""
    proc = run_python(
        """
        import os, signal, sys, threading, warnings
        import pyclone
        warnings.simplefilter("ignore")
        V = pyclone.CLONE_VM | pyclone.CLONE_VFORK | signal.SIGCHLD
        errors = []
        def caller(k):
            try:
                for i in range(40):
                    box = []
                    def child():
                        box.append(i)
                        if i % 4 == 0:
                            os._exit(0)
                        if i % 4 == 1:
                            pyclone.child_exit(0)
                        return 0
                    pid = pyclone.clone(child, V)
                    assert os.waitpid(pid, 0)[1] == 0
                    assert box == [i], box
            except BaseException as e:
                errors.append(repr(e))
        ts = [threading.Thread(target=caller, args=(k,)) for k in range(3)]
        for t in ts: t.start()
        for t in ts: t.join()
        print(len(errors), pyclone.abandoned_thread_states(), *errors)
        """,
        timeout=120,
        dev=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["0", "30"]


def test_memory_cost_of_helpers_vs_abandoning() -> None:
    """child_exit/child_exec leave nothing behind; os._exit leaks a bounded amount."""
    proc = run_python(
        """
        import os, signal, warnings
        import pyclone
        warnings.simplefilter("ignore")
        V = pyclone.CLONE_VM | pyclone.CLONE_VFORK | signal.SIGCHLD
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        def work(leave):
            data = [str(i) for i in range(200)]
            leave(0)
        for leave in (pyclone.child_exit, pyclone.child_exit, os._exit):
            base = rss()
            for _ in range(300):
                os.waitpid(pyclone.clone(lambda: work(leave), V), 0)
            print(rss() - base)
        print(pyclone.abandoned_thread_states())
        """,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _warm, helper, abandon, count = (int(x) for x in proc.stdout.split())
    assert count == 300
    assert helper < 1 * MIB, f"child_exit grew RSS by {helper} bytes over 300 children"
    assert abandon < 300 * 64 * 1024, f"abandoning grew RSS by {abandon} bytes"


def test_signals_sent_to_the_child_stay_there() -> None:
    """SIGINT/SIGTERM sent to a running child neither reach the caller nor kill it early."""
    proc = run_python(
        """
        import os, signal, threading, time
        import pyclone
        V = pyclone.CLONE_VM | pyclone.CLONE_VFORK | signal.SIGCHLD
        def sigs():
            with open("/proc/self/status") as f:
                return [line for line in f if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
        t = threading.Thread(target=int)  # the first thread changes glibc's handlers
        t.start()
        t.join()
        before = sigs()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            box = []
            def shoot():
                deadline = time.monotonic() + 10
                while not box and time.monotonic() < deadline:
                    time.sleep(0.001)
                os.kill(box[0], sig)
                box.append("sent")
            t = threading.Thread(target=shoot)
            t.start()
            def child():
                box.append(os.getpid())
                while len(box) < 2:
                    time.sleep(0.001)  # releases the GIL: the shooter runs
                return 0
            pid = pyclone.clone(child, V)
            t.join()
            status = os.waitpid(pid, 0)[1]
            # blocked in the child, so pending when it exits: it ends normally
            assert os.waitstatus_to_exitcode(status) == 0, (sig, status)
            time.sleep(0.01)  # a stray KeyboardInterrupt would surface here
        print("same" if sigs() == before else (before, sigs()))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["same"]


def test_child_killed_while_the_gil_is_released() -> None:
    """SIGKILL lands while the child sleeps without the GIL; the caller takes it back."""
    proc = run_python(
        """
        import os, signal, threading, time, warnings
        import pyclone
        warnings.simplefilter("ignore")
        V = pyclone.CLONE_VM | pyclone.CLONE_VFORK | signal.SIGCHLD
        for i in range(20):
            box = []
            def shoot():
                deadline = time.monotonic() + 10
                while not box and time.monotonic() < deadline:
                    time.sleep(0.001)
                time.sleep(0.02)
                os.kill(box[0], signal.SIGKILL)
            t = threading.Thread(target=shoot)
            t.start()
            r, w = os.pipe()
            def child():
                box.append(os.getpid())
                # blocked in read(2) without the GIL, never waking up to wait for it:
                # a child killed while *waiting* for the GIL is the unfixable case
                # (a dead waiter in the shared condition variable, docs/limits.rst)
                os.read(r, 1)
            pid = pyclone.clone(child, V)
            t.join()
            os.close(r)
            os.close(w)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == -signal.SIGKILL
        print(pyclone.abandoned_thread_states())
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["20"]
