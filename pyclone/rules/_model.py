"""The kernel's clone checks as data: :class:`Rule` and :data:`RULES`, in the kernel's order.

C: copy_clone_args_from_user, V: clone3_args_valid, K: kernel_clone,
P: copy_process and what it calls.  The first failing rule decides the errno.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable
from dataclasses import dataclass

from ..flags import CloneFlag
from ._request import _MASK64, Call

F = CloneFlag
#: Flag bits clone3() knows on this kernel (bits 0-33 except the exit-signal byte).
_CLONE3_KNOWN = 0xFFFFFFFF | int(F.CLEAR_SIGHAND) | int(F.INTO_CGROUP)
#: The namespace flags that need CAP_SYS_ADMIN in the new task's user namespace.
_NS_NEEDS_ADMIN = int(F.NEWNS | F.NEWUTS | F.NEWIPC | F.NEWPID | F.NEWNET | F.NEWCGROUP | F.NEWTIME)


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
