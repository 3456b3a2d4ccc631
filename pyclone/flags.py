"""Clone flags as an :class:`enum.IntFlag`, with the presets fork and pthread_create use."""

from __future__ import annotations

import enum
import signal
import sys

from . import _pyclone

__all__ = ["FORK_FLAGS", "PTHREAD_FLAGS", "CloneFlag", "check_flags", "flag_names"]

if sys.version_info >= (3, 11):

    class _KeepingIntFlag(enum.IntFlag, boundary=enum.KEEP):
        """An IntFlag that keeps bits it has no member for."""

else:  # 3.10's IntFlag keeps unknown bits already

    class _KeepingIntFlag(enum.IntFlag):
        """An IntFlag that keeps bits it has no member for."""


class CloneFlag(_KeepingIntFlag):
    """The ``CLONE_*`` bits of clone(2)/clone3(2), named without the prefix.

    Unknown bits are kept, so any 64-bit word converts.  In the legacy
    clone(2) word the low byte (:attr:`CSIGNAL`) is the exit signal, so
    ``CloneFlag.VM | signal.SIGCHLD`` is a complete clone(2) flags word.
    """

    CSIGNAL = _pyclone.CSIGNAL
    NEWTIME = _pyclone.CLONE_NEWTIME
    VM = _pyclone.CLONE_VM
    FS = _pyclone.CLONE_FS
    FILES = _pyclone.CLONE_FILES
    SIGHAND = _pyclone.CLONE_SIGHAND
    PIDFD = _pyclone.CLONE_PIDFD
    PTRACE = _pyclone.CLONE_PTRACE
    VFORK = _pyclone.CLONE_VFORK
    PARENT = _pyclone.CLONE_PARENT
    THREAD = _pyclone.CLONE_THREAD
    NEWNS = _pyclone.CLONE_NEWNS
    SYSVSEM = _pyclone.CLONE_SYSVSEM
    SETTLS = _pyclone.CLONE_SETTLS
    PARENT_SETTID = _pyclone.CLONE_PARENT_SETTID
    CHILD_CLEARTID = _pyclone.CLONE_CHILD_CLEARTID
    DETACHED = _pyclone.CLONE_DETACHED
    UNTRACED = _pyclone.CLONE_UNTRACED
    CHILD_SETTID = _pyclone.CLONE_CHILD_SETTID
    NEWCGROUP = _pyclone.CLONE_NEWCGROUP
    NEWUTS = _pyclone.CLONE_NEWUTS
    NEWIPC = _pyclone.CLONE_NEWIPC
    NEWUSER = _pyclone.CLONE_NEWUSER
    NEWPID = _pyclone.CLONE_NEWPID
    NEWNET = _pyclone.CLONE_NEWNET
    IO = _pyclone.CLONE_IO
    CLEAR_SIGHAND = _pyclone.CLONE_CLEAR_SIGHAND

    # 3.10 and 3.11+ spell a composite value differently (member order, the
    # leftover bits); one spelling on every version keeps doctests, logs and
    # hypothesis reports the same: members in bit order, then leftover bits.
    def __repr__(self) -> str:
        value = int(self)
        named = type(self)._value2member_map_.get(value)
        if named is not None and named._name_ and "|" not in named._name_:
            return f"<CloneFlag.{named._name_}: {value}>"
        parts = [str(m._name_) for m in SINGLE_FLAGS if value & int(m)]
        rest = value & ~sum(int(m) for m in SINGLE_FLAGS)
        if rest:
            parts.append(str(rest))
        if not parts or parts == [str(value)]:
            return f"<CloneFlag: {value}>"
        return f"<CloneFlag.{'|'.join(parts)}: {value}>"

    # As on 3.11+, where str() and format() of an IntFlag are the integer's
    # (3.10 formats through str() once __str__ is overridden, so both go).
    __str__ = int.__repr__

    def __format__(self, format_spec: str) -> str:
        return int.__format__(int(self), format_spec)

    INTO_CGROUP = _pyclone.CLONE_INTO_CGROUP


#: What glibc's fork() passes to clone: CLONE_CHILD_SETTID|CLONE_CHILD_CLEARTID|SIGCHLD.
FORK_FLAGS = CloneFlag.CHILD_SETTID | CloneFlag.CHILD_CLEARTID | CloneFlag(signal.SIGCHLD)

#: What glibc's pthread_create() passes to clone.
PTHREAD_FLAGS = (
    CloneFlag.VM
    | CloneFlag.FS
    | CloneFlag.FILES
    | CloneFlag.SYSVSEM
    | CloneFlag.SIGHAND
    | CloneFlag.THREAD
    | CloneFlag.SETTLS
    | CloneFlag.PARENT_SETTID
    | CloneFlag.CHILD_CLEARTID
)

#: Every single-bit member, in bit order: the flags themselves.  Iterate
#: this, never the class: Python 3.10 also yields multi-bit members when the
#: class is iterated (CSIGNAL, the exit-signal mask), 3.11+ do not.
SINGLE_FLAGS: tuple[CloneFlag, ...] = tuple(
    sorted(
        (m for m in CloneFlag.__members__.values() if int(m) and not int(m) & (int(m) - 1)),
        key=int,
    )
)


def check_flags(flags: object, what: str = "flags") -> int:
    """Return ``flags`` as an int, or raise: TypeError for a non-int, ValueError for a negative.

    A flags word is a set of bits: a negative int has infinitely many, and
    would otherwise be read as every flag at once.
    """
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"{what} must be an int, not {type(flags).__name__}")
    if flags < 0:
        raise ValueError(f"{what} must be a non-negative int (a set of bits), not {int(flags)}")
    return int(flags)


def flag_names(flags: int, *, api: str = "clone") -> str:
    """Spell a flags word the way C would: ``"CLONE_VM|CLONE_FS|SIGCHLD"``.

    With ``api="clone"`` the low byte is the exit signal and is written as a
    signal name; with ``api="clone3"`` every bit is a flag.  A negative
    ``flags`` raises :class:`ValueError`.
    """
    if isinstance(flags, int) and not isinstance(flags, bool) and flags < 0:
        raise ValueError(f"flags must be a non-negative int (a set of bits), not {int(flags)}")
    value = int(flags)
    parts: list[str] = []
    low = 0
    if api == "clone":
        low = value & int(CloneFlag.CSIGNAL)
        value &= ~int(CloneFlag.CSIGNAL)
    for bit in SINGLE_FLAGS:
        if value & int(bit):
            parts.append(f"CLONE_{bit.name}")
            value &= ~int(bit)
    if value:
        parts.append(hex(value))
    if low:
        try:
            parts.append(signal.Signals(low).name)
        except ValueError:
            parts.append(f"signal {low}")
    return "|".join(parts) or "0"
