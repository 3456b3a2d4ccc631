"""The kernel's validation of clone(2)/clone3(2) flags, as an ordered rule model.

The kernel checks a clone request in a fixed order (copy_clone_args_from_user,
clone3_args_valid, kernel_clone, copy_process, copy_namespaces) and the first
check that fails decides the errno.  :data:`RULES` lists those checks in that
order, as data: each :class:`Rule` has a name, an errno, the kernel function
that makes the check, the version it appeared in, and a predicate.
:func:`predict_errno` walks the list; :func:`explain` says the same in words.

The model covers what the flags, the exit signal and the caller's privilege
decide.  Checks that depend on other inputs (struct size, pointers, stack,
TLS, set_tid, the cgroup descriptor) or on resources (process and namespace
limits, free descriptors, memory) are listed in :data:`RULES` for reference
with ``predicted=False``: the model assumes a well-formed call, as pyclone
makes it, with resources to spare.

pyclone's own refusals (:class:`pyclone.UnsupportedFlags`, a ValueError
raised before any system call) are not kernel rules and are not modelled.
"""

from __future__ import annotations

import argparse
import errno as _errno
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .flags import CloneFlag, flag_names

__all__ = [
    "RULES",
    "CallerState",
    "FlagRow",
    "Rule",
    "add_parser",
    "explain",
    "failing_rule",
    "flag_rows",
    "flag_table",
    "parse_flags",
    "predict_errno",
    "rule_for_errno",
    "rules_table",
]

F = CloneFlag
_MASK64 = (1 << 64) - 1
_CSIGNAL = 0xFF
#: Flag bits clone3() knows on this kernel (bits 0-33 except the exit-signal byte).
_CLONE3_KNOWN = 0xFFFFFFFF | int(F.CLEAR_SIGHAND) | int(F.INTO_CGROUP)
#: The namespace flags that need CAP_SYS_ADMIN in the new task's user namespace.
_NS_NEEDS_ADMIN = int(F.NEWNS | F.NEWUTS | F.NEWIPC | F.NEWPID | F.NEWNET | F.NEWCGROUP | F.NEWTIME)
_CAP_SYS_ADMIN = 21
_CAP_SYS_RESOURCE = 24
_APIS = ("clone", "clone3")


# -- the caller ---------------------------------------------------------------


@dataclass(frozen=True)
class CallerState:
    """What the kernel's checks read about the calling thread besides the flags.

    ``sys_admin``: CAP_SYS_ADMIN in its own user namespace.  ``real_root``:
    real uid 0 of the initial user namespace (the kernel's INIT_USER, exempt
    from RLIMIT_NPROC).  ``sys_resource``: CAP_SYS_RESOURCE.
    ``pid_ns_init``: pid 1 of its pid namespace (init may not use
    CLONE_PARENT).  ``pid_ns_for_children_differs``: after
    ``unshare(CLONE_NEWPID)`` or ``setns()`` to a pid namespace its children
    go elsewhere (no CLONE_THREAD then).  ``chrooted``: its root is not its
    mount namespace's root (no CLONE_NEWUSER); read from mountinfo, where a
    chroot into a directory hides the namespace's root mount, and from
    init's root where that is readable.  ``ids_mapped``: its
    effective uid and gid are mapped in its user namespace (needed to
    create a user namespace).
    """

    sys_admin: bool
    real_root: bool
    sys_resource: bool
    pid_ns_init: bool = False
    pid_ns_for_children_differs: bool = False
    chrooted: bool = False
    ids_mapped: bool = True

    @classmethod
    def privileged(cls) -> CallerState:
        """A root caller with every capability, in an ordinary state."""
        return cls(sys_admin=True, real_root=True, sys_resource=True)

    @classmethod
    def unprivileged(cls) -> CallerState:
        """A non-root caller without capabilities, in an ordinary state."""
        return cls(sys_admin=False, real_root=False, sys_resource=False)

    @classmethod
    def current(cls) -> CallerState:
        """Read the calling thread's state from /proc.

        Where something cannot be read (no /proc, /proc/1 hidden from an
        unprivileged caller) the ordinary state is assumed: capabilities
        absent, not chrooted, ids mapped.
        """
        caps = _read_capeff()
        return cls(
            sys_admin=bool(caps >> _CAP_SYS_ADMIN & 1),
            real_root=os.getuid() == 0 and _initial_user_ns(),
            sys_resource=bool(caps >> _CAP_SYS_RESOURCE & 1),
            pid_ns_init=os.getpid() == 1,
            pid_ns_for_children_differs=_pid_ns_for_children_differs(),
            chrooted=_chrooted(),
            ids_mapped=_ids_mapped(),
        )

    def describe(self) -> str:
        """A short account, e.g. ``"CAP_SYS_ADMIN, real root"``."""
        parts = ["CAP_SYS_ADMIN" if self.sys_admin else "no CAP_SYS_ADMIN"]
        if self.real_root:
            parts.append("real root")
        if self.pid_ns_init:
            parts.append("init of its pid namespace")
        if self.pid_ns_for_children_differs:
            parts.append("children go to another pid namespace")
        if self.chrooted:
            parts.append("chrooted")
        if not self.ids_mapped:
            parts.append("ids unmapped in its user namespace")
        return ", ".join(parts)


