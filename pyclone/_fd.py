"""Owning file descriptors, and keeping signal handlers out of a launch.

Every descriptor pyclone opens for a task has exactly one :data:`Fd`
owner, which closes it exactly once.  A Python signal handler may raise
(KeyboardInterrupt) between any two bytecodes, so the owner is a C object:
its close and its deallocation run no Python code, and a closed (perhaps
reused) number is never recorded as open.

:func:`hold_signals` blocks the asynchronous signals in the calling
thread while a launch hands the new child and its descriptors to their
owners; the child inherits that mask, so a signal sent to it waits until
its target starts (:func:`release_signals` there) instead of landing in
the interpreter's after-fork hooks.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]
import os
import signal
from collections.abc import Callable, Iterable

from . import _pyclone

# The C module's function takes and returns plain ints; signal.pthread_sigmask
# converts every member to a Signals enum, several microseconds per launch.
pthread_sigmask: Callable[[int, Iterable[int]], set[int]] = _signal.pthread_sigmask

__all__ = ["ASYNC_SIGNALS", "Fd", "close_all", "hold_signals", "pipe", "release_signals"]

#: Signals a launch holds back: every signal except the ones a fault raises
#: synchronously (blocking those turns a crash report into a silent kill).
ASYNC_SIGNALS: frozenset[int] = frozenset(
    int(sig)
    for sig in signal.valid_signals()
    if sig
    not in (
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGSYS,
    )
)


#: The one owner of a file descriptor: ``Fd(n).close()`` closes ``n`` once, and an
#: owner freed unclosed closes it then.  It is C code (``pyclone._pyclone.Fd``)
#: because a Python owner cannot be made safe against a handler raising: between
#: forgetting the number and closing it, or before the first line of ``__del__``.
Fd = _pyclone.Fd


def pipe() -> tuple[Fd, Fd]:
    """A pipe as two owners (read end, write end)."""
    rfd, wfd = os.pipe()
    return Fd(rfd), Fd(wfd)


def close_all(owners: list[Fd]) -> None:
    """Close every owner in ``owners``, emptying the list as it goes."""
    while owners:
        owners.pop().close()


def hold_signals() -> set[int]:
    """Block :data:`ASYNC_SIGNALS` in this thread; return the mask to restore.

    A handler already due runs (and may raise) before anything is blocked,
    or, if it raises in between, the mask is restored before it propagates.
    """
    old: set[int] = pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
    except BaseException:
        pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    return old


def release_signals(mask: set[int]) -> None:
    """Restore the mask :func:`hold_signals` returned; held signals arrive now."""
    pthread_sigmask(signal.SIG_SETMASK, mask)
