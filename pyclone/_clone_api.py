"""clone(2) for Python: the caller-safety checks that are policy, then the raw call.

:func:`clone` is :func:`pyclone._pyclone.clone` (which the benchmarks call
directly) behind two checks: the flags word must be a non-negative int,
and its low byte, the exit signal, must not be one whose arrival would end
or stop the caller (see :mod:`pyclone._exitsig`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _pyclone
from . import errors as _errors  # noqa: F401  (installs the error hook the C call uses)
from ._exitsig import check_exit_signal
from ._preload import load as load_child_modules
from .actions import Action, signal_steps
from .flags import check_flags

__all__ = ["clone"]

_CSIGNAL = _pyclone.CSIGNAL
_SIGCHLD = 17


def clone(
    fn: Callable[[], Any] | Action,
    flags: int,
    stack_size: int = 0,
    /,
    *,
    allow_threads: bool = False,
    allow_fatal_exit_signal: bool = False,
) -> int:
    """Create a task with clone(2) running ``fn()`` and return its pid.

    The low byte of ``flags`` is the exit signal, as in clone(2); bits
    above the low 32 are refused (clone(2) would drop them: use
    :func:`pyclone.clone3`).  ``fn`` is called with no arguments in the
    child; its int return value is the exit status (None means 0),
    ``SystemExit`` is honoured, and any other exception is printed to
    stderr and gives status 1.  The child never returns into the caller's
    frames.

    ``fn`` may instead be an action (:mod:`pyclone.actions`), run in C on a
    stack of its own: valid with any flags the kernel accepts (CLONE_VM
    without CLONE_VFORK, CLONE_THREAD); with CLONE_VFORK a failed step
    raises :class:`pyclone.ActionError` here, without it the task exits
    with status 127.

    Flag sets that plain fork() can serve use fork(); the others use the
    raw system call, which is refused in a multi-threaded process unless
    ``allow_threads=True``.  ``stack_size`` is unused by fork-like
    children, which continue on a copy-on-write copy of the caller's stack
    (it is still checked: 0 to 4 GiB).  With CLONE_PIDFD the descriptor the
    kernel returns is closed at once: use ``clone3(pidfd=True)`` to keep it.

    With CLONE_VM, ``fn`` runs on the caller's interpreter in a fresh
    thread state while the caller is suspended, so CLONE_VFORK is required;
    its writes to Python objects are the caller's.  It always runs on a
    stack of its own: 8 MiB for ``stack_size=0``, else a size of at least
    8 MiB.  See :func:`pyclone.child_exit` and :func:`pyclone.child_exec`.

    An exit signal whose disposition in the caller is the default and
    whose default action terminates, dumps core or stops (SIGTERM,
    SIGUSR1, SIGKILL, the real-time signals, ...) would end or stop the
    caller when the task ends: it is refused with a :class:`ValueError`
    unless ``allow_fatal_exit_signal=True``.  SIGCHLD, 0, a signal with a
    handler or ignored, and those whose default is to ignore are fine.

    Raises :class:`OSError` with the kernel's errno when the kernel rejects
    the flags, and :class:`~pyclone.UnsupportedFlags` for flag sets pyclone
    refuses.
    """
    if not isinstance(fn, Action):
        load_child_modules()  # what a Python child may import, before it exists
    check_flags(flags)
    sig = flags & _CSIGNAL
    if (sig and sig != _SIGCHLD) or allow_fatal_exit_signal is not False:
        check_exit_signal(
            sig,
            flags,
            allow=allow_fatal_exit_signal,
            signal_steps=signal_steps(fn),
            what="exit signal {name} (the low byte of flags)",
        )
    return _pyclone.clone(fn, flags, stack_size, allow_threads=allow_threads)