class _LiveCaller:
    """The calling thread's state, read from /proc only as far as a rule asks.

    Most requests are decided by the flags alone; reading the whole
    :class:`CallerState` costs a few /proc reads each time.
    """

    @functools.cached_property
    def sys_admin(self) -> bool:
        return bool(_read_capeff() >> _CAP_SYS_ADMIN & 1)

    @functools.cached_property
    def pid_ns_init(self) -> bool:
        return os.getpid() == 1

    @functools.cached_property
    def pid_ns_for_children_differs(self) -> bool:
        return _pid_ns_for_children_differs()

    @functools.cached_property
    def chrooted(self) -> bool:
        return _chrooted()

    @functools.cached_property
    def ids_mapped(self) -> bool:
        return _ids_mapped()

    def describe(self) -> str:
        return CallerState.current().describe()


def _read_capeff() -> int:
    try:
        with open("/proc/thread-self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _read_map(path: str) -> list[tuple[int, int, int]]:
    try:
        with open(path) as f:
            return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in f)]
    except (OSError, ValueError):
        return []


def _initial_user_ns() -> bool:
    return _read_map("/proc/thread-self/uid_map") == [(0, 0, 4294967295)]


def _ids_mapped() -> bool:
    uid_map = _read_map("/proc/thread-self/uid_map")
    gid_map = _read_map("/proc/thread-self/gid_map")
    if not uid_map and not gid_map and not os.path.exists("/proc/thread-self/uid_map"):
        return True  # no /proc: assume the ordinary case
    euid, egid = os.geteuid(), os.getegid()
    return any(lo <= euid < lo + n for lo, _, n in uid_map) and any(
        lo <= egid < lo + n for lo, _, n in gid_map
    )


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _pid_ns_for_children_differs() -> bool:
    active = _ns_id("/proc/thread-self/ns/pid")
    if active is None:
        return False  # no /proc: assume the ordinary case
    # The link cannot be opened while the new namespace has no init yet.
    return _ns_id("/proc/thread-self/ns/pid_for_children") != active


def _chrooted() -> bool:
    # The kernel asks whether the root is its mount namespace's root.  A
    # chroot into a directory hides that mount from mountinfo (its mount
    # point lies outside the new root): no mount is shown at "/".
    try:
        with open("/proc/thread-self/mountinfo") as f:
            points = [line.split()[4] for line in f if len(line.split()) > 4]
    except OSError:
        return False  # no /proc: assume the ordinary case
    if "/" not in points:
        return True
    # Otherwise compare with init's root, when init shares our mount
    # namespace and its root is readable (not for an unprivileged caller).
    mnt = _ns_id("/proc/thread-self/ns/mnt")
    if mnt is None or _ns_id("/proc/1/ns/mnt") != mnt:
        return False
    init_root = _ns_id("/proc/1/root")
    return init_root is not None and _ns_id("/") != init_root


