"""What clone(2)/clone3(2) features this machine offers, found without side effects.

Each probe makes a request the kernel must refuse, and reads the answer from
*which* check refuses it (the order of :data:`pyclone.rules.RULES`): a known
feature fails late (an unwritable pidfd pointer gives EFAULT, a kernel-space
TLS gives EPERM), an unknown one fails early with EINVAL.  No task is
created.  The probes that need a TLS check are x86-64 only; elsewhere they
report None.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
from typing import TypedDict

from . import _pyclone
from .flags import CloneFlag

__all__ = ["Probe", "probe"]


class Probe(TypedDict):
    """What :func:`probe` found: True/False, or None where it cannot be told.

    Each key is described in :func:`probe`.
    """

    kernel: str
    machine: str
    clone3: bool
    pidfd_thread: bool | None
    newtime_clone3: bool
    into_cgroup: bool
    set_tid: bool
    user_namespaces: bool | None
    unprivileged_user_namespaces: bool | None
    kcmp: bool
    pidfd_get_info: bool
    pidfd_info_exit: bool


F = CloneFlag
_SYS_CLONE3 = 435  # the same number on every architecture (unified syscall table)
_BAD_POINTER = 8  # never mapped: the first page is reserved
_KERNEL_TLS = 0xFFFF800000000000  # x86-64: above TASK_SIZE_MAX, so EPERM in copy_thread
_PIDFD_INFO = struct.Struct("<QQ11Ii")
_PIDFD_GET_INFO = (3 << 30) | (_PIDFD_INFO.size << 16) | (0xFF << 8) | 11


class _CloneArgs(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


def _clone3(args: _CloneArgs | None, size: int) -> int:
    """Issue clone3 for a request that must fail; return its errno (0 never expected)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pointer = ctypes.byref(args) if args is not None else None
    result = libc.syscall(_SYS_CLONE3, pointer, ctypes.c_size_t(size))
    if result == 0:  # pragma: no cover - a child, which must not run on
        os._exit(0)
    if result > 0:  # pragma: no cover - the kernel accepted: clean up
        os.waitpid(result, _pyclone.WALL)
        return 0
    return ctypes.get_errno()


def _args(flags: int, **fields: int) -> _CloneArgs:
    args = _CloneArgs()
    args.flags = flags
    for name, value in fields.items():
        setattr(args, name, value)
    return args


def _late_failure(flags: int, *, tls: bool = False) -> int:
    """clone3 with ``flags`` and an unwritable pidfd pointer (and a kernel TLS)."""
    fields = {"pidfd": _BAD_POINTER}
    if tls:
        flags |= int(F.SETTLS)
        fields["tls"] = _KERNEL_TLS
    return _clone3(_args(flags | int(F.PIDFD), **fields), 88)


def _probe_clone3() -> bool:
    return _clone3(None, 0) != errno.ENOSYS


def _probe_pidfd_thread() -> bool | None:
    if platform.machine() != "x86_64":
        return None
    # P14 (EPERM for the TLS) comes after P7, which refused THREAD before 6.9.
    err = _late_failure(int(F.THREAD | F.SIGHAND | F.VM), tls=True)
    return err == errno.EPERM


def _probe_newtime_clone3() -> bool:
    # NEWUSER grants what NEWTIME needs; EFAULT (pidfd) means every flag check passed
    err = _late_failure(int(F.NEWUSER | F.NEWTIME))
    return err not in (errno.EINVAL, errno.ENOSYS)


def _probe_into_cgroup() -> bool:
    err = _clone3(_args(int(F.INTO_CGROUP), cgroup=0x7FFFFFFF), 88)
    return err == errno.EBADF


def _probe_set_tid() -> bool:
    # a NULL set_tid with a size is EINVAL where set_tid exists; E2BIG where size 80 is unknown
    return _clone3(_args(0, set_tid=0, set_tid_size=1), 80) == errno.EINVAL


def _probe_user_namespaces() -> bool | None:
    err = _late_failure(int(F.NEWUSER))
    if err == errno.EFAULT:
        return True
    if err in (errno.EPERM, errno.ENOSPC, errno.EINVAL):
        return False
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _probe_unprivileged_userns() -> bool | None:
    """From the sysctls: may an unprivileged user create a user namespace?"""
    limit = _read_int("/proc/sys/user/max_user_namespaces")
    if limit is None:
        return None
    debian = _read_int("/proc/sys/kernel/unprivileged_userns_clone")
    apparmor = _read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    return limit > 0 and debian != 0 and apparmor != 1


def _probe_kcmp() -> bool:
    me = os.getpid()
    try:
        return _pyclone.kcmp(me, me, _pyclone.KCMP_VM) == 0
    except OSError:
        return False


def _probe_pidfd_info() -> bool:
    try:
        fd = os.pidfd_open(os.getpid())
    except (OSError, AttributeError):
        return False
    try:
        buf = bytearray(_PIDFD_INFO.size)
        fcntl.ioctl(fd, _PIDFD_GET_INFO, buf, True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _kernel_version() -> tuple[int, ...]:
    numbers = []
    for part in os.uname().release.split("-")[0].split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def probe() -> Probe:
    """What this machine offers; True/False, or None where it cannot be told.

    Keys: ``kernel``, ``machine``, ``clone3``, ``pidfd_thread`` (CLONE_PIDFD
    with CLONE_THREAD, 6.9+), ``newtime_clone3`` (CLONE_NEWTIME in clone3,
    6.3+), ``into_cgroup`` (CLONE_INTO_CGROUP, 5.7+), ``set_tid`` (5.5+),
    ``user_namespaces`` (this caller may create one),
    ``unprivileged_user_namespaces`` (the sysctls allow it), ``kcmp``,
    ``pidfd_get_info`` (PIDFD_GET_INFO, 6.13+) and ``pidfd_info_exit``
    (exit status through it, 6.15+; from the kernel version, as telling it
    needs a dead task).
    """
    has_clone3 = _probe_clone3()
    has_info = _probe_pidfd_info()
    return {
        "kernel": os.uname().release,
        "machine": platform.machine(),
        "clone3": has_clone3,
        "pidfd_thread": _probe_pidfd_thread() if has_clone3 else False,
        "newtime_clone3": _probe_newtime_clone3() if has_clone3 else False,
        "into_cgroup": _probe_into_cgroup() if has_clone3 else False,
        "set_tid": _probe_set_tid() if has_clone3 else False,
        "user_namespaces": _probe_user_namespaces() if has_clone3 else None,
        "unprivileged_user_namespaces": _probe_unprivileged_userns(),
        "kcmp": _probe_kcmp(),
        "pidfd_get_info": has_info,
        "pidfd_info_exit": has_info and _kernel_version() >= (6, 15),
    }
