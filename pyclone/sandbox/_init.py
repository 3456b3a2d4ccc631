"""The sandbox's pid 1 (the default with a pid namespace).

It forks the target, forwards signals to it, reaps orphans and exits with the
target's status.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import NoReturn

from .. import _pyclone
from ._caps import drop_all
from ._hold import close_except
from ._seccomp import load as load_seccomp
from ._status import StepReporter

#: Signals the init passes on to the target (pid 1 ignores those it has no handler for).
_FORWARDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGALRM,
)
_WAITED = (*_FORWARDED, signal.SIGCHLD)


def fork_init(
    reporter: StepReporter, cap_last: int, keep: set[int], programs: tuple[bytes, ...] = ()
) -> int:
    """Become the sandbox's init; the target continues in a child.

    The init keeps no capability: it only reaps and forwards signals, and a
    privileged process left in the sandbox would be one more to attack.  Of
    the descriptors it keeps only ``keep`` (the caller's others, the status
    pipe, the result channel would otherwise stay open in the sandbox).  It
    loads the caller's seccomp ``programs`` too, as bwrap's pid 1 does: the
    command could otherwise make its system calls through it (ptrace).

    Returns, in the target, the read end of the init's ready pipe: the
    target must pass :func:`await_init` before it runs anything of the
    caller's, since until then pid 1 still holds the capabilities it was
    forked with (``getpcaps 1`` would see them; a slow init, under load,
    once let it) and may not have loaded the programs yet.
    """
    # Block the forwarded signals (and SIGCHLD) across the fork: pid 1 ignores
    # a signal it has no handler for unless it is blocked, and the init keeps
    # them blocked for good, taking them with sigwaitinfo (no handler, so none
    # is lost in a window before one is installed).  The target unblocks them.
    with reporter.step("fork init"):
        ready_r, ready_w = os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
        # with SIG_IGN the kernel would reap the init's children itself, the target too
        on_child = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = os.fork()
    if pid == 0:
        os.close(ready_w)
        if on_child is not None:  # None: not set from Python, nothing to restore
            signal.signal(signal.SIGCHLD, on_child)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return ready_r
    os.close(ready_r)
    with reporter.step("init capabilities"):
        drop_all(cap_last)
    if programs:
        with reporter.step("init seccomp_programs"):
            # without capabilities, loading a filter needs no_new_privs; the
            # init never executes anything, so it costs nothing here
            _pyclone.prctl(_pyclone.PR_SET_NO_NEW_PRIVS, 1)
            load_seccomp(programs)
    with contextlib.suppress(BrokenPipeError):
        # a target that failed a step of its own is gone already: the loop
        # below reaps it and passes its status on
        os.write(ready_w, _READY)
    os.close(ready_w)
    close_except(keep)
    _init_loop(pid)


#: What the init writes once it holds no capability (an EOF alone: it failed).
_READY = b"\1"


def await_init(ready: int) -> None:
    """In the target: wait until pid 1 has dropped its capabilities (and loaded the programs).

    An end of file without the byte means the init failed its own steps
    (and reported it): the target must not run the command then.
    """
    try:
        got = os.read(ready, 1)
    finally:
        os.close(ready)
    if got != _READY:
        os._exit(127)


def _init_loop(target: int) -> NoReturn:
    """pid 1 of the sandbox: forward signals to the target, reap everyone, exit with it."""
    while True:
        # reap before each wait: SIGCHLD stands for any number of children
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                os._exit(1)  # the target was reaped elsewhere: no status to pass on
            if pid == 0:
                break
            if pid == target:
                _exit_as(status)
        try:
            signum = signal.sigwaitinfo(_WAITED).si_signo
        except OSError:  # a seccomp program of the caller's refuses it
            _reap_only(target)
        if signum != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signum)


def _reap_only(target: int) -> NoReturn:
    """Reap without forwarding (the init cannot wait for signals), exit with the target."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if pid == target:
            _exit_as(status)


def _exit_as(status: int) -> NoReturn:
    """End pid 1 (and so what is left in the namespace) with the target's status."""
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)