# -- the request --------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One clone request in the form the kernel checks it.

    ``flags`` are the clone3-style flags (for clone(2): the low 32 bits
    without the exit-signal byte), ``exit_signal`` the exit signal, and
    ``caller`` the caller's state.
    """

    api: str
    flags: int
    exit_signal: int
    caller: CallerState | _LiveCaller

    def has(self, flags: int) -> bool:
        """True if every bit of ``flags`` is set."""
        return self.flags & int(flags) == int(flags)

    def any(self, flags: int) -> bool:
        """True if some bit of ``flags`` is set."""
        return bool(self.flags & int(flags))


def _call(
    flags: int,
    api: str,
    exit_signal: int | None,
    privileged: bool | CallerState | None,
) -> Call:
    if api not in _APIS:
        raise ValueError(f"api must be 'clone' or 'clone3', not {api!r}")
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    if not 0 <= flags <= _MASK64:
        raise ValueError(f"flags must fit in 64 unsigned bits, not {flags:#x}")
    if exit_signal is not None and (
        not isinstance(exit_signal, int) or isinstance(exit_signal, bool)
    ):
        raise TypeError(f"exit_signal must be an int or None, not {type(exit_signal).__name__}")
    if api == "clone":
        low = flags & _CSIGNAL
        if exit_signal is None:
            exit_signal = low
        elif not 0 <= exit_signal <= _CSIGNAL:
            raise ValueError(f"clone(2) takes an exit signal of 0-255, not {exit_signal}")
        elif low and low != exit_signal:
            raise ValueError(
                f"flags carry exit signal {low} in their low byte but exit_signal={exit_signal}"
            )
        # The kernel takes the low 32 bits and splits off the exit-signal byte.
        word = flags & 0xFFFFFFFF & ~_CSIGNAL
    else:
        if exit_signal is None:
            exit_signal = int(signal.SIGCHLD)
        elif not 0 <= exit_signal <= _MASK64:
            raise ValueError(f"exit_signal must fit in 64 unsigned bits, not {exit_signal}")
        word = flags
    caller: CallerState | _LiveCaller
    if privileged is None:
        caller = _LiveCaller()
    elif isinstance(privileged, CallerState):
        caller = privileged
    elif privileged is True:
        caller = CallerState.privileged()
    elif privileged is False:
        caller = CallerState.unprivileged()
    else:
        raise TypeError(f"privileged must be None, a bool or a CallerState, not {privileged!r}")
    return Call(api, word, exit_signal, caller)


# -- the rules ----------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One kernel check.

    ``id`` is its place in the kernel's order (C: copy_clone_args_from_user,
    V: clone3_args_valid, K: kernel_clone, P: copy_process and what it
    calls).  ``name`` states the rule; ``errno`` is what the kernel returns
    when it fails; ``apis`` the system calls it applies to; ``function`` the
    kernel function; ``since`` the kernel version; ``flags`` the flags it
    involves; ``predicate`` is true when the check fails (None for checks
    the model does not predict, see ``inputs``); ``repair`` the flags to drop
    so it passes (used by :mod:`pyclone.strategies`).
    """

    id: str
    name: str
    errno: int
    apis: tuple[str, ...]
    function: str
    since: str
    text: str
    flags: int = 0
    predicate: Callable[[Call], bool] | None = None
    repair: int = 0
    inputs: str = ""

    @property
    def predicted(self) -> bool:
        """True if :func:`predict_errno` evaluates this rule."""
        return self.predicate is not None

    @property
    def errno_name(self) -> str:
        """The errno's symbolic name, e.g. ``"EINVAL"``."""
        return _errno.errorcode.get(self.errno, str(self.errno))

    def fails(self, call: Call) -> bool:
        """True if this check rejects ``call``."""
        return self.predicate is not None and call.api in self.apis and bool(self.predicate(call))

    def __repr__(self) -> str:
        return f"<pyclone.rules.Rule {self.id} {self.errno_name}: {self.name}>"


_BOTH = ("clone", "clone3")
_CLONE3 = ("clone3",)
_CLONE = ("clone",)
_NOT_PREDICTED = "not predicted: the model assumes a well-formed call"

