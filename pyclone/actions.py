"""C-level actions: what a task can do without running Python.

An action is an immutable description of a few system calls (write into a
buffer, chdir, close, ignore a signal or reset it, sleep, exec, exit).  pyclone turns
it into a flat program before the clone; the child runs that program with
raw, async-signal-safe system calls on a stack of its own and touches no
Python or C-library state.  So an action is valid with every flag set the
kernel accepts, including ``CLONE_VM`` without ``CLONE_VFORK`` and
``CLONE_THREAD``, where a Python callable is not::

    >>> import pyclone
    >>> from pyclone import actions
    >>> buf = bytearray(32)
    >>> task = pyclone.spawn_task(actions.write(buf, b"hi"), share="thread")
    >>> task.wait(5), bytes(buf[:2])
    (0, b'hi')

Any argument that cannot work is refused when the action is built.  A step
that fails in the child (``chdir`` to a missing directory, ``exec`` of a
missing file) is reported to the parent as an :class:`ActionError` that
names the step: raised by :func:`pyclone.spawn_task` (or :func:`pyclone.clone`)
itself when ``CLONE_VFORK`` is set, else by :meth:`pyclone.Task.wait` and
:meth:`pyclone.Task.poll`.

Signals stay blocked in the child for its whole life, except that just
before an exec the caught ones are set back to ``SIG_DFL`` (unless
``CLONE_SIGHAND`` is set: the handlers are then the caller's) and the
caller's mask is restored, as :mod:`subprocess` does.

With ``CLONE_SIGHAND`` (``share="thread"`` included), :func:`ignore_signal`
and :func:`default_signal` change the caller's dispositions; the
:mod:`signal` module is brought in line when the task has been waited for
(see :func:`resync_signals`).
"""

from __future__ import annotations

import functools
import math
import operator
import os
import signal
import threading
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, Union

from . import _pyclone

__all__ = [
    "Action",
    "ActionError",
    "Chdir",
    "Close",
    "DefaultSignal",
    "Exec",
    "Exit",
    "IgnoreSignal",
    "Sequence",
    "Sleep",
    "Write",
    "chdir",
    "close",
    "default_signal",
    "exec",
    "exit",
    "ignore_signal",
    "resync_signals",
    "sequence",
    "sleep",
    "write",
]

#: Exit status of a task whose step failed (the parent gets an ActionError).
FAILED_STATUS = 127

# The ops that change a signal's disposition.
_SIGNAL_OPS = ("ignore_signal", "default_signal")

_Path = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class ActionError(OSError):
    """A step of an action failed in the child.

    An :class:`OSError` with the kernel's ``errno``; ``step`` is the index
    of the failing step in the flattened action and ``label`` its
    description, as in ``action exec('/nope'): [Errno 2] No such file or
    directory``.  The task exited with status 127.
    """

    def __init__(self, err: int, label: str, step: int) -> None:
        super().__init__(err, os.strerror(err))
        self.label = label
        self.step = step

    def __str__(self) -> str:
        return f"action {self.label}: [Errno {self.errno}] {self.strerror}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errno, self.label, self.step))


class Action:
    """Base class of actions: immutable, compiled once when built.

    Use the factory functions (:func:`write`, :func:`exec`, ...) rather
    than the classes.  ``_program`` is the compiled form that
    :func:`pyclone.clone` and :func:`pyclone.spawn_task` run.
    """

    __slots__ = ("_program",)
    _program: _pyclone._action_program

    def _ops(self) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _compile(self) -> None:
        ops = self._ops()
        # The task ends in C (its _action_run): a task that changed the
        # caller's dispositions through CLONE_SIGHAND tells the signal
        # module then, through this callback.
        signums = tuple(sorted({op[2] for op in ops if op[0] in _SIGNAL_OPS}))
        on_end = functools.partial(_resync, signums) if signums else None
        object.__setattr__(self, "_program", _pyclone._action_program(ops, ActionError, on_end))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} objects are immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} objects are immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} objects cannot be pickled")


def _set(obj: Action, **fields: object) -> None:
    for name, value in fields.items():
        object.__setattr__(obj, name, value)


