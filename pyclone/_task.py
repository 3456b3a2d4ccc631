"""The :class:`Task` object: waiting, results, signals and lifetime of one created task."""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from . import _pyclone, _task_async, errors
from ._checks import check_timeout
from ._fd import Fd, close_all
from ._lazy import asyncio  # the real asyncio (with ssl, sockets) loads when a task is awaited
from ._reaper import (
    TaskRemains,
    _active,
    action_exit_code,
    collect_pidfd,
    parent_status,
)
from ._task_pipe import ResultPipe
from ._transport import piped_result, shared_result
from .flags import CloneFlag, flag_names

__all__ = ["Task"]

_WALL: int = _pyclone.WALL

# Flag tests on the wait path use plain ints: IntFlag arithmetic runs
# Python code in enum.py (microseconds per operation).
_THREAD = int(CloneFlag.THREAD)
_PARENT = int(CloneFlag.PARENT)
_getpid = os.getpid
_native_id = _thread.get_native_id
# Re-entrant: a signal handler that runs during a wait and waits for the same
# task must not deadlock on it (its nested wait collects the task, as before).
# _thread's own: threading.RLock is a Python function around it, one more
# frame (and, in a fork-like launch, page faults) per Task.
_new_lock = _thread.RLock
#: The longest timeout a lock's acquire takes (a longer wait is as good as none).
_LOCK_TIMEOUT_MAX = threading.TIMEOUT_MAX


if TYPE_CHECKING:
    from typing_extensions import TypeVar as _TypeVarWithDefault

    # With a default, a bare ``Task`` means ``Task[Any]`` even under mypy --strict.
    T = _TypeVarWithDefault("T", covariant=True, default=Any)
else:
    T = TypeVar("T", covariant=True)