#: The kernel's checks, in the kernel's order.  The first failing one decides.
RULES: tuple[Rule, ...] = (
    Rule("C1", "clone3: struct size larger than a page", _errno.E2BIG, _CLONE3,
         "copy_clone_args_from_user", "5.3", "size > PAGE_SIZE",
         inputs="struct size; " + _NOT_PREDICTED),
    Rule("C2", "clone3: struct size smaller than CLONE_ARGS_SIZE_VER0 (64)", _errno.EINVAL,
         _CLONE3, "copy_clone_args_from_user", "5.3", "size < 64",
         inputs="struct size; " + _NOT_PREDICTED),
    Rule("C3", "clone3: unreadable struct, or nonzero bytes past the known fields",
         _errno.EFAULT, _CLONE3, "copy_clone_args_from_user", "5.3",
         "EFAULT for an unreadable struct, E2BIG for unknown nonzero trailing bytes",
         inputs="struct pointer and size; " + _NOT_PREDICTED),
    Rule("C4", "clone3: set_tid_size larger than 32", _errno.EINVAL, _CLONE3,
         "copy_clone_args_from_user", "5.5", "more entries than pid namespace levels",
         inputs="set_tid; " + _NOT_PREDICTED),
    Rule("C5", "clone3: set_tid_size without set_tid", _errno.EINVAL, _CLONE3,
         "copy_clone_args_from_user", "5.5", "set_tid NULL with set_tid_size > 0",
         inputs="set_tid; " + _NOT_PREDICTED),
    Rule("C6", "clone3: set_tid without set_tid_size", _errno.EINVAL, _CLONE3,
         "copy_clone_args_from_user", "5.5", "set_tid given with set_tid_size 0",
         inputs="set_tid; " + _NOT_PREDICTED),
    Rule("C7", "clone3: exit_signal must be 0 or a valid signal (at most 64)", _errno.EINVAL,
         _CLONE3, "copy_clone_args_from_user", "5.3",
         "exit_signal above 0xff or above _NSIG (64) is rejected; clone(2) never checks it",
         predicate=lambda c: c.exit_signal > 64),
    Rule("C8", "clone3: CLONE_INTO_CGROUP needs a struct of at least 88 bytes and a valid fd",
         _errno.EINVAL, _CLONE3, "copy_clone_args_from_user", "5.7",
         "cgroup > INT_MAX or size < CLONE_ARGS_SIZE_VER2", flags=int(F.INTO_CGROUP),
         inputs="cgroup fd and struct size; " + _NOT_PREDICTED),
    Rule("C9", "clone3: set_tid array unreadable", _errno.EFAULT, _CLONE3,
         "copy_clone_args_from_user", "5.5", "comes before every flag check",
         inputs="set_tid pointer; " + _NOT_PREDICTED),
    Rule("V1", "clone3: unknown flag bits (34-63)", _errno.EINVAL, _CLONE3,
         "clone3_args_valid", "5.3",
         "bits this kernel does not know; later kernels may add flags there",
         predicate=lambda c: bool(c.flags & ~_CLONE3_KNOWN & _MASK64),
         repair=_MASK64 & ~_CLONE3_KNOWN),
    Rule("V2", "clone3 rejects CLONE_DETACHED", _errno.EINVAL, _CLONE3,
         "clone3_args_valid", "5.3", "the bit is reserved for reuse", flags=int(F.DETACHED),
         predicate=lambda c: c.any(F.DETACHED), repair=int(F.DETACHED)),
    Rule("V2", "clone3: the exit signal goes in exit_signal, not in flags bits 0x01-0x7f",
         _errno.EINVAL, _CLONE3, "clone3_args_valid", "5.3",
         "CSIGNAL bits in clone3 flags; 0x80 is CLONE_NEWTIME, allowed since 6.3",
         predicate=lambda c: bool(c.flags & 0x7F), repair=0x7F),
    Rule("V3", "CLONE_CLEAR_SIGHAND conflicts with CLONE_SIGHAND", _errno.EINVAL, _CLONE3,
         "clone3_args_valid", "5.5",
         "handlers cannot be both shared and reset", flags=int(F.SIGHAND | F.CLEAR_SIGHAND),
         predicate=lambda c: c.has(F.SIGHAND | F.CLEAR_SIGHAND), repair=int(F.CLEAR_SIGHAND)),
    Rule("V4", "clone3: CLONE_THREAD and CLONE_PARENT require exit_signal 0", _errno.EINVAL,
         _CLONE3, "clone3_args_valid", "5.3",
         "the parent's exit signal applies; clone(2) ignores its low byte here instead",
         flags=int(F.THREAD | F.PARENT),
         predicate=lambda c: c.any(F.THREAD | F.PARENT) and c.exit_signal != 0,
         repair=int(F.THREAD | F.PARENT)),
    Rule("V5", "clone3: stack and stack_size must be both set or both 0", _errno.EINVAL,
         _CLONE3, "clone3_args_valid", "5.5", "and the range must be a user address range",
         inputs="stack, stack_size; " + _NOT_PREDICTED),
    Rule("K1", "clone(2): CLONE_PIDFD and CLONE_PARENT_SETTID share one return slot",
         _errno.EINVAL, _CLONE, "kernel_clone", "5.2",
         "clone(2) returns the pidfd through parent_tid; clone3 has a separate field",
         flags=int(F.PIDFD | F.PARENT_SETTID),
         predicate=lambda c: c.has(F.PIDFD | F.PARENT_SETTID), repair=int(F.PARENT_SETTID)),
    Rule("P1", "CLONE_NEWNS conflicts with CLONE_FS", _errno.EINVAL, _BOTH,
         "copy_process", "2.4.19", "a new mount namespace cannot share root and cwd",
         flags=int(F.NEWNS | F.FS), predicate=lambda c: c.has(F.NEWNS | F.FS),
         repair=int(F.FS)),
    Rule("P2", "CLONE_NEWUSER conflicts with CLONE_FS", _errno.EINVAL, _BOTH,
         "copy_process", "3.9", "a new user namespace cannot share root and cwd",
         flags=int(F.NEWUSER | F.FS), predicate=lambda c: c.has(F.NEWUSER | F.FS),
         repair=int(F.FS)),
    Rule("P3", "CLONE_THREAD requires CLONE_SIGHAND", _errno.EINVAL, _BOTH,
         "copy_process", "2.5.35", "threads share signal handlers",
         flags=int(F.THREAD | F.SIGHAND),
         predicate=lambda c: c.any(F.THREAD) and not c.any(F.SIGHAND), repair=int(F.THREAD)),
    Rule("P4", "CLONE_SIGHAND requires CLONE_VM", _errno.EINVAL, _BOTH,
         "copy_process", "2.6.0", "shared handlers must live in shared memory",
         flags=int(F.SIGHAND | F.VM),
         predicate=lambda c: c.any(F.SIGHAND) and not c.any(F.VM), repair=int(F.SIGHAND)),
    Rule("P5", "CLONE_PARENT is refused to an init process", _errno.EINVAL, _BOTH,
         "copy_process", "2.6.32",
         "global init and pid-namespace inits (SIGNAL_UNKILLABLE) have no parent to share",
         flags=int(F.PARENT),
         predicate=lambda c: c.any(F.PARENT) and c.caller.pid_ns_init, repair=int(F.PARENT)),
    Rule("P6", "CLONE_THREAD conflicts with CLONE_NEWUSER", _errno.EINVAL, _BOTH,
         "copy_process", "3.12", "a thread cannot be in another user namespace",
         flags=int(F.THREAD | F.NEWUSER), predicate=lambda c: c.has(F.THREAD | F.NEWUSER),
         repair=int(F.THREAD)),
    Rule("P6", "CLONE_THREAD conflicts with CLONE_NEWPID", _errno.EINVAL, _BOTH,
         "copy_process", "3.12", "a thread cannot be in another pid namespace",
         flags=int(F.THREAD | F.NEWPID), predicate=lambda c: c.has(F.THREAD | F.NEWPID),
         repair=int(F.THREAD)),
    Rule("P6", "CLONE_THREAD is refused after unshare(CLONE_NEWPID) or setns to a pid ns",
         _errno.EINVAL, _BOTH, "copy_process", "3.12",
         "the caller's children would go to another pid namespace",
         flags=int(F.THREAD),
         predicate=lambda c: c.any(F.THREAD) and c.caller.pid_ns_for_children_differs,
         repair=int(F.THREAD)),
    Rule("P7", "CLONE_PIDFD conflicts with CLONE_DETACHED", _errno.EINVAL, _BOTH,
         "copy_process", "5.2",
         "before 6.9 CLONE_PIDFD also refused CLONE_THREAD",
         flags=int(F.PIDFD | F.DETACHED), predicate=lambda c: c.has(F.PIDFD | F.DETACHED),
         repair=int(F.DETACHED)),
    Rule("P8", "CLONE_NEWUSER is refused to a chrooted caller", _errno.EPERM, _BOTH,
         "create_user_ns", "3.9", "checked after the namespace-count limits (ENOSPC)",
         flags=int(F.NEWUSER), predicate=lambda c: c.any(F.NEWUSER) and c.caller.chrooted,
         repair=int(F.NEWUSER)),
    Rule("P8", "CLONE_NEWUSER needs the caller's euid and egid mapped", _errno.EPERM, _BOTH,
         "create_user_ns", "3.8", "the new namespace's owner must exist in the parent",
         flags=int(F.NEWUSER),
         predicate=lambda c: c.any(F.NEWUSER) and not c.caller.ids_mapped,
         repair=int(F.NEWUSER)),
    Rule("P9", "RLIMIT_NPROC reached (real root, CAP_SYS_RESOURCE, CAP_SYS_ADMIN exempt)",
         _errno.EAGAIN, _BOTH, "copy_process", "-", "a resource limit",
         inputs="process counts; not predicted"),
    Rule("P10", "threads-max reached", _errno.EAGAIN, _BOTH, "copy_process", "-",
         "a system-wide limit", inputs="process counts; not predicted"),
    Rule("P11", "new namespaces need CAP_SYS_ADMIN (or CLONE_NEWUSER with them)",
         _errno.EPERM, _BOTH, "copy_namespaces", "2.4.19",
         "checked against the new task's user namespace, so CLONE_NEWUSER grants it",
         flags=_NS_NEEDS_ADMIN,
         predicate=lambda c: (
             c.any(_NS_NEEDS_ADMIN) and not c.any(F.NEWUSER) and not c.caller.sys_admin
         ),
         repair=_NS_NEEDS_ADMIN),
    Rule("P12", "CLONE_NEWIPC conflicts with CLONE_SYSVSEM", _errno.EINVAL, _BOTH,
         "copy_namespaces", "2.6.19",
         "a semaphore undo list cannot span IPC namespaces; checked after P11",
         flags=int(F.NEWIPC | F.SYSVSEM), predicate=lambda c: c.has(F.NEWIPC | F.SYSVSEM),
         repair=int(F.SYSVSEM)),
    Rule("P13", "namespace limits: user.max_*_namespaces, nesting depth 32", _errno.ENOSPC,
         _BOTH, "copy_namespaces", "4.9", "resource limits",
         inputs="namespace counts; not predicted"),
    Rule("P14", "CLONE_SETTLS with a TLS outside user space (x86-64)", _errno.EPERM, _BOTH,
         "copy_thread", "2.5.32", "architecture-specific", flags=int(F.SETTLS),
         inputs="tls; " + _NOT_PREDICTED),
    Rule("P15", "set_tid: wrong size, out of range, in use or not permitted", _errno.EINVAL,
         _CLONE3, "alloc_pid", "5.5", "also EPERM (no CAP_CHECKPOINT_RESTORE), EEXIST",
         inputs="set_tid; " + _NOT_PREDICTED),
    Rule("P16", "CLONE_PIDFD: no free descriptor, or the pidfd pointer is unwritable",
         _errno.EMFILE, _BOTH, "copy_process", "5.2", "also EFAULT",
         flags=int(F.PIDFD), inputs="descriptors, pointers; not predicted"),
    Rule("P17", "CLONE_INTO_CGROUP: the descriptor is not a usable cgroup2 directory",
         _errno.EBADF, _CLONE3, "cgroup_can_fork", "5.7",
         "also EACCES, EOPNOTSUPP, ENODEV, EBUSY, EAGAIN", flags=int(F.INTO_CGROUP),
         inputs="cgroup fd; not predicted (a valid, writable cgroup2 fd is assumed)"),
    Rule("P18", "a fatal signal is pending", _errno.EINTR, _BOTH, "copy_process", "-",
         "not seen by the caller, which is being killed", inputs="signals; not predicted"),
)  # fmt: skip


