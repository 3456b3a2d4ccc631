"""``forward_signals``: the caller of ``Sandbox.run`` passes the signals it gets to the sandbox
(to its init, or to the command when it is pid 1), and ``argv0``, as root and as uid 65534.

``pyclone run --forward-signals`` is compared with bwrap in
``test_sandbox_bwrap_suite_more.py`` (upstream's test-forward-signals.sh).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest

from pyclone import Sandbox

from actions_support import wait_threads_settle
from conftest import WAIT
from sandbox_helpers import BWRAP_LIKE, NOBODY, WHO, run_as, shared_dir


def _signal_while_running(top: str, init: bool) -> tuple[int, bytes, bool]:
    """Run a command trapping USR1; once it says so, SIGUSR1 to this process; its output.

    ``run``'s timeout bounds the wait: without forwarding the command loops forever.
    """
    ready = os.path.join(top, "ready")
    sb = Sandbox(**BWRAP_LIKE, bind=[(top, top)], init=init, forward_signals=True)
    script = f'trap "echo USR1; exit 7" USR1; : > {ready}; while :; do sleep 0.05; done'
    before = signal.getsignal(signal.SIGUSR1)
    # A process, not a thread, sends it: a raw clone refuses a multi-threaded caller.
    poke = f"while [ ! -e {ready} ]; do sleep 0.05; done; kill -USR1 {os.getpid()}"
    poker = subprocess.Popen(["sh", "-c", poke])
    try:
        done = sb.run(["sh", "-c", script], capture_output=True, timeout=WAIT)
    finally:
        poker.kill()
        poker.wait(WAIT)
    return done.returncode, done.stdout, signal.getsignal(signal.SIGUSR1) == before


@WHO
@pytest.mark.parametrize("init", [True, False], ids=["init", "as-pid-1"])
def test_a_signal_to_the_caller_reaches_the_command(who: str, init: bool) -> None:
    """Through the init (which forwards it on), or straight to the command as pid 1
    (which gets it because its trap is a handler); the caller's handler is back after."""
    with shared_dir(owner=NOBODY if who == "nobody" else 0) as top:
        code, out, restored = run_as(who, _signal_while_running, top, init)
    assert (code, out, restored) == (7, b"USR1\n", True)


def test_forwarding_is_for_run_in_the_main_thread() -> None:
    sb = Sandbox(**BWRAP_LIKE, forward_signals=True)
    with pytest.raises(ValueError, match="run"):
        sb.spawn(["true"])
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            sb.run(["true"], timeout=WAIT)
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(WAIT)
    wait_threads_settle(1)  # so that the next test's launch is not refused for it
    assert len(errors) == 1 and "main thread" in str(errors[0])


def test_the_options_are_checked() -> None:
    with pytest.raises(TypeError, match="forward_signals"):
        Sandbox(forward_signals=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="argv0"):
        Sandbox(argv0=b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="argv0"):
        Sandbox(argv0="a\0b")
    with pytest.raises(ValueError, match="argv0"):
        Sandbox(argv0="x").spawn(print)


def _argv0() -> bytes:
    done = Sandbox(**BWRAP_LIKE, argv0="right").run(
        ["sh", "-c", 'echo "$0"; tr "\\0" " " < /proc/self/cmdline'],
        capture_output=True,
        timeout=WAIT,
    )
    return done.stdout


@WHO
def test_argv0_is_what_the_command_sees_not_what_runs(who: str) -> None:
    out = run_as(who, _argv0)
    assert out.splitlines()[0] == b"right"
