"""Launching tasks: :func:`spawn_task` and the steps behind it.

A callable target runs in a fork-like child that sends its outcome over
a pipe (:mod:`pyclone._transport`), or, with CLONE_VM, on the borrowed
interpreter (:mod:`pyclone.borrowed`); an action target runs the
C-level steps of :mod:`pyclone.actions`.  A launch that needs the
creator to prepare the child first (cgroup membership, time offsets,
``before_start``) holds the child at a gate until that is done.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from . import _pyclone, clone3_api
from ._checks import positional_args
from ._exitsig import check_exit_signal
from ._fd import Fd, close_all, hold_signals, pipe, release_signals
from ._gate import GATE_FAILED_STATUS as GATE_FAILED_STATUS
from ._gate import _gated_child, _number, _prepare_and_open_gate
from ._preload import load as load_child_modules
from ._procfs import write_file
from ._reaper import _active, _cleanup
from ._task import Task
from ._transport import _child_main
from .actions import Action, ActionError, signal_steps
from .borrowed import _spawn_borrowed
from .cgroup import Cgroup
from .errors import UnsupportedFlags
from .flags import CloneFlag, flag_names
from .spec import NewSpec, ShareSpec, resolve_flags

__all__ = ["spawn_task"]

# Flag tests on the spawn path use plain ints: IntFlag arithmetic runs
# Python code in enum.py (microseconds per operation, and pages written
# while the fork child still shares them).
_THREAD = int(CloneFlag.THREAD)
_FILES = int(CloneFlag.FILES)
_VM = int(CloneFlag.VM)
_VM_OR_THREAD = int(CloneFlag.VM | CloneFlag.THREAD)
_THREAD_OR_PARENT = int(CloneFlag.THREAD | CloneFlag.PARENT)
# A thread with none of these starts through _pyclone._spawn_thread (the
# legacy clone, which every kernel has); the others need clone3 or a pidfd.
_NOT_LEGACY_THREAD = ~0xFFFFFFFF | 0xFF | int(CloneFlag.PIDFD)
_SIGCHLD = int(signal.SIGCHLD)

#: The clocks a time namespace can offset (``time_offsets=`` keys).
TIME_CLOCKS = ("monotonic", "boottime")
# KTIME_SEC_MAX: the most seconds whose nanoseconds fit in an s64 (the kernel's ktime_t).
_KTIME_SEC_MAX = ((1 << 63) - 1) // 1_000_000_000


def _check_time_offsets(
    offsets: Mapping[str, float] | None, flags: CloneFlag
) -> list[tuple[str, int, int]]:
    """Validate ``time_offsets=``; return (clock, seconds, nanoseconds) triples."""
    if offsets is None:
        return []
    if not isinstance(offsets, Mapping):
        raise TypeError(
            f"time_offsets must be a mapping of clock name to seconds, not {type(offsets).__name__}"
        )
    if not flags & CloneFlag.NEWTIME:
        raise ValueError(
            "time_offsets needs a new time namespace: add 'time' to new= (CLONE_NEWTIME)"
        )
    result = []
    for clock, value in offsets.items():
        if clock not in TIME_CLOCKS:
            raise ValueError(
                f"unknown clock {clock!r} in time_offsets: a time namespace offsets "
                f"{' and '.join(TIME_CLOCKS)} only"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"time_offsets[{clock!r}] must be seconds as an int or float, "
                f"not {type(value).__name__}"
            )
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"time_offsets[{clock!r}] must be a finite number, not {value!r}")
            seconds = int(value // 1)
            nanoseconds = min(round((value - seconds) * 1e9), 999_999_999)
        else:
            seconds, nanoseconds = int(value), 0
        # The kernel's own range check (kernel/time/namespace.c): seconds within
        # +-KTIME_SEC_MAX, so that the offset in nanoseconds fits an s64.  Checked
        # here because its text parser wraps larger numbers silently first.
        if not -_KTIME_SEC_MAX <= seconds <= _KTIME_SEC_MAX:
            raise ValueError(
                f"time_offsets[{clock!r}] = {value!r} is out of range: a time namespace "
                f"offset is at most {_KTIME_SEC_MAX} seconds either way (its nanoseconds "
                "must fit in a signed 64-bit integer)"
            )
        result.append((clock, seconds, nanoseconds))
    return result


def _write_time_offsets(pid: int, offsets: list[tuple[str, int, int]]) -> None:
    """Write the offsets of the task's unused time namespace; the kernel's errno passes through."""
    text = "".join(f"{clock} {sec} {nsec}\n" for clock, sec, nsec in offsets)
    write_file(f"/proc/{pid}/timens_offsets", text)


def _unshare_time() -> None:
    """In the child: a fresh time namespace for children, whose offsets can still be set.

    The namespace clone3(CLONE_NEWTIME) made is already in use by the
    child, and the kernel freezes offsets at first use (EACCES afterwards).
    """
    _pyclone.unshare(int(CloneFlag.NEWTIME))


def _enter_time_ns() -> None:
    """In the child, after the creator wrote the offsets: move into that namespace."""
    fd = os.open("/proc/self/ns/time_for_children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _pyclone.setns(fd, int(CloneFlag.NEWTIME))
    finally:
        os.close(fd)


_R = TypeVar("_R")


# An action's task gives back its exit status; a callable's, what the callable returns.
@overload
def spawn_task(
    target: Action,
    args: tuple[()] = (),
    kwargs: None = None,
    *,
    share: ShareSpec = "process",
    new: NewSpec = None,
    flags: int = 0,
    exit_signal: int = signal.SIGCHLD,
    allow_threads: bool = False,
    cgroup: None = None,
    set_tid: Iterable[int] = (),
    time_offsets: None = None,
) -> Task[int]: ...
@overload
def spawn_task(
    target: Callable[..., _R],
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    share: ShareSpec = "process",
    new: NewSpec = None,
    flags: int = 0,
    exit_signal: int = signal.SIGCHLD,
    allow_threads: bool = False,
    cgroup: Cgroup | None = None,
    set_tid: Iterable[int] = (),
    time_offsets: Mapping[str, float] | None = None,
) -> Task[_R]: ...
def spawn_task(
    target: Callable[..., Any] | Action,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    share: ShareSpec = "process",
    new: NewSpec = None,
    flags: int = 0,
    exit_signal: int = signal.SIGCHLD,
    allow_threads: bool = False,
    cgroup: Cgroup | None = None,
    set_tid: Iterable[int] = (),
    time_offsets: Mapping[str, float] | None = None,
    allow_fatal_exit_signal: bool = False,
) -> Task[Any]:
    """Create a task running ``target(*args, **kwargs)`` and return its :class:`Task`.

    ``share`` names what the task shares with its creator: a preset
    (``"process"``: no sharing flag, as fork; ``"thread"``; ``"vfork"``)
    or names among ``vm``, ``fs``, ``files``, ``sighand``, ``sysvsem``,
    ``io``, ``thread``, ``parent``.  ``new`` names the namespaces it gets of
    its own (``user``, ``pid``, ``mnt``/``mount``, ``net``, ``uts``,
    ``ipc``, ``cgroup``, ``time``, or ``"all"``).  ``flags`` adds raw bits.

    The task is created with clone3(2) and CLONE_PIDFD, so every wait and
    signal goes through its pidfd (clone(2) and pidfd_open where clone3 is
    missing).  With CLONE_THREAD or CLONE_PARENT the kernel requires exit
    signal 0, and pyclone passes 0 then; any other ``exit_signal`` (0 for
    none) is waited for correctly.  The target's return value comes back
    through :meth:`Task.result`; its exit status is 0, 1 if it raised, or
    the code of a ``SystemExit``.

    ``cgroup`` (a created :class:`pyclone.Cgroup`) starts the task inside
    it: with CLONE_INTO_CGROUP for the cgroup v2 part, and for cgroup v1
    controllers by writing the task to their ``cgroup.procs`` before it
    runs anything.  ``set_tid`` chooses the pid, innermost pid namespace
    first (see clone3(2)).  ``time_offsets`` (with ``new`` including
    ``"time"``) maps ``"monotonic"`` and/or ``"boottime"`` to seconds that
    the task's clocks are shifted by; they are set before it runs.

    ``target`` may also be an action of :mod:`pyclone.actions` (no
    ``args``/``kwargs``), which runs with any flags the kernel accepts,
    ``share="thread"`` included; ``allow_threads``, ``cgroup``,
    ``set_tid`` and ``time_offsets`` do not apply to it.

    An ``exit_signal`` whose arrival would end or stop the caller (its
    disposition here is SIG_DFL and the default terminates, dumps core or
    stops) raises :class:`ValueError` unless ``allow_fatal_exit_signal=True``.
    """
    resolved = resolve_flags(share, new, flags)
    if exit_signal != _SIGCHLD or allow_fatal_exit_signal is not False:
        check_exit_signal(
            exit_signal, resolved, allow=allow_fatal_exit_signal, signal_steps=signal_steps(target)
        )
    if isinstance(target, Action):
        if args or kwargs:
            raise TypeError("an action takes no args or kwargs: they are part of the action")
        if cgroup is not None or tuple(set_tid) or time_offsets:
            raise TypeError("cgroup, set_tid and time_offsets need a callable target")
        return _spawn_action(target, resolved, exit_signal)
    # No object is made here for what the launch does not use: each one is
    # freed after the clone, a write to a page the fork-like child still shares.
    before_start: Callable[[Task], None] | None = None
    prepare: Callable[[], None] | None = None
    enter: Callable[[], None] | None = None
    if time_offsets is not None and (offsets := _check_time_offsets(time_offsets, resolved)):
        prepare, enter = _unshare_time, _enter_time_ns
        before_start = functools.partial(_set_time_offsets, offsets)
    if cgroup is not None:
        if not isinstance(cgroup, Cgroup):
            raise TypeError(f"cgroup must be a pyclone.Cgroup, not {type(cgroup).__name__}")
        cgroup._require_created()
    return _spawn(
        target,
        args,
        kwargs,
        resolved,
        exit_signal=exit_signal,
        allow_threads=allow_threads,
        before_start=before_start,
        set_tid=set_tid,
        cgroup=cgroup,
        child_prepare=prepare,
        child_enter=enter,
    )


def _set_time_offsets(offsets: list[tuple[str, int, int]], task: Task) -> None:
    _write_time_offsets(task.pid, offsets)


def _nothing_to_prepare(task: Task) -> None:
    """The gate's ``before_start`` when only the child prepares (cgroup, child_prepare)."""