def _check_rules() -> None:
    assert all(rule.apis for rule in RULES)


_check_rules()

_PREDICTED: tuple[Rule, ...] = tuple(rule for rule in RULES if rule.predicted)


def failing_rule(
    flags: int,
    *,
    api: str = "clone",
    exit_signal: int | None = None,
    privileged: bool | CallerState | None = None,
) -> Rule | None:
    """The first kernel check that rejects this request, or None if it passes.

    Arguments as for :func:`predict_errno`.
    """
    call = _call(flags, api, exit_signal, privileged)
    return _first_failure(call)


def _first_failure(call: Call) -> Rule | None:
    for rule in _PREDICTED:
        if rule.fails(call):
            return rule
    return None


def predict_errno(
    flags: int,
    *,
    api: str = "clone",
    exit_signal: int | None = None,
    privileged: bool | CallerState | None = None,
) -> int:
    """The errno the kernel returns for this request, or 0 if it would accept it.

    ``api="clone"``: ``flags`` is the clone(2) word, exit signal in its low
    byte (or given as ``exit_signal``); the kernel ignores the upper 32
    bits.  ``api="clone3"``: ``flags`` is the 64-bit clone_args.flags and
    ``exit_signal`` is separate (None means SIGCHLD).  ``privileged=None``
    reads the calling thread's state (:meth:`CallerState.current`);
    True/False assume a root caller with every capability / an unprivileged
    one without any; a :class:`CallerState` is taken as given.

    >>> from pyclone import CloneFlag as F
    >>> predict_errno(F.SIGHAND)
    22
    >>> predict_errno(F.NEWNET, privileged=False)
    1
    >>> predict_errno(F.NEWUSER | F.NEWNET, privileged=False)
    0
    """
    rule = failing_rule(flags, api=api, exit_signal=exit_signal, privileged=privileged)
    return 0 if rule is None else rule.errno


