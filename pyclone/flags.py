"""Clone flags as an :class:`enum.IntFlag`, with the presets fork and pthread_create use."""

from __future__ import annotations

import enum
import signal
import sys

from . import _pyclone

__all__ = ["FORK_FLAGS", "PTHREAD_FLAGS", "CloneFlag", "flag_names"]

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

# Single-bit members in bit order (CSIGNAL is a mask, not a flag).
_BITS: tuple[CloneFlag, ...] = tuple(
    sorted((m for m in CloneFlag.__members__.values() if m.name != "CSIGNAL"), key=int)
)


def flag_names(flags: int, *, api: str = "clone") -> str:
    """Spell a flags word the way C would: ``"CLONE_VM|CLONE_FS|SIGCHLD"``.

    With ``api="clone"`` the low byte is the exit signal and is written as a
    signal name; with ``api="clone3"`` every bit is a flag.
    """
    value = int(flags)
    parts: list[str] = []
    low = 0
    if api == "clone":
        low = value & int(CloneFlag.CSIGNAL)
        value &= ~int(CloneFlag.CSIGNAL)
    for bit in _BITS:
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