#: Set once clone3 answered ENOSYS: later action launches go straight to clone(2).
_clone3_missing = False


def _spawn_action(action: Action, flags: CloneFlag, exit_signal: int, stack_size: int = 0) -> Task:
    """Start an action task: clone3 (clone(2) where it is missing), one Task.

    A process gets a pidfd and is waited for with waitid; a thread
    (CLONE_THREAD) gets none: it is joined through its tid word.  A
    process's launch holds the asynchronous signals until its Task owns
    the pid and pidfd (a handler raising in between would leave a zombie);
    an exec step restores the mask from before the hold.  A thread needs
    no hold: if it is lost, its stack and page are reclaimed once it ends.
    """
    if isinstance(exit_signal, bool) or not isinstance(exit_signal, int):
        raise TypeError(f"exit_signal must be an int, not {type(exit_signal).__name__}")
    bits = int(flags)  # int arithmetic: this path is benchmarked against pthread_create
    if bits & _THREAD_OR_PARENT:
        exit_signal = 0
    if _active:
        _cleanup()
    if bits & _THREAD:
        if bits & _NOT_LEGACY_THREAD:
            pid, _, run = _start_action(action, flags, 0, stack_size, None)
        else:
            pid, run = _pyclone._spawn_thread(action, bits, stack_size)
        return Task._thread(pid, flags if type(flags) is CloneFlag else CloneFlag(flags), run)
    mask = hold_signals()
    try:
        pid, pidfd, run = _start_action(action, flags, exit_signal, stack_size, mask)
        task = _action_task(pid, flags, exit_signal, pidfd, run)
    except BaseException:
        release_signals(mask)
        raise
    return _released(task, mask)