def _int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None


def _path(value: object, what: str) -> bytes:
    try:
        raw = os.fsencode(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}"
        ) from None
    if b"\0" in raw:
        raise ValueError(f"{what} must not contain NUL bytes")
    return raw


class Exit(Action):
    """End the task with status ``code`` (see :func:`exit`)."""

    __slots__ = ("code",)
    code: int

    def __init__(self, code: int) -> None:
        code = _int(code, "exit code")
        if not 0 <= code <= 255:
            raise ValueError(f"exit code must be in 0..255, not {code}")
        _set(self, code=code)
        self._compile()

    def _ops(self) -> list[tuple[Any, ...]]:
        return [("exit", repr(self), self.code)]

    def __repr__(self) -> str:
        return f"exit({self.code})"


class Sleep(Action):
    """Sleep for ``seconds`` (see :func:`sleep`)."""

    __slots__ = ("seconds",)
    seconds: float

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
        if not (math.isfinite(seconds) and 0 <= seconds < 1e9):
            raise ValueError(f"seconds must be finite, >= 0 and < 1e9, not {seconds!r}")
        _set(self, seconds=float(seconds))
        self._compile()

    def _ops(self) -> list[tuple[Any, ...]]:
        return [("sleep", repr(self), self.seconds)]

    def __repr__(self) -> str:
        return f"sleep({self.seconds!r})"


class Write(Action):
    """Copy ``data`` into ``buffer`` at ``offset`` (see :func:`write`)."""

    __slots__ = ("_view", "buffer", "data", "offset")
    buffer: object
    data: bytes
    offset: int
    _view: memoryview

    def __init__(self, buffer: Any, data: Any, offset: int = 0) -> None:
        try:
            view = memoryview(buffer)
        except TypeError:
            raise TypeError(
                f"buffer must support the buffer protocol, not {type(buffer).__name__}"
            ) from None
        if view.readonly:
            raise TypeError(f"buffer must be writable; {type(buffer).__name__} is read-only")
        if not view.c_contiguous:
            raise ValueError("buffer must be C-contiguous")
        view = view.cast("B")
        try:
            payload = bytes(memoryview(data))
        except TypeError:
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}") from None
        offset = _int(offset, "offset")
        if offset < 0 or offset + len(payload) > view.nbytes:
            raise ValueError(
                f"write of {len(payload)} bytes at offset {offset} does not fit "
                f"in a buffer of {view.nbytes} bytes"
            )
        _set(self, buffer=buffer, data=payload, offset=offset, _view=view)
        self._compile()

    def _ops(self) -> list[tuple[Any, ...]]:
        return [("write", repr(self), self._view, self.offset, self.data)]

    def __repr__(self) -> str:
        where = f", offset={self.offset}" if self.offset else ""
        target = f"<{type(self.buffer).__name__} of {self._view.nbytes} bytes>"
        return f"write({target}, {self.data!r}{where})"


class Chdir(Action):
    """Change the working directory (see :func:`chdir`)."""

    __slots__ = ("path",)
    path: bytes

    def __init__(self, path: _Path) -> None:
        _set(self, path=_path(path, "path"))
        self._compile()

    def _ops(self) -> list[tuple[Any, ...]]:
        return [("chdir", repr(self), self.path)]

    def __repr__(self) -> str:
        return f"chdir({os.fsdecode(self.path)!r})"


class Close(Action):
    """Close a file descriptor (see :func:`close`)."""

    __slots__ = ("fd",)
    fd: int

    def __init__(self, fd: int) -> None:
        fd = _int(fd, "fd")
        if not 0 <= fd < 2**31:
            raise ValueError(f"fd must be a non-negative int, not {fd}")
        _set(self, fd=fd)
        self._compile()

    def _ops(self) -> list[tuple[Any, ...]]:
        return [("close", repr(self), self.fd)]

    def __repr__(self) -> str:
        return f"close({self.fd})"


