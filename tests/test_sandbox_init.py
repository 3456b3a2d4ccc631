"""The sandbox's pid 1: only its own processes visible, orphans reaped, signals forwarded."""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import time

from bpf_programs import deny

from pyclone import Sandbox

from conftest import WAIT, Health, require_root, run_forked
from sandbox_helpers import ROOT_DIR, WHO, run_as


def _processes() -> tuple[list[int], list[int]]:
    def inside() -> tuple[list[int], int]:
        return sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), os.getpid()

    with_init = Sandbox(new={"user", "pid", "mnt"}, proc="/proc").spawn(inside).result(WAIT)
    as_pid_1 = Sandbox(new={"user", "pid", "mnt"}, proc="/proc", init=False)
    alone = as_pid_1.spawn(inside).result(WAIT)
    assert with_init[1] == 2 and alone[1] == 1
    return with_init[0], alone[0]


@WHO
def test_only_the_sandbox_processes_are_visible(who: str) -> None:
    with_init, alone = run_as(who, _processes)
    assert with_init == [1, 2]  # the init and the target
    assert alone == [1]


def _orphans() -> tuple[int, bool]:
    def target() -> tuple[int, bool]:
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:
            orphan = os.fork()
            if orphan == 0:
                os.close(r)
                time.sleep(0.2)  # outlive the middle process, then exit
                os._exit(0)
            os.write(w, str(orphan).encode())
            os._exit(0)
        os.close(w)
        orphan = int(os.read(r, 32))
        os.waitpid(middle, 0)
        with open(f"/proc/{orphan}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{orphan}") and time.monotonic() < deadline:
            time.sleep(0.02)
        return ppid, not os.path.exists(f"/proc/{orphan}")

    with Sandbox(new={"user", "pid", "mnt"}, proc="/proc").spawn(target) as task:
        result: tuple[int, bool] = task.result(WAIT)
        return result


@WHO
def test_pid_1_reaps_orphans(who: str) -> None:
    ppid, reaped = run_as(who, _orphans)
    assert ppid == 1  # the orphan was reparented to the sandbox's init
    assert reaped  # and the init reaped it (no zombie left in /proc)


def test_init_forwards_signals_to_the_target(healthy: Health) -> None:
    r, w = os.pipe()

    def target() -> None:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(42))
        os.write(w, b"r")
        # Not signal.pause(): the write wakes the caller, whose SIGTERM can come
        # back before pause() is reached, and the handler runs between bytecodes,
        # so pause() would then wait for a signal that has already come. A short
        # sleep returns, and the loop's jump back runs the handler.
        while True:
            time.sleep(0.05)

    try:
        with Sandbox(new={"user", "pid"}, pass_fds=[w]).spawn(target) as task:
            assert select.select([r], [], [], WAIT)[0], "target never became ready"
            assert os.read(r, 1) == b"r"
            task.terminate()
            assert task.wait(WAIT) == 42  # the init forwarded SIGTERM and passed 42 on
    finally:
        os.close(r)
        os.close(w)


def test_a_signal_sent_at_once_is_forwarded(healthy: Health) -> None:
    # the init keeps the forwarded signals blocked from before the target
    # exists, so one sent the moment spawn returns is not lost
    for _ in range(10):
        with Sandbox(new={"user", "pid"}).spawn(signal.pause) as task:
            task.terminate()
            assert task.wait(WAIT) == 128 + signal.SIGTERM


def test_the_init_reaps_when_a_seccomp_program_refuses_it_sigwaitinfo(healthy: Health) -> None:
    program = deny("rt_sigtimedwait", errno.EPERM)
    sandbox = Sandbox(new={"user", "pid"}, seccomp_programs=[program])
    with sandbox.spawn(os._exit, (7,)) as task:
        assert task.wait(WAIT) == 7


def _sigchld_ignored() -> tuple[bool, int]:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    def target() -> bool:
        return signal.getsignal(signal.SIGCHLD) is signal.SIG_IGN

    with Sandbox(new={"user", "pid"}).spawn(target) as task:
        return task.result(WAIT), task.pid


def test_the_target_keeps_the_callers_sigchld_disposition() -> None:
    # the init sets SIGCHLD to SIG_DFL for itself (or the kernel would reap the
    # target for it), and the target gets the caller's back
    kept, _ = run_forked(_sigchld_ignored)
    assert kept


def _pid_1_caps() -> str:
    with open("/proc/1/status") as f:
        return next(line for line in f if line.startswith("CapEff:"))


def _pid_1_caps_seen(runs: int) -> set[str]:
    sb = Sandbox(new={"user", "pid", "mnt"}, proc="/proc")
    return {sb.spawn(_pid_1_caps).result(WAIT) for _ in range(runs)}


@WHO
def test_the_target_never_sees_pid_1_holding_a_capability(who: str) -> None:
    """The target's first code runs only once the init has dropped its capabilities.

    The init drops them after the fork; before the target waited for that,
    ``getpcaps 1`` in the command saw ``=ep`` when the init was slow (a busy
    machine), in bwrap's own test of it.
    """
    assert run_as(who, _pid_1_caps_seen, 40) == {"CapEff:\t0000000000000000\n"}


_FAIL_EARLY = """
import pyclone
from pyclone.sandbox import SandboxError
sb = pyclone.Sandbox(new={"user", "pid", "mnt"}, chdir="/no/such/dir")
for _ in range(100):
    try:
        sb.run(["/bin/true"], timeout=20)
    except SandboxError as exc:
        assert exc.step == "chdir", exc
    else:
        raise AssertionError("the chdir did not fail")
print("done")
"""


def test_a_target_that_fails_before_the_init_is_ready_leaves_the_init_quiet() -> None:
    """The init tells the target it is ready by a write; the target may be gone by then.

    Its EPIPE once ended the init with a traceback on the caller's stderr
    (about 1 run in 600) instead of the target's status.
    """
    require_root()
    done = subprocess.run(
        [sys.executable, "-c", _FAIL_EARLY],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=ROOT_DIR),
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "done\n", "")