def _start_action(
    action: Action, flags: CloneFlag, exit_signal: int, stack_size: int, mask: set[int] | None
) -> tuple[int, int | None, _pyclone._action_run]:
    """The clone itself: clone3 with a pidfd for a process, clone(2) where clone3 is missing."""
    global _clone3_missing
    bits = int(flags)
    want_pidfd = mask is not None
    if not _clone3_missing and (_pyclone._act_clone3 or bits >> 32):
        try:
            return _pyclone._spawn_action(
                action, bits, exit_signal, want_pidfd, True, stack_size, mask
            )
        except ActionError:
            raise
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _clone3_missing = True
    if flags >> 32 or flags & CloneFlag.NEWTIME:
        raise UnsupportedFlags(
            f"{flag_names(flags, api='clone3')} needs clone3(2), which is missing here "
            "(ENOSYS) or, off x86_64, cannot start an action; drop the clone3-only flags"
        )
    pid, _, run = _pyclone._spawn_action(action, bits, exit_signal, False, False, stack_size, mask)
    pidfd = None
    if want_pidfd:
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(pid)
    return pid, pidfd, run


def _action_task(
    pid: int, flags: CloneFlag, exit_signal: int, pidfd: int | None, run: _pyclone._action_run
) -> Task:
    """The Task of an action, owning its pidfd."""
    owner = None if pidfd is None else Fd(pidfd)
    return Task._create(pid, flags=flags, exit_signal=exit_signal, pidfd=owner, run=run)


