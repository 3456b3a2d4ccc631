"""Task objects and :func:`spawn_task`: the Popen-like face of clone."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _pyclone, clone3_api
from ._procfs import write_file
from .actions import Action, ActionError
from .errors import ChildError, TimeoutExpired, UnsupportedFlags
from .flags import CloneFlag, flag_names
from .pidfd import pidfd_exit_status, pidfd_info_available, pidfd_reaped
from .spec import NewSpec, ShareSpec, resolve_flags

if TYPE_CHECKING:
    from .cgroup import Cgroup

__all__ = ["Task", "spawn_task"]

_WALL: int = _pyclone.WALL
_FRAME = struct.Struct("<Q")

# Flag tests on the spawn/wait path use plain ints: IntFlag arithmetic runs
# Python code in enum.py (microseconds per operation, and pages written
# while the fork child still shares them).
_THREAD = int(CloneFlag.THREAD)
_PARENT = int(CloneFlag.PARENT)
_FILES = int(CloneFlag.FILES)
_VM = int(CloneFlag.VM)
_VM_OR_THREAD = int(CloneFlag.VM | CloneFlag.THREAD)

# Tasks that were garbage-collected while still running; reaped later.
_active: list[Task] = []


def _cleanup() -> None:
    for task in _active[:]:
        task.poll()
        if task.ended:
            _active.remove(task)
            task.close()


def _status_to_returncode(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


class Task:
    """A task created by pyclone, shaped like :class:`subprocess.Popen`.

    ``pid`` is the task's id; ``tgid`` the thread-group id the kernel gave
    it (its own pid for a process, the creator's for a thread); ``flags``
    the effective :class:`CloneFlag` set; ``exit_signal`` the signal its
    parent gets when it ends (0: none); ``pidfd`` a descriptor for the
    task (immune to pid reuse; every wait and signal goes through it), or
    None on kernels without pidfds.

    ``ended`` turns True once the task has ended and been collected.
    ``returncode`` is None until then, and afterwards the exit status, or
    ``-N`` when signal N killed it.  It stays None after the end only when
    the kernel cannot tell: a task pyclone does not reap itself (a
    CLONE_PARENT task, or a child auto-reaped because SIGCHLD is ignored)
    on a kernel older than 6.15, which added the exit status to
    ``PIDFD_GET_INFO``.

    Use it as a context manager (``with`` or ``async with``) to wait for
    the task on exit, killing it first if the block raised.  A task that
    is never waited for gives a :class:`ResourceWarning` and is reaped
    later, so no zombie stays.
    """

    # Slots: a Task is created and dropped on every launch, and slot
    # stores are cheaper than a dict's.  ``__dict__`` stays for attributes
    # callers add (pyclone.sandbox tags its tasks), ``__weakref__`` for
    # weak references.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_action_error",
        "_async_wait",
        "_async_waiters",
        "_buffer",
        "_creator_tid",
        "_has_result",
        "_is_action",
        "_is_thread",
        "_kept_fds",
        "_result_fd",
        "_run",
        "_shared_outcome",
        "ended",
        "exit_signal",
        "flags",
        "pid",
        "pidfd",
        "returncode",
        "tgid",
    )

    pid: int
    tgid: int
    flags: CloneFlag
    exit_signal: int
    pidfd: int | None
    returncode: int | None
    ended: bool

    def __init__(
        self,
        pid: int,
        *,
        flags: int,
        exit_signal: int = signal.SIGCHLD,
        pidfd: int | None = None,
        result_fd: int | None = None,
        kept_fds: list[int] | None = None,
        run: _pyclone._action_run | None = None,
        shared_outcome: list[tuple[Any, ...]] | None = None,
    ) -> None:
        self.pid = pid
        self.flags = flags if type(flags) is CloneFlag else CloneFlag(flags)
        self.exit_signal = exit_signal
        self.tgid = os.getpid() if int(flags) & _THREAD else pid
        self.pidfd = pidfd
        self.returncode = None
        self.ended = False
        self._result_fd = result_fd
        self._kept_fds = list(kept_fds) if kept_fds else []
        self._buffer = bytearray()
        self._has_result = result_fd is not None or shared_outcome is not None
        self._async_wait: asyncio.Task[None] | None = None
        self._async_waiters = 0
        # An action task: its stack and report page (see pyclone.actions).
        # A thread cannot be waited for with waitid: it is joined through
        # the CLONE_CHILD_CLEARTID word in that page instead.
        self._run = run
        self._is_action = run is not None
        self._is_thread = run is not None and self.tgid != pid
        self._action_error: OSError | None = None
        self._creator_tid = threading.get_native_id()
        # CLONE_VM children write their outcome straight into this list
        self._shared_outcome = shared_outcome

    # -- waiting -----------------------------------------------------------

    def poll(self) -> int | None:
        """Collect the task if it has ended (never blocks) and return :attr:`returncode`.

        None means still running, or ended with an unknown status: tell
        the two apart with :attr:`ended`.
        """
        if not self.ended:
            self._wait(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the task to end and return :attr:`returncode`.

        Raises :class:`pyclone.TimeoutExpired` when ``timeout`` seconds pass
        first; the task keeps running and can be waited for again.  The
        result is None only when the kernel cannot report the status (see
        :class:`Task`).  A CLONE_PARENT task is reaped by the creator's
        parent, not by pyclone: its status can be read once that parent
        has reaped it, so this waits for that too.
        """
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be non-negative or None")
        if not self.ended and not self._wait(timeout):
            raise TimeoutExpired(self.pid, timeout if timeout is not None else 0.0)
        return self.returncode

    def _wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever); True once collected."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._is_thread:
            assert self._run is not None
            if not self._run.join(timeout):
                return False
            code = self._action_exit_code(self._run)
        elif self.pidfd is not None:
            if not self._poll_pidfd(deadline):
                return False
            self._drain_result()
            known, code = (False, None)
            if not int(self.flags) & _PARENT:
                known, code = self._collect_pidfd()
            if not known and self._run is not None:
                known = True  # an action reported its exit code itself (see _finish)
            if not known:  # not reaped by us: read the status once its reaper is done
                known, code = self._parent_status(deadline)
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

    def _finish(self, code: int | None) -> None:
        if code is None and self._run is not None:
            code = self._action_exit_code(self._run)  # e.g. CLONE_PARENT: reaped elsewhere
        self.returncode = code
        self.ended = True
        if self._result_fd is not None or self._kept_fds:
            self._release_pipes()
        if self._run is not None:
            self._finish_action(self._run)

    @staticmethod
    def _action_exit_code(run: _pyclone._action_run) -> int | None:
        """The exit code an action stored in its report page before SYS_exit."""
        state, code, _, _ = run.outcome()
        if state == _pyclone._act_cancelled:
            return -(code - 128)  # cancelled by kill()/terminate(): like a signal
        if state in (_pyclone._act_exited, _pyclone._act_failed):
            return code
        return None  # it exec'd, or was killed before it could say

    def _finish_action(self, run: _pyclone._action_run) -> None:
        """Give back the action's stack and page; raise the failed step's error."""
        self._run = None
        error = run.error()
        run.release()
        if error is not None:
            self._action_error = error
            raise error

    def _poll_pidfd(self, deadline: float | None) -> bool:
        """Block until the pidfd is readable (the task ended), reading results meanwhile."""
        assert self.pidfd is not None
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        if self._result_fd is not None:
            poller.register(self._result_fd, select.POLLIN)
        while True:
            if deadline is None:
                events = poller.poll()
            else:
                remaining = max(0.0, deadline - time.monotonic())
                events = poller.poll(remaining * 1000.0)
            if not events:
                return False
            for fd, _ in events:
                if fd == self.pidfd:
                    return True
                if self._read_result_chunk() is False:
                    poller.unregister(fd)

    def _parent_status_now(self) -> tuple[bool, int | None]:
        """For an ended task pyclone does not reap: (known, returncode) at this moment."""
        assert self.pidfd is not None
        if not pidfd_info_available(self.pidfd):
            return True, None  # kernel < 6.13: nothing more will come
        reaped = pidfd_reaped(self.pidfd)  # before reading: the status is kept before POLLHUP
        code = pidfd_exit_status(self.pidfd)
        if code is not None:
            return True, code
        if reaped:
            return True, None  # reaped, but the kernel (< 6.15) keeps no status
        return False, None  # a zombie: its real parent has not reaped it yet

    def _parent_status(self, deadline: float | None) -> tuple[bool, int | None]:
        """Wait (polling, the pidfd stays readable) until the real parent has reaped the task."""
        delay = 0.001
        while True:
            known, code = self._parent_status_now()
            if known:
                return True, code
            if deadline is not None and time.monotonic() >= deadline:
                return False, None
            pause = delay if deadline is None else min(delay, deadline - time.monotonic())
            time.sleep(max(0.0, pause))
            delay = min(delay * 2, 0.05)

    def _collect_pidfd(self) -> tuple[bool, int | None]:
        """Reap the ended task through its pidfd: (known, returncode), as _parent_status_now."""
        assert self.pidfd is not None
        try:
            info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | _WALL)
        except ChildProcessError:
            # Reaped by the kernel (SIGCHLD ignored) or by someone else.
            return self._parent_status_now()
        assert info is not None  # no WNOHANG
        if info.si_code == os.CLD_EXITED:
            return True, int(info.si_status)
        return True, -int(info.si_status)

    def _collect_pid(self, deadline: float | None) -> int | None:
        """waitpid-based reaping for tasks without a pidfd (old kernels)."""
        delay = 0.0005
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG | _WALL)
            if pid == self.pid:
                return _status_to_returncode(status)
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if self._result_fd is not None:
                ready, _, _ = select.select([self._result_fd], [], [], delay)
                if ready:
                    self._read_result_chunk()
            else:
                time.sleep(delay)
            delay = min(delay * 2, 0.05)

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
        if self.ended:
            return self.returncode
        loop = asyncio.get_running_loop()
        if self.pidfd is None:
            delay = 0.001
            while not self.ended:
                self._wait(0.0)
                if not self.ended:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
            return self.returncode
        watch = self._async_wait
        if watch is None or watch.get_loop() is not loop:
            watch = self._async_wait = loop.create_task(self._watch(loop))
        self._async_waiters += 1
        try:
            await asyncio.shield(watch)
        finally:
            self._async_waiters -= 1
            if self._async_waiters == 0 and not watch.done():
                watch.cancel()  # the last waiter gave up: stop watching
                self._async_wait = None
        return self.returncode

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.pidfd is not None
        pidfd = self.pidfd
        exited: asyncio.Future[None] = loop.create_future()
        result_fd = self._result_fd

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        def on_result() -> None:
            assert result_fd is not None
            try:
                data = os.read(result_fd, 1 << 16)
            except BlockingIOError:
                return
            self._buffer += data
            if not data or self._frame_complete():
                loop.remove_reader(result_fd)

        loop.add_reader(pidfd, on_exit)
        if result_fd is not None:
            os.set_blocking(result_fd, False)
            loop.add_reader(result_fd, on_result)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            if result_fd is not None:
                loop.remove_reader(result_fd)
        self._drain_result()
        known, code = (False, None)
        if not int(self.flags) & _PARENT:
            known, code = self._collect_pidfd()  # the task is a zombie: this does not block
        delay = 0.001
        while not known:  # someone else reaps it: wait for that, then read the status
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            known, code = self._parent_status_now()
        if not self.ended:
            self._finish(code)

    async def __aenter__(self) -> Task:
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

    # -- result transport --------------------------------------------------

    def _read_result_chunk(self) -> bool:
        """Read what is available; False at end of file or a complete frame."""
        if self._result_fd is None:
            return False
        try:
            data = os.read(self._result_fd, 1 << 16)
        except BlockingIOError:
            return True
        if data:
            self._buffer += data
            return not self._frame_complete()
        self._close_result_fd()
        return False

    def _frame_complete(self) -> bool:
        if len(self._buffer) < _FRAME.size:
            return False
        size: int = _FRAME.unpack_from(self._buffer)[0]
        return len(self._buffer) >= _FRAME.size + size

    def _drain_result(self) -> None:
        if self._result_fd is None or self._frame_complete():
            return  # the child sends one frame: nothing more to read
        os.set_blocking(self._result_fd, False)
        while not self._frame_complete() and self._read_result_chunk():
            if self._result_fd is None:
                break
            try:
                more = select.select([self._result_fd], [], [], 0)[0]
            except (OSError, ValueError):
                break
            if not more:
                break

    def _close_result_fd(self) -> None:
        if self._result_fd is not None:
            os.close(self._result_fd)
            self._result_fd = None

    def _release_pipes(self) -> None:
        self._close_result_fd()
        while self._kept_fds:
            os.close(self._kept_fds.pop())

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task and return what its target returned.

        The value is pickled in the child and sent back over a pipe; a
        CLONE_VM child shares this memory, so its value (or exception) is
        the object itself, not a copy.  If the
        target raised, :class:`pyclone.ChildError` is raised here with the
        child's exception as ``__cause__`` and its traceback text in
        ``remote_traceback``; it is also raised when the task ended without
        a result (exit, exec, killed).

        For an action task (see :mod:`pyclone.actions`) there is no value
        to send back: ``result()`` waits and returns the exit status (a
        thread task's action exit code), or raises the
        :class:`pyclone.actions.ActionError` of the step that failed.
        """
        if self._is_action:
            code = self.wait(timeout)
            if self._action_error is not None:
                raise self._action_error
            return code
        if not self._has_result:
            raise ValueError(f"{self!r} has no result channel (its target was not a callable)")
        self.wait(timeout)
        if self._shared_outcome is not None:
            return self._shared_result()
        if len(self._buffer) < _FRAME.size or not self._frame_complete():
            raise ChildError(
                f"task {self.pid} {_describe_end(self.returncode)} without returning a result",
                returncode=self.returncode,
            )
        payload = bytes(self._buffer[_FRAME.size :])
        outcome = pickle.loads(payload)
        if outcome[0] == "ok":
            return outcome[1]
        _, exc, text, summary = outcome
        error = ChildError(
            f"task {self.pid} raised {summary}",
            exception=exc,
            remote_traceback=text,
            returncode=self.returncode,
        )
        if exc is not None:
            raise error from exc
        raise error

    def _shared_result(self) -> Any:
        """The outcome a CLONE_VM child left in shared memory (the objects themselves)."""
        assert self._shared_outcome is not None
        if not self._shared_outcome:
            raise ChildError(
                f"task {self.pid} {_describe_end(self.returncode)} without returning a result",
                returncode=self.returncode,
            )
        outcome = self._shared_outcome[0]
        if outcome[0] == "ok":
            return outcome[1]
        _, exc, text = outcome
        raise ChildError(
            f"task {self.pid} raised {type(exc).__qualname__}: {exc}",
            exception=exc,
            remote_traceback=text,
            returncode=self.returncode,
        ) from exc

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
            if self.pidfd is not None:
                _pyclone.pidfd_send_signal(self.pidfd, sig, value)
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

    # -- sharing -----------------------------------------------------------

    def shared_resources(self) -> frozenset[str]:
        """What the task shares with the thread that created it, measured now.

        See :func:`pyclone.shared_resources` for the names.  Take it while the
        task runs: once it has exited kcmp's answers are wrong (a zombie's
        memory, files and fs are released), so this raises
        :class:`ProcessLookupError` for a task that has ended or been reaped.
        """
        from .sharing import shared_resources

        if self.ended:
            raise ProcessLookupError(
                f"{self!r} has ended: its sharing can only be measured while it runs"
            )
        return shared_resources(self.pid, self._creator_tid)

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Release the pidfd and result pipe; the task must have been waited for."""
        if not self.ended:
            raise RuntimeError(f"{self!r} is still running: wait() for it before close()")
        if self._result_fd is not None or self._kept_fds:
            self._release_pipes()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def __enter__(self) -> Task:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and not self.ended:
            self.kill()
        self.wait()
        self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        try:
            ended = self.ended
        except AttributeError:
            return  # __init__ failed
        if ended and self.pidfd is None and self._result_fd is None and not self._kept_fds:
            return  # closed already: the common end of a launch
        if not ended:
            try:
                self.poll()
                if not self.ended:
                    _warn(f"{self!r} was never waited for", ResourceWarning, source=self)
                    _active.append(self)
                    return
            except Exception:  # interpreter shutdown, or an action's step failed
                if not self.ended:
                    return
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