def rule_for_errno(err: int, flags: int, *, api: str, exit_signal: int | None) -> str | None:
    """The name of the rule that explains ``err`` for this request, or None.

    Used to word the :class:`OSError` that :func:`pyclone.clone` raises: the
    model is asked with the caller's real state, and its rule is named only
    when it predicts exactly this errno.  Never raises.
    """
    try:
        rule = failing_rule(flags, api=api, exit_signal=exit_signal)
    except Exception:
        return None
    if rule is None or rule.errno != err:
        return None
    return rule.name


# -- explaining -----------------------------------------------------------------

#: What each flag makes the new task share or get, and which API offers it.
_EFFECTS: dict[CloneFlag, tuple[str, str, str]] = {
    F.NEWTIME: ("new time namespace", "clone3", "5.6 (clone3: 6.3)"),
    F.VM: ("shares the address space", "both", "2.0"),
    F.FS: ("shares root, cwd and umask", "both", "2.0"),
    F.FILES: ("shares the descriptor table", "both", "2.0"),
    F.SIGHAND: ("shares the signal handlers", "both", "2.0"),
    F.PIDFD: ("returns a pidfd for the task", "both", "5.2"),
    F.PTRACE: ("traced too if the creator is", "both", "2.2"),
    F.VFORK: ("creator waits for exec or exit", "both", "2.2"),
    F.PARENT: ("shares the creator's parent", "both", "2.3.12"),
    F.THREAD: ("joins the creator's thread group", "both", "2.4.0"),
    F.NEWNS: ("new mount namespace", "both", "2.4.19"),
    F.SYSVSEM: ("shares the SysV semaphore undo list", "both", "2.5.10"),
    F.SETTLS: ("gets a new TLS (thread pointer)", "both", "2.5.32"),
    F.PARENT_SETTID: ("tid stored in the creator's memory", "both", "2.5.49"),
    F.CHILD_CLEARTID: ("tid cleared and futex woken at exit", "both", "2.5.49"),
    F.DETACHED: ("ignored (historical); clone3 rejects it", "clone", "2.5 (no effect since 2.6.2)"),
    F.UNTRACED: ("cannot be forced under ptrace", "both", "2.5.46"),
    F.CHILD_SETTID: ("tid stored in the task's memory", "both", "2.5.49"),
    F.NEWCGROUP: ("new cgroup namespace", "both", "4.6"),
    F.NEWUTS: ("new UTS namespace", "both", "2.6.19"),
    F.NEWIPC: ("new IPC namespace", "both", "2.6.19"),
    F.NEWUSER: ("new user namespace", "both", "2.6.23 (unprivileged: 3.8)"),
    F.NEWPID: ("new pid namespace (task is its pid 1)", "both", "2.6.24"),
    F.NEWNET: ("new network namespace", "both", "2.6.24"),
    F.IO: ("shares the I/O context", "both", "2.6.25"),
    F.CLEAR_SIGHAND: ("handled signals reset to default", "clone3", "5.5"),
    F.INTO_CGROUP: ("starts in the cgroup given by fd", "clone3", "5.7"),
}