class _SignalStep(Action):
    """Set a signal's disposition in the child (the caller's too with ``CLONE_SIGHAND``)."""

    __slots__ = ("signum",)
    signum: int
    _op = ""

    def __init__(self, signum: int) -> None:
        signum = _int(signum, "signum")
        if not 1 <= signum <= 64:
            raise ValueError(f"signum must be a signal number in 1..64, not {signum}")
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(
                f"{signal.Signals(signum).name} cannot be ignored or caught: its "
                "disposition is always SIG_DFL"
            )
        _set(self, signum=signum)
        self._compile()

    def _ops(self) -> list[tuple[Any, ...]]:
        return [(self._op, repr(self), self.signum)]

    def __repr__(self) -> str:
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = str(self.signum)
        return f"{self._op}({name})"


class IgnoreSignal(_SignalStep):
    """Set a signal's disposition to ``SIG_IGN`` (see :func:`ignore_signal`)."""

    __slots__ = ()
    _op = "ignore_signal"


class DefaultSignal(_SignalStep):
    """Set a signal's disposition to ``SIG_DFL`` (see :func:`default_signal`)."""

    __slots__ = ()
    _op = "default_signal"


class Exec(Action):
    """Replace the task's program with execve(2) (see :func:`exec`)."""

    __slots__ = ("argv", "env", "path")
    path: bytes
    argv: tuple[bytes, ...]
    env: tuple[bytes, ...] | None

    def __init__(
        self,
        path: _Path,
        argv: Iterable[_Path],
        env: Mapping[str | bytes, str | bytes] | None = None,
    ) -> None:
        raw_path = _path(path, "path")
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a sequence of arguments, not a single string")
        args = tuple(_path(arg, "argv item") for arg in argv)
        entries: tuple[bytes, ...] | None = None
        if env is not None:
            if not isinstance(env, Mapping):
                raise TypeError(f"env must be a mapping or None, not {type(env).__name__}")
            items = []
            for key, value in env.items():
                raw_key = _path(key, "env key")
                if not raw_key or b"=" in raw_key:
                    raise ValueError(f"illegal environment variable name {key!r}")
                items.append(raw_key + b"=" + _path(value, "env value"))
            entries = tuple(items)
        _set(self, path=raw_path, argv=args, env=entries)
        self._compile()

    def _ops(self) -> list[tuple[Any, ...]]:
        return [("exec", repr(self), self.path, self.argv, self.env)]

    def __repr__(self) -> str:
        text = repr(os.fsdecode(self.path))
        if self.argv != (self.path,):
            text += f", {[os.fsdecode(a) for a in self.argv]!r}"
        if self.env is not None:
            text += f", env=<{len(self.env)} variables>"
        return f"exec({text})"


class Sequence(Action):
    """Run actions one after the other (see :func:`sequence`)."""

    __slots__ = ("actions",)
    actions: tuple[Action, ...]

    def __init__(self, *actions: Action) -> None:
        flat: list[Action] = []
        for action in actions:
            if isinstance(action, Sequence):
                flat.extend(action.actions)
            elif isinstance(action, Action):
                flat.append(action)
            else:
                raise TypeError(f"sequence() takes actions, not {type(action).__name__}")
        _set(self, actions=tuple(flat))
        self._compile()

    def _ops(self) -> list[tuple[Any, ...]]:
        ops: list[tuple[Any, ...]] = []
        for action in self.actions:
            ops.extend(action._ops())
        return ops

    def __repr__(self) -> str:
        return f"sequence({', '.join(map(repr, self.actions))})"


def exit(code: int = 0) -> Exit:
    """End the task with exit status ``code`` (0..255).

    For a thread task the code is stored for :meth:`pyclone.Task.wait`
    (threads cannot be waited for with waitid).  Without an exit, an action
    ends with status 0 after its last step.
    """
    return Exit(code)


def sleep(seconds: float) -> Sleep:
    """Sleep ``seconds`` (a float) in the child.

    A thread task's sleep ends early when :meth:`pyclone.Task.kill` or
    :meth:`pyclone.Task.terminate` cancels it.
    """
    return Sleep(seconds)


def write(buffer: Any, data: Any, offset: int = 0) -> Write:
    """Copy the bytes ``data`` into the writable ``buffer`` at ``offset``, in the child.

    The write lands in the child's address space: with ``CLONE_VM`` the
    parent sees it; without it, only the child's copy changes.  The buffer
    is held (a bytearray cannot be resized) as long as the action or a
    task running it exists.
    """
    return Write(buffer, data, offset)


