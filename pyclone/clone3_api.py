"""clone3(2) for Python: the kernel's argument rules first, and a fallback to clone(2) on ENOSYS.

:func:`clone3` checks the arguments the kernel checks before it looks at
privileges or resources, in the kernel's order, and raises the same
``EINVAL`` the kernel would (as :class:`CloneArgumentError`, an ``OSError``
and a ``ValueError``), naming the rule; everything
else goes to the kernel and its errno comes back unchanged.  The checks
are those of ``copy_clone_args_from_user()``, ``clone3_args_valid()`` and
the first flag checks of ``copy_process()`` (all ``EINVAL``, all before any
privilege-dependent step, so checking a subset here never changes the
errno).  Unknown high flag bits are *not* refused here: newer kernels
define more of them, so the running kernel decides.

Where the kernel reports clone3 as missing (``ENOSYS``: a kernel older
than 5.3, or a seccomp filter written for one, as some container runtimes
install) the call falls back to clone(2) when the request fits it, and
raises :class:`~pyclone.UnsupportedFlags` naming what does not fit
(``set_tid``, ``cgroup``, CLONE_NEWTIME, CLONE_CLEAR_SIGHAND, CLONE_INTO_CGROUP).
Any other errno, ``EPERM`` from a seccomp filter in particular, is raised
as is: only ``ENOSYS`` means "use the old call".
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeAlias

from . import _pyclone
from ._exitsig import check_exit_signal
from ._preload import load as load_child_modules
from .actions import Action, signal_steps
from .errors import UnsupportedFlags
from .flags import CloneFlag, check_flags, flag_names

__all__ = ["CloneArgumentError", "Created", "check_clone3_args", "clone3", "clone3_missing"]

_U64 = (1 << 64) - 1
_INT_MAX = (1 << 31) - 1
#: MAX_PID_NS_LEVEL: at most this many set_tid entries (one per pid namespace level).
MAX_SET_TID: int = _pyclone.MAX_SET_TID

#: Flags legacy clone(2) cannot express: bits above 31 are dropped by it, and
#: 0x80 (CLONE_NEWTIME) is part of its exit-signal byte.
CLONE3_ONLY_FLAGS = CloneFlag.CLEAR_SIGHAND | CloneFlag.INTO_CGROUP | CloneFlag.NEWTIME

CgroupArg: TypeAlias = "int | str | os.PathLike[str] | None"

_missing = False


def clone3_missing() -> bool:
    """True once clone3(2) has failed with ENOSYS in this process (it is then not tried again)."""
    return _missing


def _as_u64(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not -(1 << 63) <= value <= _U64:
        raise ValueError(f"{what} must fit in 64 bits (the kernel's field is a __u64)")
    return value & _U64


class CloneArgumentError(OSError, ValueError):
    """Arguments clone3(2) rejects before anything else: the kernel's ``EINVAL``, found early.

    Both an :class:`OSError` (``errno`` is ``EINVAL``, as the kernel
    would return) and a :class:`ValueError` (the arguments are wrong
    whatever the privileges).  The message names the kernel's rule.
    """


def _einval(flags: int, exit_signal: int, rule: str) -> CloneArgumentError:
    spelled = flag_names(flags & _U64, api="clone3")  # as the kernel reads a negative word
    return CloneArgumentError(
        errno.EINVAL,
        f"clone3({spelled}, exit_signal={exit_signal}): {os.strerror(errno.EINVAL)}: {rule}",
    )


class _F:
    """The flag values as plain ints (IntFlag arithmetic is slow on the spawn path)."""

    CSIGNAL = int(CloneFlag.CSIGNAL)
    NEWTIME = int(CloneFlag.NEWTIME)
    DETACHED = int(CloneFlag.DETACHED)
    INTO_CGROUP = int(CloneFlag.INTO_CGROUP)
    SIGHAND = int(CloneFlag.SIGHAND)
    CLEAR_SIGHAND = int(CloneFlag.CLEAR_SIGHAND)
    THREAD = int(CloneFlag.THREAD)
    PARENT = int(CloneFlag.PARENT)
    NEWNS = int(CloneFlag.NEWNS)
    FS = int(CloneFlag.FS)
    NEWUSER = int(CloneFlag.NEWUSER)
    NEWPID = int(CloneFlag.NEWPID)
    VM = int(CloneFlag.VM)


def check_clone3_args(
    flags: int, exit_signal: int = signal.SIGCHLD, set_tid_size: int = 0, cgroup: int = 0
) -> None:
    """Raise :class:`CloneArgumentError` (``EINVAL``) for arguments clone3 rejects first.

    ``flags`` is the 64-bit ``clone_args.flags``, ``exit_signal`` the
    ``clone_args.exit_signal`` field (negative values are read as the
    kernel reads them, two's complement), ``set_tid_size`` the number of
    ``set_tid`` entries and ``cgroup`` the ``clone_args.cgroup`` value.
    The first failing rule, in the kernel's order, decides the message.
    """
    f = _as_u64(flags, "flags")
    sig = _as_u64(exit_signal, "exit_signal")
    cg = _as_u64(cgroup, "cgroup")
    failed = _first_failed_rule(f, sig, cg, set_tid_size)
    if failed is not None:
        rule = _RULES[failed].format(
            set_tid_size=set_tid_size, max=MAX_SET_TID, exit_signal=exit_signal, cgroup=cgroup
        )
        raise _einval(flags, exit_signal, rule)


# The rules of check_clone3_args, in the kernel's order; the text is only
# formatted for the rule that failed (this runs before every spawn).
_RULES: tuple[str, ...] = (
    # copy_clone_args_from_user()
    "set_tid has {set_tid_size} entries; at most {max} "
    "(one per pid namespace level, MAX_PID_NS_LEVEL)",
    "exit_signal {exit_signal} is not 0 or a signal number 1..64",
    "CLONE_INTO_CGROUP with cgroup={cgroup}: the cgroup must be an open descriptor",
    # clone3_args_valid()
    "clone3 takes the exit signal in exit_signal, not in the flags' low byte, "
    "and refuses CLONE_DETACHED",
    "CLONE_CLEAR_SIGHAND cannot be combined with CLONE_SIGHAND "
    "(handlers that are shared cannot be reset)",
    "with CLONE_THREAD or CLONE_PARENT the exit signal must be 0 "
    "(the kernel uses the creator's own)",
    # copy_process(), the flag checks that precede every privilege check
    "CLONE_NEWNS cannot be combined with CLONE_FS",
    "CLONE_NEWUSER cannot be combined with CLONE_FS",
    "CLONE_THREAD requires CLONE_SIGHAND",
    "CLONE_SIGHAND requires CLONE_VM",
    "CLONE_THREAD cannot be combined with CLONE_NEWUSER or CLONE_NEWPID",
)


def _first_failed_rule(f: int, sig: int, cg: int, set_tid_size: int) -> int | None:
    """Index in _RULES of the first rule the arguments break, or None."""
    c = _F
    if set_tid_size > MAX_SET_TID:
        return 0
    if sig & ~0xFF or sig > 64:
        return 1
    if f & c.INTO_CGROUP and cg > _INT_MAX:
        return 2
    if f & (c.DETACHED | (c.CSIGNAL & ~c.NEWTIME)):
        return 3
    if f & c.SIGHAND and f & c.CLEAR_SIGHAND:
        return 4
    if f & (c.THREAD | c.PARENT) and sig != 0:
        return 5
    if f & c.NEWNS and f & c.FS:
        return 6
    if f & c.NEWUSER and f & c.FS:
        return 7
    if f & c.THREAD and not f & c.SIGHAND:
        return 8
    if f & c.SIGHAND and not f & c.VM:
        return 9
    if f & c.THREAD and f & (c.NEWUSER | c.NEWPID):
        return 10
    return None


def _set_tid_list(set_tid: Iterable[int]) -> list[int]:
    if isinstance(set_tid, (str, bytes)):
        raise TypeError("set_tid must be a sequence of pids, not a string")
    try:
        tids = list(set_tid)
    except TypeError:
        raise TypeError(
            f"set_tid must be a sequence of pids, not {type(set_tid).__name__}"
        ) from None
    for tid in tids:
        if isinstance(tid, bool) or not isinstance(tid, int):
            raise TypeError(f"set_tid entries must be ints, not {type(tid).__name__}")
        if not -(1 << 31) <= tid < (1 << 31):
            raise ValueError(f"set_tid entry {tid} does not fit in a pid_t (32 bits)")
    return tids


class Created(NamedTuple):
    """What :func:`create` made: the pid, its pidfd (or None), and how it was placed."""

    pid: int
    pidfd: int | None
    #: True when CLONE_INTO_CGROUP put the task into the requested cgroup.
    into_cgroup: bool
    #: True when clone3 was used, False after the ENOSYS fallback to clone(2).
    used_clone3: bool


def create(
    fn: Callable[[], Any] | Action,
    flags: int = 0,
    *,
    exit_signal: int = signal.SIGCHLD,
    pidfd: bool = False,
    set_tid: Iterable[int] = (),
    cgroup: CgroupArg = None,
    stack_size: int = 0,
    allow_threads: bool = False,
    cgroup_required: bool = True,
    exec_mask: Iterable[int] | None = None,
) -> Created:
    """:func:`clone3` with a detailed answer; the machinery behind it and :func:`spawn_task`.

    With ``cgroup_required=False`` a fallback to clone(2) drops the cgroup
    instead of refusing (``into_cgroup`` is then False and the caller
    places the task itself, before it runs).  ``exec_mask`` (signal
    numbers) is the mask a CLONE_VM child's :func:`~pyclone.child_exec`
    installs, for a caller that holds signals around the launch; by
    default, the mask at this call.
    """
    global _missing
    if not callable(fn) and not isinstance(fn, Action):
        raise TypeError(f"clone3() argument 'fn' must be callable, not {type(fn).__name__}")
    word = _as_u64(check_flags(flags), "flags")
    tids = _set_tid_list(set_tid)
    if isinstance(stack_size, bool) or not isinstance(stack_size, int):
        raise TypeError(f"stack_size must be an int, not {type(stack_size).__name__}")
    if pidfd:
        word |= int(CloneFlag.PIDFD)

    fd_to_close = -1
    cgroup_fd: int | None = None
    if cgroup is not None:
        if isinstance(cgroup, bool):
            raise TypeError("cgroup must be a descriptor or a path, not a bool")
        if isinstance(cgroup, int):
            cgroup_fd = cgroup
        elif isinstance(cgroup, (str, os.PathLike)):
            fd_to_close = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            cgroup_fd = fd_to_close
        else:
            raise TypeError(
                f"cgroup must be an open descriptor or a path of a cgroup v2 directory, "
                f"not {type(cgroup).__name__}"
            )
        word |= int(CloneFlag.INTO_CGROUP)
    try:
        check_clone3_args(word, exit_signal, len(tids), cgroup_fd if cgroup_fd is not None else 0)
        if not _missing:
            try:
                pid, fd = _pyclone.clone3(
                    fn,
                    word,
                    exit_signal=exit_signal,
                    pidfd=pidfd,
                    set_tid=tids,
                    cgroup=cgroup_fd,
                    stack_size=stack_size,
                    allow_threads=allow_threads,
                    exec_mask=exec_mask,
                )
                return Created(pid, fd, cgroup_fd is not None, True)
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                _missing = True
        if not cgroup_required:
            word &= ~int(CloneFlag.INTO_CGROUP)
            cgroup_fd = None
        return _fallback(
            fn, word, exit_signal, pidfd, tids, cgroup_fd, stack_size, allow_threads, exec_mask
        )
    finally:
        if fd_to_close >= 0:
            os.close(fd_to_close)


# (flags, exit_signal) pairs that passed check_clone3_args with no set_tid
# and no cgroup: the check is a pure function of its arguments.
_CHECKED: set[tuple[int, int]] = set()


def create_plain(
    fn: Callable[[], Any], flags: int, exit_signal: int, allow_threads: bool
) -> tuple[int, int | None]:
    """:func:`create` with ``pidfd=True`` and no set_tid, cgroup or stack: ``(pid, pidfd)``.

    The launch path of :func:`pyclone.spawn_task`: arguments checked once
    per (flags, exit_signal), no :class:`Created` built.
    """
    key = (flags, exit_signal)
    if not _missing and type(flags) is int and type(exit_signal) is int and key in _CHECKED:
        try:
            return _pyclone.clone3(
                fn, flags, exit_signal=exit_signal, pidfd=True, allow_threads=allow_threads
            )
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
    made = create(fn, flags, exit_signal=exit_signal, pidfd=True, allow_threads=allow_threads)
    if made.used_clone3 and type(flags) is int and type(exit_signal) is int:
        _CHECKED.add(key)
    return made.pid, made.pidfd


def _fallback(
    fn: Callable[[], Any] | Action,
    word: int,
    exit_signal: int,
    want_pidfd: bool,
    tids: list[int],
    cgroup_fd: int | None,
    stack_size: int,
    allow_threads: bool,
    exec_mask: Iterable[int] | None = None,
) -> Created:
    """clone(2) in place of a clone3 the kernel reports missing, or a clear refusal."""
    missing = "clone3(2) is missing here (ENOSYS: an old kernel or a seccomp filter)"
    if tids:
        raise UnsupportedFlags(
            f"set_tid needs clone3(2); {missing}, and clone(2) cannot choose the pid. "
            "Drop set_tid, or run where clone3 is allowed"
        )
    if cgroup_fd is not None:
        raise UnsupportedFlags(
            f"CLONE_INTO_CGROUP needs clone3(2); {missing}. Write the pid to the "
            "cgroup's cgroup.procs before the task runs instead "
            "(spawn_task(cgroup=...) does that)"
        )
    only = CloneFlag(word & (int(CLONE3_ONLY_FLAGS) | (_U64 & ~0xFFFFFFFF)))
    if only:
        raise UnsupportedFlags(
            f"{flag_names(only, api='clone3')} needs clone3(2); {missing}, and clone(2) "
            "cannot express it (bits above 31 are dropped, 0x80 is an exit-signal bit). "
            "Drop it, or run where clone3 is allowed"
        )
    is_parent = bool(word & CloneFlag.PARENT)
    if want_pidfd and is_parent:
        raise UnsupportedFlags(
            f"a pidfd for a CLONE_PARENT task needs clone3(2); {missing}, and with "
            "clone(2) its pid could be reaped and reused before pidfd_open. "
            "Drop CLONE_PARENT or the pidfd"
        )
    legacy = (word & ~int(CloneFlag.PIDFD)) | exit_signal
    pid = _pyclone.clone(fn, legacy, stack_size, allow_threads=allow_threads, exec_mask=exec_mask)
    fd: int | None = None
    if want_pidfd:
        # The task is our unreaped child: its pid cannot be reused yet.
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = None  # kernel < 5.3: no pidfd_open either
    return Created(pid, fd, False, False)


def clone3(
    fn: Callable[[], Any] | Action,
    flags: int = 0,
    *,
    exit_signal: int = signal.SIGCHLD,
    pidfd: bool = False,
    set_tid: Iterable[int] = (),
    cgroup: CgroupArg = None,
    stack_size: int = 0,
    allow_threads: bool = False,
    allow_fatal_exit_signal: bool = False,
) -> tuple[int, int | None]:
    """Create a task with clone3(2) running ``fn()``; return ``(pid, pidfd or None)``.

    ``flags`` is the 64-bit ``clone_args.flags`` (no exit signal in it);
    ``exit_signal`` is separate (0 means none: the task is then waited for
    with ``__WALL``).  ``pidfd=True`` adds CLONE_PIDFD and returns the
    descriptor (close-on-exec), which the caller owns.  ``set_tid`` lists
    the pids to use, innermost pid namespace first.  ``cgroup`` is an open
    descriptor or a path of a cgroup v2 directory (adds CLONE_INTO_CGROUP).
    The child runs ``fn()`` as with :func:`pyclone.clone`; ``fn`` may be
    an action (:mod:`pyclone.actions`) instead.

    Arguments the kernel rejects up front raise :class:`CloneArgumentError`
    (``EINVAL``, also a ``ValueError``) naming the rule; other refusals
    come from the kernel with its errno.  On ``ENOSYS`` the call falls back
    to clone(2) when the request fits it (the pidfd then comes from
    pidfd_open, or is None on kernels without it) and raises
    :class:`~pyclone.UnsupportedFlags` when it does not.

    An ``exit_signal`` that would end or stop the caller when the task ends
    (its disposition there is the default, and the default terminates,
    dumps core or stops) raises :class:`ValueError` unless
    ``allow_fatal_exit_signal=True``; see :func:`pyclone.clone`.
    """
    if not isinstance(fn, Action):
        load_child_modules()  # what a Python child may import, before it exists
    if isinstance(flags, int) and not isinstance(flags, bool) and flags >= 0:
        check_exit_signal(
            exit_signal, flags, allow=allow_fatal_exit_signal, signal_steps=signal_steps(fn)
        )
    made = create(
        fn,
        flags,
        exit_signal=exit_signal,
        pidfd=pidfd,
        set_tid=set_tid,
        cgroup=cgroup,
        stack_size=stack_size,
        allow_threads=allow_threads,
    )
    return made.pid, made.pidfd
