"""Collecting a task's exit status, and the list of dropped tasks still to be reaped.

Reaping goes through the pidfd (waitid ``P_PIDFD``), through the pid on
kernels without pidfds, or -- for a task someone else reaps (CLONE_PARENT,
SIGCHLD ignored) -- by asking the pidfd for the status that reaper left.
A :class:`pyclone.Task` dropped while still running lands in
:data:`_active`, and the next launch reaps whatever of it has ended, so
no zombie stays; a Task freed with no chance to put itself there (a
handler raised as its ``__del__`` began) leaves its :class:`TaskRemains`.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from . import _pyclone
from ._fd import Fd
from .pidfd import pidfd_exit_status, pidfd_info_available, pidfd_reaped

_WALL: int = _pyclone.WALL
_CANCELLED: int = _pyclone._act_cancelled
_EXITED: int = _pyclone._act_exited
_FAILED: int = _pyclone._act_failed


class _Reapable(Protocol):
    """What the deferred reaping needs of a task (a :class:`pyclone.Task`)."""

    @property
    def ended(self) -> bool: ...

    def poll(self) -> int | None: ...

    def close(self) -> None: ...


#: Tasks that were garbage-collected while still running; reaped later.
_active: list[_Reapable] = []


#: The callback of every TaskRemains: list.append, a C function, so that
#: nothing runs between a Task's death and its remains being on the list.
_adopt: Callable[[Any], None] = _active.append


class TaskRemains(weakref.ref[Any]):
    """A weak reference to a process Task that puts its pidfd on :data:`_active` when it dies.

    ``Task.__del__`` puts a Task that was never collected on the reaper list,
    but it is Python code: a signal handler can raise before its first line,
    and the Task would be freed, its pidfd closed and the child left a zombie.
    This reference's callback runs no Python code (:data:`_adopt`), so the
    remains always get there; a collected Task drops its reference first,
    which then never calls back.
    """

    __slots__ = ("_pidfd", "ended")

    _pidfd: Fd
    ended: bool

    def __new__(cls, task: object, pidfd: Fd) -> TaskRemains:
        self = super().__new__(cls, task, _adopt)
        self._pidfd = pidfd
        self.ended = False
        return self

    def poll(self) -> int | None:
        """Reap the child if it has ended (never blocks); the status has nobody to go to."""
        fd = self._pidfd.fd
        if fd is None:
            self.ended = True  # the Task was collected after all
            return None
        try:
            self.ended = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG | _WALL) is not None
        except ChildProcessError:
            self.ended = True  # reaped by someone else (SIGCHLD ignored)
        return None

    def close(self) -> None:
        self._pidfd.close()


def _cleanup() -> None:
    """Reap and close the dropped tasks that have ended since.

    Each step leaves the list consistent if an interrupt stops it: a task
    is closed before it leaves the list, and closing twice is harmless.
    An error from one task (an action's step failure nobody will read) is
    not raised into the unrelated launch that runs this.
    """
    for task in _active[:]:
        with contextlib.suppress(Exception):
            task.poll()
        if task.ended:
            with contextlib.suppress(Exception):
                task.close()
            while task in _active:
                _active.remove(task)


def action_exit_code(run: _pyclone._action_run) -> int | None:
    """The exit code an action stored in its report page before SYS_exit."""
    state, code, _, _ = run.outcome()
    return reported_code(state, code)


def reported_code(state: int, code: int) -> int | None:
    """The returncode of an action's report: its ``state`` and ``exit_code``."""
    if state == _CANCELLED:
        return -(code - 128)  # cancelled by kill()/terminate(): like a signal
    if state in (_EXITED, _FAILED):
        return code
    return None  # it exec'd, or was killed before it could say


def parent_status_now(pidfd: int) -> tuple[bool, int | None]:
    """For an ended task pyclone does not reap: (known, returncode) at this moment."""
    if not pidfd_info_available(pidfd):
        return True, None  # kernel < 6.13: nothing more will come
    reaped = pidfd_reaped(pidfd)  # before reading: the status is kept before POLLHUP
    code = pidfd_exit_status(pidfd)
    if code is not None:
        return True, code
    if reaped:
        return True, None  # reaped, but the kernel (< 6.15) keeps no status
    return False, None  # a zombie: its real parent has not reaped it yet


def parent_status(pidfd: int, deadline: float | None) -> tuple[bool, int | None]:
    """Wait (polling, the pidfd stays readable) until the real parent has reaped the task."""
    delay = 0.001
    while True:
        known, code = parent_status_now(pidfd)
        if known:
            return True, code
        if deadline is not None and time.monotonic() >= deadline:
            return False, None
        pause = delay if deadline is None else min(delay, deadline - time.monotonic())
        time.sleep(max(0.0, pause))
        delay = min(delay * 2, 0.05)


def collect_pid(
    pid: int,
    deadline: float | None,
    result_fd: Callable[[], int | None],
    read_chunk: Callable[[], object],
) -> int | None:
    """waitpid-based reaping for tasks without a pidfd (old kernels), reading results meanwhile."""
    delay = 0.0005
    while True:
        got, status = os.waitpid(pid, os.WNOHANG | _WALL)
        if got == pid:
            return os.waitstatus_to_exitcode(status)
        if deadline is not None and time.monotonic() >= deadline:
            return None
        if (fd := result_fd()) is not None:
            ready, _, _ = select.select([fd], [], [], delay)
            if ready:
                read_chunk()
        else:
            time.sleep(delay)
        delay = min(delay * 2, 0.05)


def collect_pidfd(pidfd: int) -> tuple[bool, int | None]:
    """Reap the ended task through its pidfd: (known, returncode), as parent_status_now."""
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | _WALL)
    except ChildProcessError:
        # Reaped by the kernel (SIGCHLD ignored) or by someone else.
        return parent_status_now(pidfd)
    assert info is not None  # no WNOHANG
    if info.si_code == os.CLD_EXITED:
        return True, int(info.si_status)
    return True, -int(info.si_status)