def _spawn(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    flags: CloneFlag,
    *,
    exit_signal: int = signal.SIGCHLD,
    allow_threads: bool = False,
    before_start: Callable[[Task], None] | None = None,
    set_tid: Iterable[int] = (),
    cgroup: Cgroup | None = None,
    child_prepare: Callable[[], None] | None = None,
    child_enter: Callable[[], None] | None = None,
    outcome: bool = True,
) -> Task:
    """Create the task; the machinery behind :func:`spawn_task` and its callers.

    With ``before_start``, the child waits (before running any user code)
    until ``before_start(task)`` has returned in the parent: the place to
    write uid maps, time offsets or cgroup membership for the new task.  If
    it raises, the child is killed and reaped and the exception propagates.

    ``child_prepare()`` runs in the child first, and the parent waits for
    it to finish before calling ``before_start`` (an ``OSError`` it raises
    is raised in the parent).  ``child_enter()`` runs in the child after
    the gate, just before the target (its errors come back as the
    target's).  ``cgroup`` is placed as :func:`spawn_task` describes.
    ``outcome=False`` is for a target that never returns and raises only
    what it reports on its own (a sandbox's setup before its exec): the
    modules that send an outcome back are then not loaded for it.
    """
    if not callable(target):
        raise TypeError(f"target must be callable, not {type(target).__name__}")
    if outcome:
        load_child_modules()
    args = positional_args(args)
    kw: Mapping[str, Any] = {} if kwargs is None else kwargs
    if isinstance(exit_signal, bool) or not isinstance(exit_signal, int):
        raise TypeError(f"exit_signal must be an int, not {type(exit_signal).__name__}")
    if int(flags) & _THREAD_OR_PARENT:
        exit_signal = 0
    if _active:
        _cleanup()
    if int(flags) & _VM_OR_THREAD == _VM:
        return _spawn_shared_vm(
            target,
            args,
            kw,
            flags,
            exit_signal,
            before_start,
            set_tid,
            prepared=cgroup is not None or child_prepare is not None,
            child_enter=child_enter,
        )
    if (
        before_start is None
        and cgroup is None
        and child_prepare is None
        and child_enter is None
        and type(set_tid) is tuple
        and not set_tid
    ):
        # The plain launch, inline: no closures, no Created, no extra frames;
        # the fewer objects touched between fork and reap, the fewer
        # copy-on-write faults.
        owned: list[Fd] = []
        mask = hold_signals()
        try:
            rfd, wfd = pipe()
            owned += (rfd, wfd)
            assert wfd.fd is not None
            child_main = functools.partial(_child_main, target, args, kw, wfd.fd, mask)
            pid, pidfd = clone3_api.create_plain(
                child_main, int(flags), int(exit_signal), allow_threads
            )
            task = Task._create(
                pid,
                flags=flags,
                exit_signal=exit_signal,
                pidfd=None if pidfd is None else Fd(pidfd),
                result_fd=rfd,
                kept_fds=_hand_over_fds(flags, [wfd]),
            )
        except BaseException:
            close_all(owned)
            release_signals(mask)
            raise
        return _released(task, mask)
    return _spawn_gated(
        target,
        args,
        kw,
        flags,
        exit_signal=exit_signal,
        allow_threads=allow_threads,
        before_start=before_start,
        set_tid=set_tid,
        cgroup=cgroup,
        child_prepare=child_prepare,
        child_enter=child_enter,
    )


def _create_shared_vm(
    set_tid: Iterable[int],
    exec_mask: set[int],
    fn: Callable[[], Any],
    flags: CloneFlag,
    sig: int,
    allow: bool,
) -> tuple[int, int | None]:
    """The ``create`` step :func:`pyclone.borrowed._spawn_borrowed` calls: clone3 with a pidfd.

    ``exec_mask`` is the mask from before the launch held the signals: the
    one a program the child execs must start with.
    """
    made = clone3_api.create(
        fn,
        int(flags),
        exit_signal=sig,
        pidfd=True,
        set_tid=set_tid,
        allow_threads=allow,
        exec_mask=exec_mask,
    )
    return made.pid, made.pidfd