class Task(ResultPipe, Generic[T]):
    """A task created by pyclone, shaped like :class:`subprocess.Popen`.

    ``pid`` is the task's id; ``tgid`` the thread-group id the kernel gave it (its own pid for a
    process, the creator's for a thread); ``flags`` the effective :class:`CloneFlag` set;
    ``exit_signal`` the signal its parent gets when it ends (0: none); ``pidfd`` a descriptor
    for the task (immune to pid reuse; every wait and signal goes through it), or None on
    kernels without pidfds.

    ``ended`` turns True once the task has ended and been collected.  ``returncode`` is None
    until then, and afterwards the exit status, or ``-N`` when signal N killed it.  It stays
    None after the end only when the kernel cannot tell: a task pyclone does not reap itself (a
    CLONE_PARENT task, or a child auto-reaped because SIGCHLD is ignored) on a kernel older than
    6.15, which added the exit status to ``PIDFD_GET_INFO``.

    Use it as a context manager (``with`` or ``async with``) to wait for the task on exit,
    killing it first if the block raised (or the wait is interrupted).  A task that is never
    waited for gives a :class:`ResourceWarning` and is reaped later, so no zombie stays.

    Descriptors: once the task is collected and its result read, the Task closes its pidfd and
    every other descriptor it owns (``pidfd`` is then None), so finished Tasks hold no
    descriptor.  Signals: a signal sent to a fork-like task before its target starts is held and
    acted on when it does; an uncaught KeyboardInterrupt in the target ends the task by SIGINT
    (``returncode == -2``).  See the limits page of the docs.

    Tasks are made by :func:`pyclone.spawn_task`; the class cannot be instantiated directly.
    """

    # Slots: one Task per launch, and slot stores are cheaper than a dict's.
    # What most launches leave at its default is a class attribute instead,
    # so a launch stores only what it sets (a thread's spawn+join is timed
    # against pthread_create); ``__dict__`` holds those when set, and the
    # attributes callers add (pyclone.sandbox tags tasks).
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_buffer",  # only with a result pipe: read only while there is one
        "_creator_tid",
        "_is_action",
        "_is_thread",
        "_pidfd",
        "_remains",
        "_run",
        "_wait_lock",
        "ended",
        "exit_signal",
        "flags",
        "pid",
        "returncode",
        "tgid",
    )

    pid: int
    tgid: int
    flags: CloneFlag
    exit_signal: int
    returncode: int | None
    ended: bool
    _pidfd: Fd | None
    _remains: TaskRemains | None  # until collected: see TaskRemains
    _buffer: bytearray
    # An action task: its stack and report page (see pyclone.actions).
    # A thread cannot be waited for with waitid: it is joined through
    # the CLONE_CHILD_CLEARTID word in that page instead.
    _run: _pyclone._action_run | None
    _is_thread: bool
    _creator_tid: int
    _result_fd: Fd | None = None
    _kept_fds: list[Fd] | None = None
    _has_result: bool = False
    _async_wait: asyncio.Task[None] | None = None
    _async_waiters: int = 0
    _is_action: bool
    _action_error: OSError | None = None
    # the result comes from a sandbox: rebuilt from plain data only (see _transport),
    # and refused unread past this many bytes (None: no limit)
    _plain_result: bool = False
    _result_limit: int | None = None
    # CLONE_VM children write their outcome straight into this list
    _shared_outcome: list[tuple[Any, ...]] | None = None
    # serialises the waits of several threads: one collects, the others wait for it
    _wait_lock: threading.RLock

    def __init__(self) -> None:
        raise TypeError("Task objects are made by pyclone.spawn_task(), not directly")

    @classmethod
    def _create(
        cls,
        pid: int,
        *,
        flags: int,
        exit_signal: int = signal.SIGCHLD,
        pidfd: Fd | None = None,
        result_fd: Fd | None = None,
        kept_fds: list[Fd] | None = None,
        run: _pyclone._action_run | None = None,
        shared_outcome: list[tuple[Any, ...]] | None = None,
    ) -> Task:
        """The launch's constructor: the Task takes over the owners it is given."""
        self = cls.__new__(cls)
        self.pid = pid
        self.flags = flags if type(flags) is CloneFlag else CloneFlag(flags)
        self.exit_signal = exit_signal
        self.tgid = os.getpid() if int(flags) & _THREAD else pid
        self._pidfd = pidfd
        self.returncode = None
        if result_fd is not None:
            self._result_fd = result_fd
            self._buffer = bytearray()
        if kept_fds:
            self._kept_fds = list(kept_fds)
        if shared_outcome is not None:
            self._shared_outcome = shared_outcome
        if result_fd is not None or shared_outcome is not None:
            self._has_result = True
        self._run = run
        self._is_action = run is not None
        self._is_thread = run is not None and self.tgid != pid
        self._creator_tid = _native_id()
        mine = not int(flags) & (_THREAD | _PARENT)  # a child pyclone reaps itself
        self._remains = TaskRemains(self, pidfd) if mine and pidfd is not None else None
        self._wait_lock = _new_lock()
        self.ended = False  # last: __del__ treats a Task without it as never made
        return self

    @classmethod
    def _thread(cls, pid: int, flags: CloneFlag, run: _pyclone._action_run) -> Task:
        """:meth:`_create` of a CLONE_THREAD action task: no descriptor, no result, no reaper."""
        self = cls.__new__(cls)
        self.pid = pid
        self.flags = flags
        self.exit_signal = 0
        self.tgid = _getpid()
        self._pidfd = None
        self.returncode = None
        self._run = run
        self._is_action = True
        self._is_thread = True
        self._creator_tid = _native_id()
        self._remains = None
        self._wait_lock = _new_lock()
        self.ended = False
        return self

    @property
    def pidfd(self) -> int | None:
        """The task's pidfd while it runs; None once it has been collected (or no pidfd)."""
        owner = self._pidfd
        return None if owner is None else owner.fd

    # -- waiting -----------------------------------------------------------

    def poll(self) -> int | None:
        """Collect the task if it has ended (never blocks) and return :attr:`returncode`.

        None means still running, or ended with an unknown status: tell
        the two apart with :attr:`ended`.  While another thread waits for
        the task, this leaves the collecting to it and returns None.
        """
        if not self.ended and self._wait_lock.acquire(False):
            try:
                if not self.ended:
                    self._wait(0.0)
            finally:
                self._wait_lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the task to end and return :attr:`returncode`.

        Raises :class:`pyclone.TimeoutExpired` (a :class:`TimeoutError`)
        when ``timeout`` seconds pass first; the task keeps running and can
        be waited for again.  ``timeout`` is None (no limit) or a finite
        number of seconds >= 0: anything else raises TypeError or
        ValueError.  Collecting the task closes its descriptors
        (``pidfd`` becomes None).  The
        result is None only when the kernel cannot report the status (see
        :class:`Task`).  A CLONE_PARENT task is reaped by the creator's
        parent, not by pyclone: its status can be read once that parent
        has reaped it, so this waits for that too.  Threads may wait for
        the same task at once: one collects it, the others wait for that.
        """
        if self.ended:
            check_timeout(timeout)
            return self.returncode
        lock = self._wait_lock
        if timeout is None:
            lock.acquire()  # a signal handler that raises ends this wait too
            left = None
        else:
            check_timeout(timeout)
            # Its first read imports subprocess: better it fails (no descriptor
            # left) before the wait than once the time is up.
            errors.TimeoutExpired  # noqa: B018
            deadline = time.monotonic() + timeout
            if not lock.acquire(timeout=min(timeout, _LOCK_TIMEOUT_MAX)):
                raise errors.TimeoutExpired(self.pid, timeout)
            left = max(0.0, deadline - time.monotonic())
        try:
            if self.ended:  # collected by the thread that held the lock
                return self.returncode
            if left is None:
                if self._is_thread:
                    self._join()  # the common thread wait, in as few calls as it takes
                    return self.returncode
                if self._await_piped(None):
                    return self.returncode
            if not self._wait(left):
                raise errors.TimeoutExpired(self.pid, timeout if timeout is not None else 0.0)
            return self.returncode
        finally:
            lock.release()

    def _wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever); True once collected."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._is_thread:
            assert self._run is not None
            if not self._run.join(timeout):
                return False
            code = action_exit_code(self._run)
        elif self._pidfd is not None:
            done = self._await_piped(timeout)
            if done is not None:
                return done
            if not self._poll_pidfd(deadline):
                return False
            if self.ended:
                return True  # collected by a signal handler's wait meanwhile
            pidfd = self.pidfd
            assert pidfd is not None  # only collecting the task closes it
            self._drain_result()
            known, code = (False, None)
            if not int(self.flags) & _PARENT:
                known, code = collect_pidfd(pidfd)
            if not known and self._run is not None:
                known = True  # an action reported its exit code itself (see _finish)
            if not known:  # not reaped by us: read the status once its reaper is done
                known, code = parent_status(pidfd, deadline)
            if not known:
                return False
        else:
            maybe = self._collect_pid(deadline)
            if maybe is None:
                return False
            self._drain_result()
            code = maybe
        self._finish(code)
        return True

    def _join(self) -> None:
        """Wait for a thread task with no time limit: :meth:`_wait`, in one C call."""
        run = self._run
        assert run is not None
        # Join, returncode, error and (most often) release; if a handler
        # raises, nothing has changed.
        self.returncode, error, released = run.collect()
        self.ended = True
        if released and error is None:
            self._run = None
            return
        self._finish_action(run, error)

    def _finish(self, code: int | None) -> None:
        if code is None and self._run is not None:
            code = action_exit_code(self._run)  # e.g. CLONE_PARENT: reaped elsewhere
        self.returncode = code
        self.ended = True
        # Collected, result in memory: a finished Task kept in a list holds no fd
        self._release_fds()
        if self._run is not None:
            self._finish_action(self._run, self._run.error())

    def _finish_action(self, run: _pyclone._action_run, error: OSError | None) -> None:
        """Give back the action's stack and page; raise the failed step's ``error``."""
        self._run = None
        run.release()
        if error is not None:
            self._action_error = error
            raise error

    # -- asyncio -----------------------------------------------------------

    async def wait_async(self) -> int | None:
        """Wait for the task from asyncio and return :attr:`returncode`.

        The pidfd is watched with :meth:`asyncio.loop.add_reader
        <asyncio.AbstractEventLoop.add_reader>` (it becomes readable when
        the task ends): no thread, no SIGCHLD handler, so any number of
        tasks can be awaited at once.  The result pipe is read meanwhile,
        so a large result cannot block the task.  Cancelling the await
        leaves the task running.  Use ``asyncio.wait_for`` (or
        ``asyncio.timeout``) for a time limit.  A task without a pidfd
        (kernels before 5.3) is polled with a growing interval.
        """
        return await _task_async.wait_async(self)

    async def __aenter__(self) -> Task[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and not self.ended:
            self.kill()
        await self.wait_async()
        self.close()

    def _release_fds(self) -> None:
        """Close every descriptor this Task owns; each owner closes its own once."""
        self._remains = None  # collected, or closing: nothing left for the reaper
        result = self._result_fd
        if result is not None:  # _close_result_fd, inlined: one frame less per launch
            self._result_fd = None
            result.close()
        if self._kept_fds:
            close_all(self._kept_fds)
        owner = self._pidfd
        if owner is not None:
            self._pidfd = None
            owner.close()

    def _holds_fds(self) -> bool:
        return self._pidfd is not None or self._result_fd is not None or bool(self._kept_fds)

    def result(self, timeout: float | None = None) -> T:
        """Wait for the task and return what its target returned.

        The value is pickled in the child and sent back over a pipe (from a
        :class:`pyclone.Sandbox`, plain data and builtin exceptions only:
        see :meth:`pyclone.Sandbox.spawn`); a CLONE_VM child shares this
        memory, so its value (or exception) is the object itself, not a
        copy.  If the
        target raised, :class:`pyclone.ChildError` is raised here with the
        child's exception as ``__cause__`` and its traceback text in
        ``remote_traceback``; it is also raised when the task ended without
        a result (exit, exec, killed).

        For an action task (see :mod:`pyclone.actions`) there is no value
        to send back: ``result()`` waits and returns the exit status (a
        thread task's action exit code), or raises the
        :class:`pyclone.actions.ActionError` of the step that failed.
        """
        check_timeout(timeout)
        if self._is_action:
            code = self.wait(timeout)
            if self._action_error is not None:
                raise self._action_error
            return cast(T, code)  # an action task is a Task[int] (spawn_task's overloads)
        if not self._has_result:
            raise ValueError(f"{self!r} has no result channel (its target was not a callable)")
        self.wait(timeout)
        if self._shared_outcome is not None:
            return cast(T, shared_result(self._shared_outcome, self.pid, self.returncode))
        return cast(
            T,
            piped_result(
                self._buffer,
                self.pid,
                self.returncode,
                plain=self._plain_result,
                limit=self._result_limit,
            ),
        )

    # -- signals -----------------------------------------------------------

    def send_signal(self, sig: int, value: int | None = None) -> None:
        """Send ``sig`` to the task, through its pidfd when it has one.

        An int ``value`` queues the signal with ``si_code == SI_QUEUE`` and
        that ``si_value``, as sigqueue(3) does (needs a pidfd).  Does
        nothing once the task has been collected, like Popen: the pidfd
        then refers to a dead task and could never reach the process that
        reuses its pid.

        A thread task running an action has every signal blocked, and
        SIGKILL or SIGSTOP would reach its whole thread group, the caller
        included; so for it SIGKILL and SIGTERM *cancel* the action at its
        next step or sleep (``returncode`` is then ``-sig``), and any other
        signal raises ValueError.
        """
        if self.ended:
            return
        if self._is_thread:
            if sig not in (signal.SIGKILL, signal.SIGTERM):
                raise ValueError(
                    f"a thread task takes only SIGKILL or SIGTERM (which cancel its action), "
                    f"not {sig!r}: a signal to one thread of this process would stay "
                    "blocked, or stop or kill the whole process"
                )
            if self._run is not None:
                self._run.cancel(sig)
            return
        try:
            # The owner, not its number: between reading a number and using it, another
            # thread or a signal handler could collect the task, and a new descriptor
            # take the number.  The C call reads and uses it with nothing in between.
            if (owner := self._pidfd) is not None:
                _pyclone.pidfd_send_signal(owner, sig, value)
            elif value is not None:
                raise ValueError(f"{self!r} has no pidfd: a signal value needs pidfd_send_signal")
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        """Send SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def shared_resources(self) -> frozenset[str]:
        """What the task shares with the thread that created it, measured now.

        See :func:`pyclone.shared_resources` for the names.  Take it while the
        task runs: once it has exited kcmp's answers are wrong (a zombie's
        memory, files and fs are released), so this raises
        :class:`ProcessLookupError` for a task that has ended or been reaped.
        """
        from .sharing import shared_resources  # lazy: kcmp's helpers load ctypes

        if self.ended:
            raise ProcessLookupError(
                f"{self!r} has ended: its sharing can only be measured while it runs"
            )
        return shared_resources(self.pid, self._creator_tid)

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Release the task's descriptors; the task must have been waited for.

        Collecting the task already closes them (``pidfd`` is then None),
        so this is needed only for symmetry with :class:`subprocess.Popen`.
        Raises :class:`ValueError` while the task runs, like
        :meth:`multiprocessing.Process.close`.
        """
        if not self.ended:
            raise ValueError(f"{self!r} is still running: wait() for it before close()")
        if self._pidfd is not None or self._result_fd is not None or self._kept_fds:
            self._release_fds()  # (collecting it left nothing to release, most often)

    def __enter__(self) -> Task[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None and not self.ended:
                self.kill()
            self.wait()
        except BaseException:
            self._abandon()
            raise
        self.close()

    def _abandon(self) -> None:
        """Interrupted before the task was collected: kill it and leave it to the reaper.

        The reaper list gets the task first, so whatever interrupts the
        kill, the task is reaped (and its descriptors closed) at the next
        launch and no zombie stays.
        """
        if not self.ended:
            _active.append(self)
            self.kill()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        try:
            ended = self.ended
        except AttributeError:
            return  # never fully made: its Fd owners close themselves
        if ended and self._pidfd is None and self._result_fd is None and not self._kept_fds:
            return  # closed already, the common end of a launch (_holds_fds, inlined)
        if not ended:
            # The reaper list first: an interrupt in what follows must not
            # lose the task (a zombie and a pidfd for good).
            _active.append(self)
            try:
                self.poll()
            except Exception:  # interpreter shutdown, or an action's step failed
                return
            if not self.ended:
                _warn(f"{self!r} was never waited for", ResourceWarning, source=self)
                return
            with contextlib.suppress(ValueError):
                _active.remove(self)
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __repr__(self) -> str:
        if not self.ended:
            state = "running"
        elif self.returncode is None:
            state = "ended, status unknown"
        else:
            state = f"returncode={self.returncode}"
        return (
            f"<pyclone.Task pid={self.pid} tgid={self.tgid} "
            f"flags={flag_names(self.flags, api='clone3')} {state}>"
        )
