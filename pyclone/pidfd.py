"""Process file descriptors (pidfds): signals that cannot hit a recycled pid; exit status.

A pidfd refers to one task, not to a pid number: once the task has been
reaped, its pid may be handed to a new process, but the pidfd keeps
pointing at the dead task, so :func:`pidfd_send_signal` fails with
``ESRCH`` instead of signalling the newcomer.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct

from . import _pyclone

__all__ = ["pidfd_exit_status", "pidfd_info_available", "pidfd_reaped", "pidfd_send_signal"]

#: ``pidfd_send_signal(pidfd, sig, value=None)``: send ``sig`` through a
#: pidfd; an int ``value`` queues it with ``si_code == SI_QUEUE`` and
#: ``si_value`` set, as sigqueue(3) does (:func:`signal.pidfd_send_signal`
#: cannot carry a value).
pidfd_send_signal = _pyclone.pidfd_send_signal

# PIDFD_GET_INFO (Linux 6.13+) with struct pidfd_info VER0 (64 bytes):
# mask, cgroupid, pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid,
# fsuid, fsgid, exit_code.  The exit code is reported from Linux 6.15 on,
# once the task has been reaped (by whoever its parent is).
_PIDFD_INFO_EXIT = 1 << 3
_PIDFD_INFO = struct.Struct("<QQ11Ii")
_PIDFD_GET_INFO = (3 << 30) | (_PIDFD_INFO.size << 16) | (0xFF << 8) | 11

#: errnos meaning "this kernel has no PIDFD_GET_INFO at all".
_NO_IOCTL = frozenset({errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP})


def _get_info(pidfd: int, mask: int) -> tuple[int, ...]:
    buf = bytearray(_PIDFD_INFO.size)
    _PIDFD_INFO.pack_into(buf, 0, mask, 0, *([0] * 11), 0)
    fcntl.ioctl(pidfd, _PIDFD_GET_INFO, buf, True)
    return _PIDFD_INFO.unpack(buf)


def pidfd_info_available(pidfd: int) -> bool:
    """Does this kernel answer PIDFD_GET_INFO (Linux 6.13+) for ``pidfd``?"""
    try:
        _get_info(pidfd, _PIDFD_INFO_EXIT)
    except OSError as exc:
        return exc.errno not in _NO_IOCTL
    return True


def pidfd_exit_status(pidfd: int) -> int | None:
    """The exit status of the task ``pidfd`` refers to, read with PIDFD_GET_INFO.

    The value is shaped like :attr:`subprocess.Popen.returncode`: the exit
    code, or ``-N`` when signal N killed the task.  None when the kernel
    does not report it: the task is still running or not yet reaped, or
    the kernel is older than 6.15 (which added ``PIDFD_INFO_EXIT``).
    Works when someone else reaps the task (a CLONE_PARENT child, or a
    child auto-reaped because SIGCHLD is ignored).
    """
    try:
        fields = _get_info(pidfd, _PIDFD_INFO_EXIT)
    except OSError:
        return None
    if not fields[0] & _PIDFD_INFO_EXIT:
        return None
    return os.waitstatus_to_exitcode(fields[-1])


def pidfd_reaped(pidfd: int) -> bool:
    """True once the task has been reaped: its pidfd then polls POLLHUP as well as POLLIN."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in poller.poll(0))