def _spawn_shared_vm(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kw: Mapping[str, Any],
    flags: CloneFlag,
    exit_signal: int,
    before_start: Callable[[Task], None] | None,
    set_tid: Iterable[int],
    *,
    prepared: bool,
    child_enter: Callable[[], None] | None,
) -> Task:
    """A CLONE_VM (not CLONE_THREAD) task: the callable runs on the borrowed interpreter.

    ``prepared``: the caller asked for a cgroup or a child-side preparation,
    which the borrowed path honours only through a ``before_start`` gate.

    As in the fork-like launch, the asynchronous signals are held from
    before the clone until the pid and pidfd have their owner (the Task),
    so that a handler raising can only do so where nothing is left
    without one.  The child keeps every signal blocked while it runs
    Python (the C layer's doing) and execs with the mask from before the
    hold, handed down as ``exec_mask``.
    """
    if prepared:
        before_start = before_start or _nothing_to_prepare
    mask = hold_signals()
    try:
        pid, pidfd, outcome = _spawn_borrowed(
            target,
            args,
            kw,
            flags,
            exit_signal=exit_signal,
            create=functools.partial(_create_shared_vm, set_tid, mask),
            before_start=before_start,
            child_enter=child_enter,
        )
        task = Task._create(
            pid,
            flags=flags,
            exit_signal=exit_signal,
            pidfd=None if pidfd is None else Fd(pidfd),
            shared_outcome=outcome,
        )
    except BaseException:
        release_signals(mask)
        raise
    return _released(task, mask)


def _released(task: Task, mask: set[int]) -> Task:
    """Let the held signals in; if a handler raises, the new task is killed and reaped later.

    The caller never got the task, so nothing else could wait for it.
    """
    try:
        release_signals(mask)
    except BaseException:
        task._abandon()
        raise
    return task


def _spawn_gated(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kw: Mapping[str, Any],
    flags: CloneFlag,
    *,
    exit_signal: int,
    allow_threads: bool,
    before_start: Callable[[Task], None] | None,
    set_tid: Iterable[int],
    cgroup: Cgroup | None,
    child_prepare: Callable[[], None] | None,
    child_enter: Callable[[], None] | None,
) -> Task:
    """A fork-like task through clone3_api.create: set_tid, a cgroup, a gate or a prepare step."""
    gated = before_start is not None or cgroup is not None or child_prepare is not None
    owned: list[Fd] = []
    mask = hold_signals()
    try:
        rfd, wfd = pipe()
        owned += (rfd, wfd)
        gate_r, gate_w = pipe() if gated else (None, None)
        ready_r, ready_w = pipe() if child_prepare is not None else (None, None)
        owned += [fd for fd in (gate_r, gate_w, ready_r, ready_w) if fd is not None]
        child = _gated_child(
            target, args, kw, _number(wfd), _number(gate_r), _number(ready_w),
            child_prepare, child_enter, mask,
        )  # fmt: skip
        made = clone3_api.create(
            child,
            int(flags),
            exit_signal=exit_signal,
            pidfd=True,
            set_tid=set_tid,
            cgroup=cgroup._v2_fd if cgroup is not None else None,
            allow_threads=allow_threads,
            cgroup_required=False,
        )
        task = Task._create(
            made.pid,
            flags=(flags | CloneFlag.INTO_CGROUP) if made.into_cgroup else flags,
            exit_signal=exit_signal,
            pidfd=None if made.pidfd is None else Fd(made.pidfd),
            result_fd=rfd,
            kept_fds=_hand_over_fds(flags, [fd for fd in (wfd, gate_r, ready_w) if fd is not None]),
        )
    except BaseException:
        close_all(owned)
        release_signals(mask)
        raise
    _released(task, mask)
    if gated:
        assert gate_w is not None
        _prepare_and_open_gate(task, gate_w, ready_r, cgroup, made.into_cgroup, before_start)
    return task


def _hand_over_fds(flags: CloneFlag, child_fds: list[Fd]) -> list[Fd]:
    """Close the child's ends of the pipes here; return those that must stay open.

    With CLONE_FILES there is one fd table: what the child still needs must
    stay open here until the task has been reaped.
    """
    if int(flags) & _FILES:
        return child_fds
    close_all(child_fds)
    return []