def _signal_name(sig: int) -> str:
    if sig == 0:
        return "0 (no signal)"
    try:
        return f"{signal.Signals(sig).name} ({sig})"
    except ValueError:
        return str(sig)


def explain(
    flags: int,
    *,
    api: str = "clone",
    exit_signal: int | None = None,
    privileged: bool | CallerState | None = None,
) -> str:
    """Say in words what the request asks for and whether the kernel accepts it.

    One line per flag (what it shares or creates), the exit signal, and the
    verdict: the rule that rejects the request, with its errno, or that the
    kernel would accept it.  Arguments as for :func:`predict_errno`.

    >>> from pyclone import CloneFlag as F
    >>> print(explain(F.SIGHAND | 17, privileged=True))
    clone(CLONE_SIGHAND, exit_signal=17) by a privileged caller:
      CLONE_SIGHAND: shares the signal handlers
      exit signal: SIGCHLD (17)
    rejected: EINVAL (Invalid argument): CLONE_SIGHAND requires CLONE_VM [P4, ...]
    """
    call = _call(flags, api, exit_signal, privileged)
    if privileged is None:
        who = f"this caller ({call.caller.describe()})"
    elif privileged is True:
        who = "a privileged caller"
    elif privileged is False:
        who = "an unprivileged caller"
    else:
        who = f"a caller with {call.caller.describe()}"
    spelled = flag_names(call.flags, api="clone3")
    lines = [f"{api}({spelled}, exit_signal={call.exit_signal}) by {who}:"]
    for bit in CloneFlag:
        if call.flags & int(bit):
            effect, where, _ = _EFFECTS[bit]
            note = " [clone3 only]" if where == "clone3" else ""
            lines.append(f"  CLONE_{bit.name}: {effect}{note}")
    unknown = call.flags & ~_CLONE3_KNOWN & _MASK64
    if unknown:
        lines.append(f"  {unknown:#x}: bits unknown to this model")
    if api == "clone" and flags >> 32:
        lines.append(f"  {flags >> 32 << 32:#x}: ignored, clone(2) keeps only the low 32 bits")
    ignored = " (the low byte is ignored)" if api == "clone" else ""
    if call.any(F.THREAD):
        lines.append(f"  exit signal: none, a thread is not waited for{ignored}")
    elif call.any(F.PARENT):
        lines.append(f"  exit signal: the creator's own, sent to the creator's parent{ignored}")
    elif 0 < call.exit_signal <= 64:
        lines.append(f"  exit signal: {_signal_name(call.exit_signal)}")
    elif call.exit_signal == 0:
        lines.append("  exit signal: none (wait with __WALL)")
    elif api == "clone":
        lines.append(
            f"  exit signal: {call.exit_signal} is not a signal: none is sent (wait with __WALL)"
        )
    rule = _first_failure(call)
    if rule is None:
        lines.append("accepted: the kernel would create the task")
    else:
        lines.append(
            f"rejected: {rule.errno_name} ({os.strerror(rule.errno)}): {rule.name} "
            f"[{rule.id}, {rule.function}, since {rule.since}]"
        )
    return "\n".join(lines)


# -- tables for the documentation --------------------------------------------------


@dataclass(frozen=True)
class FlagRow:
    """One row of the flag table: a flag, what it does, and the rules on it."""

    name: str
    value: int
    effect: str
    api: str
    constraints: tuple[str, ...]
    since: str


