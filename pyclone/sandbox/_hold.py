"""What the sandbox's init holds for the caller while the sandbox runs: lock files, a sync fd.

As in bwrap, ``lock_file`` and ``sync_fd`` give the sandbox an init even without a
pid namespace: the command's exec would drop a POSIX lock (or close a descriptor)
that the caller counts on, so a process that never execs keeps them, and closes
every other descriptor the caller had, so that none of those stays open in it.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct

from .. import _pyclone
from ..flags import CloneFlag
from ._description import Description
from ._status import StepReporter

#: struct flock for a read lock on the whole file (l_type, l_whence, l_start, l_len, l_pid).
_READ_LOCK = struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)


def held_fds(sb: Description) -> tuple[int, ...]:
    """The caller's descriptors the sandbox uses by number (besides ``pass_fds``)."""
    fds = (sb.sync_fd, sb.block_fd, sb.userns, sb.pidns, sb.userns2, sb.userns_block_fd)
    return tuple(fd for fd in fds if fd is not None)


def wants_init(sb: Description) -> bool:
    """Does the sandbox fork an init?  With a pid namespace, or to hold locks or the sync fd."""
    if not sb.init:
        return False
    return bool(sb._flags & CloneFlag.NEWPID or sb.lock_file or sb.sync_fd is not None)


def take_locks(reporter: StepReporter, sb: Description) -> list[int]:
    """Open each lock file (in the sandbox's view) and take a read lock on it; the fds."""
    fds = []
    for path in sb.lock_file:
        with reporter.step(f"lock_file {path}"):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            fds.append(fd)
            fcntl.fcntl(fd, fcntl.F_SETLK, _READ_LOCK)
    return fds


def init_keeps(sb: Description, locks: list[int]) -> set[int]:
    """The descriptors the init keeps open: stdio, the locks and the sync fd."""
    keep = {0, 1, 2, *locks}
    if sb.sync_fd is not None:
        keep.add(sb.sync_fd)
    return keep


def after_fork(sb: Description, locks: list[int]) -> None:
    """In the target, once forked from the init: drop what the init holds.

    Without a pid namespace the init's end does not end the target, so it is
    tied to the init's life (PR_SET_PDEATHSIG) as bwrap ties it.
    """
    for fd in locks:
        os.close(fd)  # not ours: POSIX locks stay with the init that took them
    if sb.sync_fd is not None and sb.sync_fd not in sb.pass_fds:
        os.close(sb.sync_fd)
    if not sb._flags & CloneFlag.NEWPID:
        init = os.getppid()
        _pyclone.prctl(_pyclone.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != init:  # the init died before the prctl took effect
            os._exit(128 + signal.SIGKILL)


def read_to_end(fd: int) -> bytes:
    """All that descriptor ``fd`` holds, read until EOF (it stays open)."""
    chunks: list[bytes] = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def close_except(keep: set[int]) -> None:
    """Close every descriptor but those in ``keep``."""
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, os.sysconf("SC_OPEN_MAX") if low < 65536 else low)