def chdir(path: _Path) -> Chdir:
    """Change the child's working directory (with ``CLONE_FS``, the caller's too)."""
    return Chdir(path)


def close(fd: int) -> Close:
    """Close a descriptor in the child (with ``CLONE_FILES``, the caller's too)."""
    return Close(fd)


def ignore_signal(signum: int) -> IgnoreSignal:
    """Ignore ``signum`` in the child (kept across a later :func:`exec`).

    With ``CLONE_SIGHAND`` the handler table is the caller's, so the caller
    ignores the signal too, and :func:`signal.getsignal` says so once the
    task has been waited for (see :func:`resync_signals`).  ``SIGCHLD`` is
    refused there: ignoring it in the caller makes the kernel reap the
    caller's children, this task included, behind its back.
    """
    return IgnoreSignal(signum)


def default_signal(signum: int) -> DefaultSignal:
    """Set ``signum`` back to ``SIG_DFL`` in the child (with ``CLONE_SIGHAND``, in the caller).

    As for :func:`ignore_signal`, the caller's :mod:`signal` module is told
    once the task has been waited for.  Under ``CLONE_SIGHAND`` the task's
    exit signal may then kill the caller: :func:`pyclone.spawn_task` and
    :func:`pyclone.clone` refuse that unless ``allow_fatal_exit_signal=True``.
    """
    return DefaultSignal(signum)


def signal_steps(action: object) -> list[tuple[str, int]]:
    """The ``(op, signum)`` signal steps of ``action``, in order (empty for a callable)."""
    if not isinstance(action, Action):
        return []
    return [(op[0], op[2]) for op in action._ops() if op[0] in _SIGNAL_OPS]


def resync_signals(action: Action) -> list[int]:
    """Make :mod:`signal` agree with the kernel about the signals ``action`` sets.

    A ``CLONE_SIGHAND`` task that ran :func:`ignore_signal` or
    :func:`default_signal` changed the caller's dispositions in the kernel
    behind :mod:`signal`'s back.  :class:`pyclone.Task` calls this when the
    task has been waited for, and :func:`pyclone.clone` with ``CLONE_VFORK``
    when it returns; after a raw clone without ``CLONE_VFORK``, call it once
    the task has been reaped.  For each signal the kernel has at ``SIG_IGN``
    or ``SIG_DFL`` while :func:`signal.getsignal` says otherwise, the
    signal module's view is set to the kernel's (a Python handler that the
    task replaced is dropped: it no longer runs).  Only the main thread can
    do this; elsewhere nothing changes.  Returns the signals updated.
    """
    return _resync(tuple(sorted({sig for _, sig in signal_steps(action)})))


def _resync(signums: tuple[int, ...]) -> list[int]:
    if threading.current_thread() is not threading.main_thread():
        return []
    kernel_view = {0: signal.SIG_DFL, 1: signal.SIG_IGN}
    changed = []
    for signum in signums:
        truth = kernel_view.get(_pyclone._signal_disposition(signum))
        if truth is None:
            continue  # a handler again: whoever installed it knows
        try:
            believed = signal.getsignal(signum)
        except ValueError:
            continue  # a signal the signal module cannot name (glibc's 32 and 33)
        if believed != truth:
            try:
                signal.signal(signum, truth)
            except (OSError, ValueError):
                continue
            changed.append(signum)
    return changed


def exec(
    path: _Path,
    argv: Iterable[_Path],
    env: Mapping[str | bytes, str | bytes] | None = None,
) -> Exec:
    """Execute ``path`` with ``argv`` (no PATH search) and ``env`` (None: the caller's).

    Refused with ``CLONE_THREAD``: an exec in a thread replaces the whole
    process.  With ``env=None`` the child uses the caller's environment as
    it is when the task starts.
    """
    return Exec(path, argv, env)


def sequence(*actions: Action) -> Sequence:
    """Run ``actions`` in order; the first failing step ends the task."""
    return Sequence(*actions)