def flag_rows() -> Iterator[FlagRow]:
    """One :class:`FlagRow` per :class:`CloneFlag`, in bit order.

    ``constraints`` are the ids of the predicted rules that involve the flag.
    """
    for bit in CloneFlag:
        effect, where, since = _EFFECTS[bit]
        api = {"both": "clone, clone3", "clone3": "clone3", "clone": "clone"}[where]
        ids: list[str] = []
        for rule in _PREDICTED:
            if rule.flags & int(bit) and rule.id not in ids:
                ids.append(rule.id)
        yield FlagRow(f"CLONE_{bit.name}", int(bit), effect, api, tuple(ids), since)


def _format(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)
    out = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)).rstrip(), rule]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows[1:]
    ]
    out.append(rule)
    return "\n".join(out)


def flag_table() -> str:
    """The flag table as text (a reStructuredText simple table)."""
    rows: list[tuple[str, ...]] = [("flag", "value", "effect", "API", "rules", "since")]
    for r in flag_rows():
        rows.append(
            (r.name, f"{r.value:#x}", r.effect, r.api, ", ".join(r.constraints) or "-", r.since)
        )
    return _format(rows)


def rules_table(*, predicted_only: bool = False) -> str:
    """The rules in the kernel's order as text (a reStructuredText simple table)."""
    rows: list[tuple[str, ...]] = [("id", "errno", "API", "rule", "since")]
    for rule in RULES:
        if predicted_only and not rule.predicted:
            continue
        api = "both" if rule.apis == _BOTH else rule.apis[0]
        name = rule.name if rule.predicted else f"({rule.name})"
        rows.append((rule.id, rule.errno_name, api, name, rule.since))
    return _format(rows)


# -- command line -----------------------------------------------------------------


def _parse_signal(text: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit() or text.lower().startswith("0x"):
        return int(text, 0)
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None


def parse_flags(text: str) -> tuple[int, int | None]:
    """Parse ``"VM,SIGHAND"``, ``"CLONE_VM|CLONE_FS|SIGCHLD"`` or a number.

    Returns ``(flags, exit_signal)``: names with or without ``CLONE_``,
    numbers (``0x100``, ``256``), separated by commas, ``|`` or spaces; a
    signal name (``SIGCHLD``) gives the exit signal (None if there is none).
    """
    flags = 0
    exit_signal: int | None = None
    for part in text.replace("|", ",").replace(" ", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if part[0].isdigit():
            flags |= int(part, 0)
            continue
        name = part.upper()
        name = name[len("CLONE_") :] if name.startswith("CLONE_") else name
        if name in CloneFlag.__members__:
            flags |= int(CloneFlag[name])
        elif name.startswith("SIG"):
            exit_signal = _parse_signal(name)
        else:
            known = ", ".join(str(m.name) for m in CloneFlag)
            raise ValueError(f"unknown flag {part!r}: known flags are {known}")
    return flags, exit_signal


def _run(args: argparse.Namespace) -> int:
    try:
        flags, named_signal = parse_flags(" ".join(args.flags))
        exit_signal = named_signal
        if args.exit_signal is not None:
            exit_signal = _parse_signal(args.exit_signal)
        if args.api == "clone" and exit_signal is None:
            exit_signal = (flags & _CSIGNAL) or int(signal.SIGCHLD)
        privileged: bool | None = {"auto": None, "root": True, "user": False}[args.caller]
        text = explain(flags, api=args.api, exit_signal=exit_signal, privileged=privileged)
        rule = failing_rule(flags, api=args.api, exit_signal=exit_signal, privileged=privileged)
    except (ValueError, TypeError) as exc:
        print(f"python -m pyclone explain: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0 if rule is None else 1


def add_parser(sub: Any) -> None:
    """Register the ``explain`` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "explain",
        help="say what a flag set does and whether the kernel accepts it",
        description="Explain a clone flag set: what each flag shares or creates, and "
        "the kernel rule that rejects it, if any.  Exit status 0 if the kernel would "
        "accept it, 1 if not.",
    )
    parser.add_argument(
        "flags",
        nargs="+",
        help="flag names with or without CLONE_ (VM,SIGHAND or CLONE_VM|CLONE_FS), "
        "or a number; a signal name sets the exit signal",
    )
    parser.add_argument("--api", choices=_APIS, default="clone", help="default: clone")
    parser.add_argument("--exit-signal", help="exit signal, a number or a name (default: SIGCHLD)")
    parser.add_argument(
        "--caller",
        choices=("auto", "root", "user"),
        default="auto",
        help="whose privileges: this process (auto), root with every capability, "
        "or an unprivileged user",
    )
    parser.set_defaults(func=_run)
