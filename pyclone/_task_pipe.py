"""The reading side of a fork-like task's result pipe: one frame, read as it comes.

Also the general wait's loops that read it while they wait: on the pidfd,
or by pid where there is none.
"""

from __future__ import annotations

import os
import select
import time
from typing import TYPE_CHECKING

from ._fd import Fd
from ._reaper import collect_pid
from ._transport import FRAME, frame_complete, over_limit


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
    _result_fd: Fd | None
    _buffer: bytearray
    # refuse a frame declaring more than this many bytes unread (None: no limit)
    _result_limit: int | None

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

    def _poll_pidfd(self, pidfd: int, deadline: float | None) -> bool:
        """Block until the pidfd is readable (the task ended), reading results meanwhile."""
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if (result_fd := self._result_number()) is not None:
            poller.register(result_fd, select.POLLIN)
        while True:
            if deadline is None:
                events = poller.poll()
            else:
                remaining = max(0.0, deadline - time.monotonic())
                events = poller.poll(remaining * 1000.0)
            if not events:
                return False
            for fd, _ in events:
                if fd == pidfd:
                    return True
                if self._read_result_chunk() is False:
                    poller.unregister(fd)

    def _collect_pid(self, deadline: float | None) -> int | None:
        return collect_pid(self.pid, deadline, self._result_number, self._read_result_chunk)
