"""Python callables in CLONE_VM children: the "borrowed interpreter".

A child created with ``CLONE_VM | CLONE_VFORK`` shares the caller's memory
and runs the callable on the caller's interpreter, in a fresh thread state,
while the caller is suspended.  What the child writes into Python objects
is visible to the caller afterwards, and :meth:`Task.result` returns the
child's return value itself (nothing is pickled).

A child should leave by returning, raising, or through :func:`child_exit`
and :func:`child_exec`, which unwind its Python frames first.  ``os._exit``,
``os.execv`` or a signal still work, but abandon the child's thread state:
pyclone keeps it allocated (freeing it could crash the interpreter), counts
it in :func:`abandoned_thread_states` and emits a :class:`ResourceWarning`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Union

from . import _pyclone
from .errors import UnsupportedFlags
from .flags import CloneFlag

__all__ = ["abandoned_thread_states", "child_exec", "child_exit", "vm_supported"]

_ExitRequest: type[BaseException] = _pyclone.ChildExitRequest
_ExecRequest: type[BaseException] = _pyclone.ChildExecRequest

StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def abandoned_thread_states() -> int:
    """How many thread states CLONE_VM children have abandoned in this process.

    Each child that left without unwinding (``os._exit``, ``os.execv``,
    killed by a signal) adds one; each costs some kilobytes that are never
    freed.
    """
    return int(_pyclone.abandoned_thread_states())


def vm_supported() -> bool:
    """True if this interpreter can run Python callables in CLONE_VM children.

    GIL builds of CPython 3.10 to 3.15; free-threaded builds and other
    versions are refused with :class:`UnsupportedFlags`.
    """
    return bool(_pyclone._vm_supported())


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def child_exit(code: int = 0) -> NoReturn:
    """End the current pyclone child with exit status ``code``.

    In a CLONE_VM child this raises an internal :class:`BaseException`
    that unwinds every Python frame of the child (``finally`` blocks and
    ``with`` exits run) before pyclone ends the child: its thread state is
    freed, not abandoned.  In a fork-like child (no CLONE_VM) it flushes
    ``sys.stdout``/``sys.stderr`` and calls :func:`os._exit`.  Anywhere else
    (in the caller itself) it raises :class:`RuntimeError`: use
    :func:`sys.exit` there.
    """
    if not isinstance(code, int):
        raise TypeError(f"code must be an int, not {type(code).__name__}")
    kind = _pyclone._child_kind()
    if kind == "vm":
        raise _ExitRequest(code)
    if kind == "fork":
        _flush()
        os._exit(code)
    raise RuntimeError(
        "child_exit() called outside a task created by pyclone; use sys.exit() to end this process"
    )


def _exec_arguments(
    path: StrOrBytesPath, argv: Sequence[StrOrBytesPath], env: Mapping[Any, Any] | None
) -> tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]]:
    """Validate and encode exec arguments the way os.execve does."""
    bpath = os.fsencode(path)
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a sequence of strings, not a single string")
    bargv = tuple(os.fsencode(arg) for arg in argv)
    if not bargv:
        raise ValueError("argv must not be empty")
    if not bargv[0]:
        raise ValueError("argv first element cannot be empty")
    environ: Mapping[Any, Any] = os.environ if env is None else env
    benv = []
    for key, value in environ.items():
        bkey, bvalue = os.fsencode(key), os.fsencode(value)
        if not bkey or b"=" in bkey:
            raise ValueError(f"illegal environment variable name {key!r}")
        benv.append(bkey + b"=" + bvalue)
    for item in (bpath, *bargv, *benv):
        if b"\0" in item:
            raise ValueError("embedded null byte")
    return bpath, bargv, tuple(benv)


def child_exec(
    path: StrOrBytesPath,
    argv: Sequence[StrOrBytesPath],
    env: Mapping[Any, Any] | None = None,
) -> NoReturn:
    """Replace the current pyclone child with the program at ``path``.

    ``argv`` is the new program's argument list (``argv[0]`` first) and
    ``env`` its environment (default: :data:`os.environ`).  The arguments
    are checked here (``TypeError``/``ValueError`` in the child).

    In a CLONE_VM child this unwinds every Python frame of the child first;
    pyclone then resets the child's signal handlers to ``SIG_DFL`` (unless
    it shares them, ``CLONE_SIGHAND``), restores the signal mask, and calls
    execve(2).  If that fails, the child exits with status 127 and the
    :func:`~pyclone.clone` or :func:`~pyclone.spawn_task` call that made it
    raises :class:`OSError` naming the step (the child has been reaped).
    In a fork-like child this is :func:`os.execve`; in the caller itself it
    raises :class:`RuntimeError`.
    """
    bpath, bargv, benv = _exec_arguments(path, argv, env)
    kind = _pyclone._child_kind()
    if kind == "vm":
        raise _ExecRequest(bpath, bargv, benv)
    if kind == "fork":
        _flush()
        os.execve(bpath, list(bargv), dict(item.split(b"=", 1) for item in benv))
    raise RuntimeError(
        "child_exec() called outside a task created by pyclone; use os.execv() to "
        "replace this process"
    )


def _guard_thread_start() -> None:
    """Refuse threading.Thread.start() in CLONE_VM children on Python < 3.12.

    From 3.12 on the C layer refuses it through the ``_thread.start_*``
    audit events; 3.10 and 3.11 raise no such event, so the function that
    :mod:`threading` starts threads with is wrapped instead (a transparent
    wrapper outside CLONE_VM children).
    """
    start: Callable[..., Any] = threading._start_new_thread  # type: ignore[attr-defined]
    if getattr(start, "_pyclone_guard", False):
        return

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _pyclone._child_kind() == "vm":
            raise RuntimeError(
                "cannot start a thread in a CLONE_VM child: it would run in the caller's "
                "memory and die wherever it is when the child exits or execs, which can "
                "hang the caller; start threads in the parent, or use a child without CLONE_VM"
            )
        return start(*args, **kwargs)

    guarded._pyclone_guard = True  # type: ignore[attr-defined]
    threading._start_new_thread = guarded  # type: ignore[attr-defined]


if sys.version_info < (3, 12):
    _guard_thread_start()


def _spawn_borrowed(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    flags: CloneFlag,
    *,
    exit_signal: int,
    create: Callable[[Callable[[], Any], CloneFlag, int, bool], tuple[int, int | None]],
    before_start: Callable[..., None] | None,
    child_enter: Callable[[], None] | None = None,
) -> tuple[int, int | None, list[tuple[Any, ...]]]:
    """Create a CLONE_VM child running ``target``; return (pid, pidfd, outcome).

    ``outcome`` is a list the child fills in the shared memory:
    ``[("ok", value)]`` or ``[("error", exception, traceback_text)]``, or
    nothing if the child left another way.  ``before_start`` (parent-side
    setup the child must wait for: uid maps, cgroup placement) is refused
    with CLONE_VFORK; ``child_enter()`` runs in the child before the target.
    """
    if before_start is not None and flags & CloneFlag.VFORK:
        raise UnsupportedFlags(
            "a setup step before the child starts (uid maps, time offsets, cgroup "
            "placement) cannot run with CLONE_VFORK: the creator is suspended until "
            "the child execs or exits"
        )
    outcome: list[tuple[Any, ...]] = []

    def child() -> int:
        try:
            if child_enter is not None:
                child_enter()
            value = target(*args, **kwargs)
        except (SystemExit, _ExitRequest, _ExecRequest):
            raise
        except BaseException as exc:
            import traceback  # loaded by the creator before the clone (see pyclone._preload)

            outcome.append(("error", exc, traceback.format_exc()))
            return 1
        outcome.append(("ok", value))
        return 0

    pid, pidfd = create(child, flags, exit_signal, False)
    return pid, pidfd, outcome
