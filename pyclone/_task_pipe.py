"""The reading side of a fork-like task's result pipe: one frame, read as it comes.

Also the waits that read it while they wait: the common one (a single C
call that reaps too), and the general wait's loops, on the pidfd or by pid
where there is none.
"""

from __future__ import annotations

import os
import select
import time
from typing import TYPE_CHECKING

from ._fd import Fd
from ._pyclone import CLONE_PARENT as _PARENT
from ._pyclone import _await_exit
from ._reaper import collect_pid
from ._transport import FRAME, frame_complete, over_limit

# What the C wait is given as the buffer of a task without a result pipe: never written.
_NO_FRAME = bytearray()


class ResultPipe:
    """What :class:`pyclone.Task` does with its result pipe: read one frame, then close it.

    The child writes one frame (see :mod:`pyclone._transport`); the reader
    keeps its bytes in ``_buffer`` until the task has been collected.
    """

    if not TYPE_CHECKING:
        # No dict of its own (Task has its slots); hidden from mypy, which
        # would take an empty list for "no attributes at all".
        __slots__ = ()

    pid: int
    flags: int
    ended: bool
    _pidfd: Fd | None
    _run: object | None
    _result_fd: Fd | None
    _buffer: bytearray
    # refuse a frame declaring more than this many bytes unread (None: no limit)
    _result_limit: int | None

    if TYPE_CHECKING:

        def _finish(self, code: int | None) -> None: ...  # Task's: record the end, close fds

    def _result_number(self) -> int | None:
        owner = self._result_fd
        return None if owner is None else owner.fd

    def _read_result_chunk(self) -> bool:
        """Read what is available; False at end of file or a complete frame."""
        result_fd = self._result_number()
        if result_fd is None:
            return False
        try:
            data = os.read(result_fd, 1 << 16)
        except BlockingIOError:
            return True
        if data and self._take_result_data(data):
            return True
        if not data or self._result_refused():
            self._close_result_fd()
        return False

    def _take_result_data(self, data: bytes) -> bool:
        """Keep ``data`` of the frame; False once there is nothing more to read.

        A frame declaring more than the task's result limit is not read on:
        its header is kept (result() reports the size), and the reader
        closes the pipe (see :meth:`_result_refused`), so a sender that goes
        on writing gets EPIPE instead of blocking on a full pipe.
        """
        self._buffer += data
        if over_limit(self._buffer, self._result_limit):
            del self._buffer[FRAME.size :]
            return False
        return not frame_complete(self._buffer)

    def _result_refused(self) -> bool:
        return over_limit(self._buffer, self._result_limit)

    def _drain_result(self) -> None:
        result_fd = self._result_number()
        if result_fd is None or frame_complete(self._buffer):
            return  # the child sends one frame: nothing more to read
        os.set_blocking(result_fd, False)
        while not frame_complete(self._buffer) and self._read_result_chunk():
            if (result_fd := self._result_number()) is None:
                break
            try:
                more = select.select([result_fd], [], [], 0)[0]
            except (OSError, ValueError):
                break
            if not more:
                break

    def _close_result_fd(self) -> None:
        owner = self._result_fd
        if owner is not None:
            self._result_fd = None
            owner.close()

    def _await_piped(self, timeout: float | None) -> bool | None:
        """Wait up to ``timeout`` seconds for a task this process reaps, reading its result pipe.

        One C call polls, reads the frame and reaps: every Python object
        touched while a fork-like child lives costs a copy-on-write fault,
        so the common wait touches as few as it can.  True once collected,
        False if the time ran out; None (nothing done but the reading)
        where it does not apply or the kernel has no status for us:
        :meth:`_wait` takes over then.

        The C call is given the descriptors' owners, not their numbers: if a
        signal handler ran, it returns and this looks again, since the
        handler may have collected the task (a wait of its own) and new
        descriptors may have taken the old numbers.
        """
        owner = self._pidfd
        if owner is None or self._run is not None or int(self.flags) & _PARENT:
            return None
        limit = -1 if self._result_limit is None else self._result_limit
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            rfd = self._result_fd
            if rfd is None:
                got = _await_exit(owner, -1, _NO_FRAME, limit, left)
            else:
                got = _await_exit(owner, rfd, self._buffer, limit, left)
            if got is None:  # signal handlers ran (or the owner is closed)
                if self.ended:
                    return True
                if owner.fd is None:
                    return None  # closed, yet not collected here: the general wait decides
                continue
            ended, code, close = got
            if not close:
                break
            # a refused frame or end of file: closed now, so that a sender
            # blocked on the full pipe gets EPIPE; then the wait goes on
            self._close_result_fd()
            if ended:
                break
        if not ended:
            return False
        if code is None:
            return None  # reaped by the kernel (SIGCHLD ignored): _wait asks the parent
        self._finish(code)
        return True

    def _poll_pidfd(self, deadline: float | None) -> bool:
        """Block until the task has ended (its pidfd readable), reading results meanwhile.

        True once it has ended (or a signal handler's wait collected it),
        False when the deadline passed.  Nothing is reaped.  The C call
        takes the descriptors' owners and returns whenever signal handlers
        ran, so no number is used after a handler could have closed it.
        """
        limit = -1 if self._result_limit is None else self._result_limit
        while True:
            owner = self._pidfd
            if owner is None or owner.fd is None or self.ended:
                return True  # collected (by a signal handler's wait, say): nothing to poll
            left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            rfd = self._result_fd
            if rfd is None:
                got = _await_exit(owner, -1, _NO_FRAME, limit, left, False)
            else:
                got = _await_exit(owner, rfd, self._buffer, limit, left, False)
            if got is None:  # signal handlers ran: look again
                continue
            ended, _, close = got
            if close:
                self._close_result_fd()
                if not ended:
                    continue
            return ended

    def _collect_pid(self, deadline: float | None) -> int | None:
        return collect_pid(self.pid, deadline, self._result_number, self._read_result_chunk)
