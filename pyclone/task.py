"""Task objects and :func:`spawn_task`: the Popen-like face of clone."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from . import _pyclone
from .errors import ChildError, TimeoutExpired, UnsupportedFlags
from .flags import CloneFlag, flag_names
from .spec import NewSpec, ShareSpec, resolve_flags

__all__ = ["Task", "spawn_task"]

_WALL: int = _pyclone.WALL
_FRAME = struct.Struct("<Q")

# PIDFD_GET_INFO (Linux 6.13+), struct pidfd_info VER0 (64 bytes); exit code since 6.15.
_PIDFD_INFO_EXIT = 1 << 3
_PIDFD_INFO = struct.Struct("<QQ11Ii")
_PIDFD_GET_INFO = (3 << 30) | (_PIDFD_INFO.size << 16) | (0xFF << 8) | 11

# Tasks that were garbage-collected while still running; reaped later.
_active: list[Task] = []


def _cleanup() -> None:
    for task in _active[:]:
        if task.poll() is not None:
            _active.remove(task)
            task.close()


def _status_to_returncode(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


class Task:
    """A task created by pyclone, shaped like :class:`subprocess.Popen`.

    ``pid`` is the task's id; ``tgid`` the thread-group id the kernel gave
    it (its own pid for a process, the creator's for a thread); ``flags``
    the effective :class:`CloneFlag` set; ``pidfd`` a descriptor for the
    task (immune to pid reuse), or None; ``returncode`` None while it runs,
    then the exit status, or ``-N`` when signal N killed it.

    Use it as a context manager to wait for the task on exit (killing it
    first if the block raised).  A task that is never waited for gives a
    :class:`ResourceWarning` and is reaped later, so no zombie stays.
    """

    pid: int
    tgid: int
    flags: CloneFlag
    exit_signal: int
    pidfd: int | None
    returncode: int | None

    def __init__(
        self,
        pid: int,
        *,
        flags: int,
        exit_signal: int = signal.SIGCHLD,
        pidfd: int | None = None,
        result_fd: int | None = None,
        kept_fds: list[int] | None = None,
    ) -> None:
        self.pid = pid
        self.flags = CloneFlag(flags)
        self.exit_signal = exit_signal
        self.tgid = os.getpid() if self.flags & CloneFlag.THREAD else pid
        self.pidfd = pidfd
        self.returncode = None
        self._result_fd = result_fd
        self._kept_fds = list(kept_fds or ())
        self._buffer = bytearray()
        self._has_result = result_fd is not None
        self._result_read = False

    # -- waiting -----------------------------------------------------------

    def poll(self) -> int | None:
        """Return the exit status if the task has ended, else None (never blocks)."""
        if self.returncode is None:
            self._wait(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the task to end and return :attr:`returncode`.

        Raises :class:`pyclone.TimeoutExpired` when ``timeout`` seconds pass
        first; the task keeps running and can be waited for again.
        """
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be non-negative or None")
        if self.returncode is None and not self._wait(timeout):
            raise TimeoutExpired(self.pid, timeout if timeout is not None else 0.0)
        assert self.returncode is not None
        return self.returncode

    def _wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever); True once reaped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.pidfd is not None:
            if not self._poll_pidfd(deadline):
                return False
            self._drain_result()
            code = self._collect_pidfd()
        else:
            maybe = self._collect_pid(deadline)
            if maybe is None:
                return False
            self._drain_result()
            code = maybe
        self.returncode = code
        self._release_pipes()
        return True

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

    def _collect_pidfd(self) -> int:
        assert self.pidfd is not None
        if self.flags & CloneFlag.PARENT:
            # Not our child: the creator's parent reaps it.  Read the status
            # from the pidfd where the kernel offers it (Linux 6.15+).
            code = _pidfd_exit_code(self.pidfd)
            return code if code is not None else _UNKNOWN_STATUS
        while True:
            try:
                info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | _WALL)
            except ChildProcessError:
                code = _pidfd_exit_code(self.pidfd)
                return code if code is not None else _UNKNOWN_STATUS
            if info is None:  # pragma: no cover - only with WNOHANG
                continue
            if info.si_code == os.CLD_EXITED:
                return int(info.si_status)
            return -int(info.si_status)

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
        if self._result_fd is None:
            return
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

        The value is pickled in the child and sent back over a pipe.  If the
        target raised, :class:`pyclone.ChildError` is raised here with the
        child's exception as ``__cause__`` and its traceback text in
        ``remote_traceback``; it is also raised when the task ended without
        a result (exit, exec, killed).
        """
        if not self._has_result:
            raise ValueError(f"{self!r} has no result channel (its target was not a callable)")
        self.wait(timeout)
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

    # -- signals -----------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the task (through its pidfd when it has one).

        Does nothing once the task has been reaped, like Popen.
        """
        if self.returncode is not None:
            return
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, sig)
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

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Release the pidfd and result pipe; the task must have been waited for."""
        if self.returncode is None:
            raise RuntimeError(f"{self!r} is still running: wait() for it before close()")
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
        if exc_type is not None and self.returncode is None:
            self.kill()
        self.wait()
        self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not hasattr(self, "returncode"):
            return  # __init__ failed
        if self.returncode is None:
            try:
                if self.poll() is None:
                    _warn(f"{self!r} was never waited for", ResourceWarning, source=self)
                    _active.append(self)
                    return
            except Exception:  # interpreter shutdown
                return
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return (
            f"<pyclone.Task pid={self.pid} tgid={self.tgid} "
            f"flags={flag_names(self.flags, api='clone3')} {state}>"
        )


#: returncode reported when the kernel cannot tell how a task ended (see docs).
_UNKNOWN_STATUS = -255


def _pidfd_exit_code(pidfd: int) -> int | None:
    """The exit status of a dead task from PIDFD_GET_INFO, or None if unavailable."""
    buf = bytearray(_PIDFD_INFO.size)
    _PIDFD_INFO.pack_into(buf, 0, _PIDFD_INFO_EXIT, 0, *([0] * 11), 0)
    try:
        fcntl.ioctl(pidfd, _PIDFD_GET_INFO, buf, True)
    except OSError:
        return None
    fields = _PIDFD_INFO.unpack(buf)
    if not fields[0] & _PIDFD_INFO_EXIT:
        return None
    return _status_to_returncode(fields[-1])


def _describe_end(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
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
    payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_FRAME.pack(len(payload)) + payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


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

_clone3_missing = False


def _create(
    fn: Callable[[], Any], flags: CloneFlag, exit_signal: int, allow_threads: bool
) -> tuple[int, int | None]:
    """clone3 with a pidfd; clone(2) plus pidfd_open where clone3 is missing (ENOSYS)."""
    global _clone3_missing
    if not _clone3_missing:
        try:
            pid, pidfd = _pyclone.clone3(
                fn, int(flags), exit_signal=exit_signal, pidfd=True, allow_threads=allow_threads
            )
            return pid, pidfd
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _clone3_missing = True
    if flags >> 32 or flags & CloneFlag.NEWTIME:
        raise UnsupportedFlags(
            f"{flag_names(flags, api='clone3')} needs clone3(2), which this kernel "
            "lacks (ENOSYS); drop the clone3-only flags"
        )
    pid = _pyclone.clone(fn, int(flags) | exit_signal, allow_threads=allow_threads)
    try:
        return pid, os.pidfd_open(pid)
    except OSError:
        return pid, None


def spawn_task(
    target: Callable[..., Any],
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    share: ShareSpec = "process",
    new: NewSpec = None,
    flags: int = 0,
    exit_signal: int = signal.SIGCHLD,
    allow_threads: bool = False,
) -> Task:
    """Create a task running ``target(*args, **kwargs)`` and return its :class:`Task`.

    ``share`` names what the task shares with its creator: a preset
    (``"process"``: nothing, fork's semantics; ``"thread"``; ``"vfork"``)
    or names among ``vm``, ``fs``, ``files``, ``sighand``, ``sysvsem``,
    ``io``, ``thread``, ``parent``.  ``new`` names the namespaces it gets of
    its own (``user``, ``pid``, ``mnt``/``mount``, ``net``, ``uts``,
    ``ipc``, ``cgroup``, ``time``, or ``"all"``).  ``flags`` adds raw bits.

    The task is created with clone3(2) and CLONE_PIDFD, so every wait and
    signal goes through its pidfd.  With CLONE_THREAD or CLONE_PARENT the
    kernel requires exit signal 0, and pyclone passes 0 then.  The target's
    return value comes back through :meth:`Task.result`; its exit status is
    0, 1 if it raised, or the code of a ``SystemExit``.
    """
    return _spawn(
        target,
        args,
        kwargs,
        resolve_flags(share, new, flags),
        exit_signal=exit_signal,
        allow_threads=allow_threads,
    )


#: Exit status of a child whose creator failed to prepare it (see ``before_start``).
GATE_FAILED_STATUS = 127


def _spawn(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    flags: CloneFlag,
    *,
    exit_signal: int = signal.SIGCHLD,
    allow_threads: bool = False,
    before_start: Callable[[Task], None] | None = None,
) -> Task:
    """Create the task; the machinery behind :func:`spawn_task` and its callers.

    With ``before_start``, the child waits (before running any user code)
    until ``before_start(task)`` has returned in the parent: the place to
    write uid maps, time offsets or cgroup membership for the new task.  If
    it raises, the child is killed and reaped and the exception propagates.
    """
    if not callable(target):
        raise TypeError(f"target must be callable, not {type(target).__name__}")
    if not isinstance(args, tuple):
        args = tuple(args)
    kw: Mapping[str, Any] = {} if kwargs is None else kwargs
    if not isinstance(exit_signal, int) or not 0 <= exit_signal <= 64:
        raise ValueError(f"exit_signal must be 0 or a signal number up to 64, not {exit_signal!r}")
    if flags & (CloneFlag.THREAD | CloneFlag.PARENT):
        exit_signal = 0
    _cleanup()

    rfd, wfd = os.pipe()
    gate_r, gate_w = os.pipe() if before_start is not None else (-1, -1)

    def child() -> int:
        if gate_r >= 0 and os.read(gate_r, 1) != b"\x01":
            return GATE_FAILED_STATUS  # the creator could not prepare this task
        return _child_main(target, args, kw, wfd)

    try:
        pid, pidfd = _create(child, flags, exit_signal, allow_threads)
    except BaseException:
        for fd in (rfd, wfd, gate_r, gate_w):
            if fd >= 0:
                os.close(fd)
        raise
    # With CLONE_FILES there is one fd table: what the child still needs must
    # stay open here until the task has been reaped.
    child_fds = [fd for fd in (wfd, gate_r) if fd >= 0]
    kept: list[int] = []
    if flags & CloneFlag.FILES:
        kept = child_fds
    else:
        for fd in child_fds:
            os.close(fd)
    task = Task(
        pid,
        flags=flags,
        exit_signal=exit_signal,
        pidfd=pidfd,
        result_fd=rfd,
        kept_fds=kept,
    )
    if before_start is not None:
        try:
            before_start(task)
        except BaseException:
            os.close(gate_w)
            task.kill()
            task.wait()
            task.close()
            raise
        os.write(gate_w, b"\x01")
        os.close(gate_w)
    return task