def _describe_end(returncode: int | None) -> str:
    if returncode is None:
        return "ended with a status the kernel could not report"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


# -- the child side ----------------------------------------------------------


#: In a child: the descriptor its outcome goes to (so sandbox setup keeps it open).
_child_result_fd: int | None = None


def _send(fd: int, outcome: tuple[Any, ...]) -> None:
    _send_frame(fd, _framed(outcome))


def _send_frame(fd: int, frame: bytes) -> None:
    written = os.write(fd, frame)
    if written < len(frame):
        view = memoryview(frame)[written:]
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _framed(outcome: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(payload)) + payload


#: The frame of a target that returned None, built once.
_OK_NONE = _framed(("ok", None))


def _child_main(
    target: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], fd: int
) -> int:
    """Run the target in a fork-like child and send its outcome to the parent."""
    global _child_result_fd
    _child_result_fd = fd
    try:
        value = target(*args, **kwargs)
    except SystemExit:
        raise
    except BaseException as exc:
        text = traceback.format_exc()
        sys.stderr.write(text)
        summary = f"{type(exc).__qualname__}: {exc}"
        try:
            _send(fd, ("error", exc, text, summary))
        except Exception:
            _send(fd, ("error", None, text, summary))
        return 1
    try:
        if value is None:
            _send_frame(fd, _OK_NONE)  # the same bytes, without pickling
        else:
            _send(fd, ("ok", value))
    except BrokenPipeError:
        return 0
    except Exception as exc:
        text = traceback.format_exc()
        summary = f"unpicklable result {type(value).__qualname__}: {exc}"
        _send(fd, ("error", None, text, summary))
        return 1
    return 0


