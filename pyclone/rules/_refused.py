"""pyclone's own refusals as a predicate: :func:`refused` says when a call raises UnsupportedFlags.

The kernel's rules say which errno a request gets; pyclone refuses some
requests *before* any system call, with :class:`pyclone.UnsupportedFlags`,
because the child could not run safely (a Python callable with
CLONE_SETTLS, CLONE_THREAD, or CLONE_VM without CLONE_VFORK).  This module
states those checks in the order the extension makes them, so a property
test can predict both kinds of refusal.
"""

from __future__ import annotations

import signal
import sys

from .. import _pyclone
from ..flags import CloneFlag

__all__ = ["refused"]

F = CloneFlag
_SIGCHLD = int(signal.SIGCHLD)
_CSIGNAL = 0xFF
_APIS = ("clone", "clone3", "spawn_task")
_TARGETS = ("callable", "action")
_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
#: A free-threaded build's ABI flags hold "t" (sysconfig's Py_GIL_DISABLED, without
#: importing sysconfig with the package).
_FREE_THREADED = "t" in getattr(sys, "abiflags", "")


def refused(
    flags: int,
    *,
    api: str = "clone",
    exit_signal: int | None = None,
    target: str = "callable",
) -> str | None:
    """Why pyclone would refuse this request with UnsupportedFlags, or None if it would not.

    ``api`` names the call: ``"clone"`` is :func:`pyclone.clone` (``flags``
    is the legacy word, exit signal in its low byte, as for
    :func:`pyclone.predict_errno`); ``"clone3"`` is :func:`pyclone.clone3`
    (``exit_signal`` separate, None meaning SIGCHLD); ``"spawn_task"`` is
    :func:`pyclone.spawn_task` with these raw ``flags=`` (resolve ``share``
    and ``new`` with :func:`pyclone.spec.resolve_flags`), which adds
    CLONE_PIDFD and passes exit signal 0 with CLONE_THREAD or CLONE_PARENT.
    ``target`` is ``"callable"`` (a Python function) or ``"action"`` (a
    :mod:`pyclone.actions` action without ``exec`` or ``ignore_signal``,
    which are refused with CLONE_THREAD and CLONE_SIGHAND respectively).

    The answer is the start of the exception's message.  None does not mean
    the kernel accepts the request: ask :func:`pyclone.predict_errno`.  For
    clone3 (and spawn_task with a callable), arguments clone3 rejects up
    front (:class:`pyclone.CloneArgumentError`, the kernel's own ``EINVAL``)
    are found before pyclone's checks, so such requests are not "refused".
    Refusals that need clone3 to be missing (``ENOSYS``), or other
    arguments (``set_tid``, ``cgroup``, ``time_offsets``), are not modelled.

    >>> from pyclone import CloneFlag as F
    >>> refused(F.SETTLS | F.VM)
    'CLONE_SETTLS is refused'
    >>> refused(F.VM | F.VFORK) is None
    True
    >>> refused(F.THREAD | F.SIGHAND | F.VM, api="spawn_task", target="action") is None
    True
    """
    if api not in _APIS:
        raise ValueError(f"api must be one of {', '.join(_APIS)}, not {api!r}")
    if target not in _TARGETS:
        raise ValueError(f"target must be 'callable' or 'action', not {target!r}")
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    f = int(flags)
    if api == "clone":
        if f >> 32:
            high = f >> 32 << 32
            return f"clone(): flags {high:#x} have bits above the low 32"
        f &= ~_CSIGNAL
    else:
        sig = _SIGCHLD if exit_signal is None else exit_signal
        if api == "spawn_task":
            if f & (F.THREAD | F.PARENT):
                sig = 0
            if target == "callable":
                f |= F.PIDFD
        # pyclone.clone3 checks clone3's early rules first; spawn_task does for
        # callables, and hands actions straight to the extension
        if (api == "clone3" or target == "callable") and _clone3_rejects_first(f, sig):
            return None
    if target == "action":
        return _action_refusal(f, api)
    return _callable_refusal(f, api)


def _callable_refusal(f: int, api: str) -> str | None:
    """The checks the extension makes before running a Python callable in a new task."""
    if f & F.SETTLS:
        return "CLONE_SETTLS is refused"
    if f & F.THREAD:
        return "CLONE_THREAD with a Python callable is refused"
    if not f & F.VM:
        return None
    if not _pyclone._vm_supported():
        if _FREE_THREADED:
            return "CLONE_VM with a Python callable is refused on free-threaded builds"
        return f"CLONE_VM with a Python callable is not supported on Python {_VERSION}"
    if not f & F.VFORK:
        return "CLONE_VM without CLONE_VFORK with a Python callable is refused"
    if f & F.SIGHAND and f & F.NEWPID:
        return "CLONE_SIGHAND|CLONE_NEWPID is refused with CLONE_VM"
    # clone3 requests with CLONE_VM are served by clone(2), which cannot express these
    if api != "clone" and (f >> 32 or f & F.NEWTIME or (f & F.PIDFD and f & F.PARENT_SETTID)):
        return "clone3() with CLONE_VM and a Python callable is served by clone(2)"
    return None


def _action_refusal(f: int, api: str) -> str | None:
    """The checks the extension makes before starting an action."""
    if f & F.SETTLS:
        return "CLONE_SETTLS is refused"
    if f & F.SIGHAND and f & F.NEWPID:
        return "CLONE_SIGHAND|CLONE_NEWPID is refused"
    if api == "clone3" and not _pyclone._act_clone3:
        return "clone3 with an action needs the x86_64 trampoline"
    return None


def _clone3_rejects_first(f: int, sig: int) -> bool:
    """True if :func:`pyclone.clone3_api.check_clone3_args` raises for these arguments.

    The same rules, kept here because that module is a layer above this
    one; tests compare the two over random requests.
    """
    return bool(
        sig & ~0xFF
        or sig > 64
        or f & (F.DETACHED | (F.CSIGNAL & ~F.NEWTIME))
        or (f & F.SIGHAND and f & F.CLEAR_SIGHAND)
        or (f & (F.THREAD | F.PARENT) and sig != 0)
        or (f & F.FS and f & (F.NEWNS | F.NEWUSER))
        or (f & F.THREAD and not f & F.SIGHAND)
        or (f & F.SIGHAND and not f & F.VM)
        or (f & F.THREAD and f & (F.NEWUSER | F.NEWPID))
    )
