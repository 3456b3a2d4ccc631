"""The sandbox's pid 1 (the default with a pid namespace).

It forks the target, forwards signals to it, reaps orphans and exits with the
target's status.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from typing import Any, NoReturn

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


def fork_init(
    reporter: StepReporter, cap_last: int, keep: set[int], programs: tuple[bytes, ...] = ()
) -> None:
    """Become the sandbox's init; the target continues in a child.

    The init keeps no capability: it only reaps and forwards signals, and a
    privileged process left in the sandbox would be one more to attack.  Of
    the descriptors it keeps only ``keep`` (the caller's others, the status
    pipe, the result channel would otherwise stay open in the sandbox).  It
    loads the caller's seccomp ``programs`` too, as bwrap's pid 1 does: the
    command could otherwise make its system calls through it (ptrace).
    """
    # Block the forwarded signals across the fork: pid 1 ignores a signal it
    # has no handler for, so one arriving before _init_loop installs its
    # handlers would be lost.  They stay pending until then.
    # With seccomp programs, the command waits until pid 1 is filtered too:
    # otherwise it could reach pid 1 (ptrace) before pid 1 loaded them.
    ready = os.pipe() if programs else None
    with reporter.step("fork init"):
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
        pid = os.fork()
    if pid == 0:
        if ready is not None:
            os.close(ready[1])
            os.read(ready[0], 1)  # EOF once pid 1 has loaded them (or failed)
            os.close(ready[0])
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return
    if ready is not None:
        os.close(ready[0])
    with reporter.step("init capabilities"):
        drop_all(cap_last)
    if programs:
        with reporter.step("init seccomp_programs"):
            # without capabilities, loading a filter needs no_new_privs; the
            # init never executes anything, so it costs nothing here
            _pyclone.prctl(_pyclone.PR_SET_NO_NEW_PRIVS, 1)
            load_seccomp(programs)
    if ready is not None:
        os.close(ready[1])
    close_except(keep)
    _init_loop(pid, mask)


def _init_loop(target: int, mask: Iterable[int]) -> NoReturn:
    """pid 1 of the sandbox: forward signals to the target, reap everyone, exit with it.

    ``mask`` is the signal mask to restore once the handlers are in place.
    """

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signum)

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    code = 1
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == target:
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                code = 128 - code
            break
    os._exit(code)  # ending pid 1 kills what is left in the namespace