# -- spawning -----------------------------------------------------------------

#: Exit status of a child whose creator failed to prepare it (see ``before_start``).
GATE_FAILED_STATUS = 127

#: The clocks a time namespace can offset (``time_offsets=`` keys).
TIME_CLOCKS = ("monotonic", "boottime")


def _check_time_offsets(
    offsets: Mapping[str, float] | None, flags: CloneFlag
) -> list[tuple[str, int, int]]:
    """Validate ``time_offsets=``; return (clock, seconds, nanoseconds) triples."""
    if offsets is None:
        return []
    if not isinstance(offsets, Mapping):
        raise TypeError(
            f"time_offsets must be a mapping of clock name to seconds, not {type(offsets).__name__}"
        )
    if not flags & CloneFlag.NEWTIME:
        raise ValueError(
            "time_offsets needs a new time namespace: add 'time' to new= (CLONE_NEWTIME)"
        )
    result = []
    for clock, value in offsets.items():
        if clock not in TIME_CLOCKS:
            raise ValueError(
                f"unknown clock {clock!r} in time_offsets: a time namespace offsets "
                f"{' and '.join(TIME_CLOCKS)} only"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"time_offsets[{clock!r}] must be seconds as an int or float, "
                f"not {type(value).__name__}"
            )
        if isinstance(value, float):
            seconds = int(value // 1)
            nanoseconds = min(round((value - seconds) * 1e9), 999_999_999)
        else:
            seconds, nanoseconds = value, 0
        result.append((clock, seconds, nanoseconds))
    return result


def _write_time_offsets(pid: int, offsets: list[tuple[str, int, int]]) -> None:
    """Write the offsets of the task's unused time namespace; the kernel's errno passes through."""
    text = "".join(f"{clock} {sec} {nsec}\n" for clock, sec, nsec in offsets)
    write_file(f"/proc/{pid}/timens_offsets", text)


def _unshare_time() -> None:
    """In the child: a fresh time namespace for children, whose offsets can still be set.

    The namespace clone3(CLONE_NEWTIME) made is already in use by the
    child, and the kernel freezes offsets at first use (EACCES afterwards).
    """
    _pyclone.unshare(int(CloneFlag.NEWTIME))


def _enter_time_ns() -> None:
    """In the child, after the creator wrote the offsets: move into that namespace."""
    fd = os.open("/proc/self/ns/time_for_children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _pyclone.setns(fd, int(CloneFlag.NEWTIME))
    finally:
        os.close(fd)


def spawn_task(
    target: Callable[..., Any] | Action,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    share: ShareSpec = "process",
    new: NewSpec = None,
    flags: int = 0,
    exit_signal: int = signal.SIGCHLD,
    allow_threads: bool = False,
    cgroup: Cgroup | None = None,
    set_tid: Iterable[int] = (),
    time_offsets: Mapping[str, float] | None = None,
) -> Task:
    """Create a task running ``target(*args, **kwargs)`` and return its :class:`Task`.

    ``share`` names what the task shares with its creator: a preset
    (``"process"``: nothing, fork's semantics; ``"thread"``; ``"vfork"``)
    or names among ``vm``, ``fs``, ``files``, ``sighand``, ``sysvsem``,
    ``io``, ``thread``, ``parent``.  ``new`` names the namespaces it gets of
    its own (``user``, ``pid``, ``mnt``/``mount``, ``net``, ``uts``,
    ``ipc``, ``cgroup``, ``time``, or ``"all"``).  ``flags`` adds raw bits.

    The task is created with clone3(2) and CLONE_PIDFD, so every wait and
    signal goes through its pidfd (clone(2) and pidfd_open where clone3 is
    missing).  With CLONE_THREAD or CLONE_PARENT the kernel requires exit
    signal 0, and pyclone passes 0 then; any other ``exit_signal`` (0 for
    none) is waited for correctly.  The target's return value comes back
    through :meth:`Task.result`; its exit status is 0, 1 if it raised, or
    the code of a ``SystemExit``.

    ``cgroup`` (a created :class:`pyclone.Cgroup`) starts the task inside
    it: with CLONE_INTO_CGROUP for the cgroup v2 part, and for cgroup v1
    controllers by writing the task to their ``cgroup.procs`` before it
    runs anything.  ``set_tid`` chooses the pid, innermost pid namespace
    first (see clone3(2)).  ``time_offsets`` (with ``new`` including
    ``"time"``) maps ``"monotonic"`` and/or ``"boottime"`` to seconds that
    the task's clocks are shifted by; they are set before it runs.

    ``target`` may also be an action of :mod:`pyclone.actions` (no
    ``args``/``kwargs``), which runs with any flags the kernel accepts,
    ``share="thread"`` included; ``allow_threads``, ``cgroup``,
    ``set_tid`` and ``time_offsets`` do not apply to it.
    """
    if isinstance(target, Action):
        if args or kwargs:
            raise TypeError("an action takes no args or kwargs: they are part of the action")
        if cgroup is not None or tuple(set_tid) or time_offsets:
            raise TypeError("cgroup, set_tid and time_offsets need a callable target")
        return _spawn_action(target, resolve_flags(share, new, flags), exit_signal)
    resolved = resolve_flags(share, new, flags)
    offsets = _check_time_offsets(time_offsets, resolved) if time_offsets is not None else []
    if cgroup is not None:
        from .cgroup import Cgroup

        if not isinstance(cgroup, Cgroup):
            raise TypeError(f"cgroup must be a pyclone.Cgroup, not {type(cgroup).__name__}")
        cgroup._require_created()
    steps: list[Callable[[Task], None]] = []
    prepare: Callable[[], None] | None = None
    enter: Callable[[], None] | None = None
    if offsets:
        prepare, enter = _unshare_time, _enter_time_ns
        steps.append(lambda task: _write_time_offsets(task.pid, offsets))
    return _spawn(
        target,
        args,
        kwargs,
        resolved,
        exit_signal=exit_signal,
        allow_threads=allow_threads,
        before_start=_run_all(steps) if steps else None,
        set_tid=set_tid,
        cgroup=cgroup,
        child_prepare=prepare,
        child_enter=enter,
    )


def _run_all(steps: list[Callable[[Task], None]]) -> Callable[[Task], None]:
    def run(task: Task) -> None:
        for step in steps:
            step(task)

    return run


def _wait_ready(task: Task, ready_r: int) -> None:
    """Wait for the child's report that its own preparation is done; raise what it reports."""
    poller = select.poll()
    poller.register(ready_r, select.POLLIN)
    if task.pidfd is not None:
        poller.register(task.pidfd, select.POLLIN)
    while True:
        events = dict(poller.poll())
        if ready_r in events:
            data = os.read(ready_r, 512)
            break
        if task.pidfd in events:
            data = b""
            break
    if data[:1] == b"\x01":
        return
    if data[:1] == b"\x00" and len(data) >= 5:
        (err,) = struct.unpack("<i", data[1:5])
        raise OSError(err, f"in the new task {task.pid}: {data[5:].decode(errors='replace')}")
    raise RuntimeError(f"task {task.pid} ended before it was prepared")


_THREAD = int(CloneFlag.THREAD)
_THREAD_OR_PARENT = int(CloneFlag.THREAD | CloneFlag.PARENT)


def _spawn_action(action: Action, flags: CloneFlag, exit_signal: int, stack_size: int = 0) -> Task:
    """Start an action task: clone3 (clone(2) where it is missing), one Task.

    A process gets a pidfd and is waited for with waitid; a thread
    (CLONE_THREAD) gets none: it is joined through its tid word.
    """
    global _clone3_missing
    if isinstance(exit_signal, bool) or not isinstance(exit_signal, int):
        raise TypeError(f"exit_signal must be an int, not {type(exit_signal).__name__}")
    bits = int(flags)  # int arithmetic: this path is benchmarked against pthread_create
    if bits & _THREAD_OR_PARENT:
        exit_signal = 0
    if _active:
        _cleanup()
    want_pidfd = not bits & _THREAD
    if not _clone3_missing and (_pyclone._act_clone3 or bits >> 32):
        try:
            pid, pidfd, run = _pyclone._spawn_action(
                action, bits, exit_signal, want_pidfd, True, stack_size
            )
        except ActionError:
            raise
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _clone3_missing = True
        else:
            return Task(pid, flags=flags, exit_signal=exit_signal, pidfd=pidfd, run=run)
    if flags >> 32 or flags & CloneFlag.NEWTIME:
        raise UnsupportedFlags(
            f"{flag_names(flags, api='clone3')} needs clone3(2), which is missing here "
            "(ENOSYS) or, off x86_64, cannot start an action; drop the clone3-only flags"
        )
    pid, _, run = _pyclone._spawn_action(action, bits, exit_signal, False, False, stack_size)
    pidfd = None
    if want_pidfd:
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(pid)
    return Task(pid, flags=flags, exit_signal=exit_signal, pidfd=pidfd, run=run)


_clone3_missing = False


def _spawn(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    flags: CloneFlag,
    *,
    exit_signal: int = signal.SIGCHLD,
    allow_threads: bool = False,
    before_start: Callable[[Task], None] | None = None,
    set_tid: Iterable[int] = (),
    cgroup: Cgroup | None = None,
    child_prepare: Callable[[], None] | None = None,
    child_enter: Callable[[], None] | None = None,
) -> Task:
    """Create the task; the machinery behind :func:`spawn_task` and its callers.

    With ``before_start``, the child waits (before running any user code)
    until ``before_start(task)`` has returned in the parent: the place to
    write uid maps, time offsets or cgroup membership for the new task.  If
    it raises, the child is killed and reaped and the exception propagates.

    ``child_prepare()`` runs in the child first, and the parent waits for
    it to finish before calling ``before_start`` (an ``OSError`` it raises
    is raised in the parent).  ``child_enter()`` runs in the child after
    the gate, just before the target (its errors come back as the
    target's).  ``cgroup`` is placed as :func:`spawn_task` describes.
    """
    if not callable(target):
        raise TypeError(f"target must be callable, not {type(target).__name__}")
    if not isinstance(args, tuple):
        args = tuple(args)
    kw: Mapping[str, Any] = {} if kwargs is None else kwargs
    if isinstance(exit_signal, bool) or not isinstance(exit_signal, int):
        raise TypeError(f"exit_signal must be an int, not {type(exit_signal).__name__}")
    if int(flags) & (_THREAD | _PARENT):
        exit_signal = 0
    if _active:
        _cleanup()
    if int(flags) & _VM_OR_THREAD == _VM:
        # a Python callable on the borrowed interpreter (pyclone.borrowed)
        from .borrowed import _spawn_borrowed

        def create(
            fn: Callable[[], Any], fl: CloneFlag, sig: int, allow: bool
        ) -> tuple[int, int | None]:
            made = clone3_api.create(
                fn, int(fl), exit_signal=sig, pidfd=True, set_tid=set_tid, allow_threads=allow
            )
            return made.pid, made.pidfd

        if cgroup is not None or child_prepare is not None:
            before_start = before_start or _run_all([])
        pid, pidfd, outcome = _spawn_borrowed(
            target,
            args,
            kw,
            flags,
            exit_signal=exit_signal,
            create=create,
            before_start=before_start,
            child_enter=child_enter,
        )
        return Task(pid, flags=flags, exit_signal=exit_signal, pidfd=pidfd, shared_outcome=outcome)

    cgroup_fd = cgroup._v2_fd if cgroup is not None else None
    gated = before_start is not None or cgroup is not None or child_prepare is not None
    rfd, wfd = os.pipe()
    gate_r, gate_w = os.pipe() if gated else (-1, -1)
    ready_r, ready_w = os.pipe() if child_prepare is not None else (-1, -1)

    if not gated and child_enter is None and type(set_tid) is tuple and not set_tid:
        # The plain launch: no closures, no Created; the fewer objects
        # touched between fork and reap, the fewer copy-on-write faults.
        child_main = functools.partial(_child_main, target, args, kw, wfd)
        try:
            pid, pidfd = clone3_api.create_plain(child_main, int(flags), exit_signal, allow_threads)
        except BaseException:
            os.close(rfd)
            os.close(wfd)
            raise
        if int(flags) & _FILES:
            return Task(
                pid,
                flags=flags,
                exit_signal=exit_signal,
                pidfd=pidfd,
                result_fd=rfd,
                kept_fds=[wfd],
            )
        os.close(wfd)
        return Task(pid, flags=flags, exit_signal=exit_signal, pidfd=pidfd, result_fd=rfd)

    def run_target() -> Any:
        if child_enter is not None:
            child_enter()
        return target(*args, **kw)

    def child() -> int:
        if child_prepare is not None:
            try:
                child_prepare()
            except OSError as exc:
                text = str(exc).encode(errors="replace")[:400]
                os.write(ready_w, b"\x00" + struct.pack("<i", exc.errno or 0) + text)
                return GATE_FAILED_STATUS
            os.write(ready_w, b"\x01")
        if gate_r >= 0 and os.read(gate_r, 1) != b"\x01":
            return GATE_FAILED_STATUS  # the creator could not prepare this task
        return _child_main(run_target, (), {}, wfd)

    try:
        made = clone3_api.create(
            child,
            int(flags),
            exit_signal=exit_signal,
            pidfd=True,
            set_tid=set_tid,
            cgroup=cgroup_fd,
            allow_threads=allow_threads,
            cgroup_required=False,
        )
    except BaseException:
        for fd in (rfd, wfd, gate_r, gate_w, ready_r, ready_w):
            if fd >= 0:
                os.close(fd)
        raise
    # With CLONE_FILES there is one fd table: what the child still needs must
    # stay open here until the task has been reaped.
    child_fds = [fd for fd in (wfd, gate_r, ready_w) if fd >= 0]
    kept: list[int] = []
    if int(flags) & _FILES:
        kept = child_fds
    else:
        for fd in child_fds:
            os.close(fd)
    task = Task(
        made.pid,
        flags=(flags | CloneFlag.INTO_CGROUP) if made.into_cgroup else flags,
        exit_signal=exit_signal,
        pidfd=made.pidfd,
        result_fd=rfd,
        kept_fds=kept,
    )
    if gated:
        try:
            if ready_r >= 0:
                _wait_ready(task, ready_r)
            if cgroup is not None:
                cgroup._place(task.pid, v2=not made.into_cgroup)
            if before_start is not None:
                before_start(task)
        except BaseException:
            os.close(gate_w)
            if ready_r >= 0:
                os.close(ready_r)
            task.kill()
            if task.flags & CloneFlag.PARENT and task.pidfd is not None:
                # not ours to reap: do not wait for its real parent to do it
                task._poll_pidfd(None)
                task._finish(None)
            else:
                task.wait()
            task.close()
            raise
        if ready_r >= 0:
            os.close(ready_r)
        os.write(gate_w, b"\x01")
        os.close(gate_w)
    return task
