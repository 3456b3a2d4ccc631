"""The result channel of a fork-like task: one pickled frame from child to creator.

The child pickles its outcome -- ``("ok", value)`` or ``("error", exc,
traceback text, summary)`` -- behind an 8-byte length and writes it to a
pipe; the creator reads the pipe while it waits and unpickles the frame in
:meth:`pyclone.Task.result`.  A CLONE_VM child shares the creator's memory
instead and leaves its outcome in a list (:func:`shared_result`).

A sandboxed child is not trusted with the caller's unpickler: whatever runs
in the sandbox can write to the pipe, and a pickle can name any callable
for the creator to call.  Its outcome is rebuilt from plain data and builtin
exceptions only (:func:`plain_loads`), and the child checks its own outcome
the same way first, so that a result of another type fails with its name.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import signal
import struct
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._fd import release_signals
from .errors import ChildError

if TYPE_CHECKING:
    import pickle

#: The frame header: the payload's length.
FRAME = struct.Struct("<Q")

#: In a child: the descriptor its outcome goes to (so sandbox setup keeps it open).
_child_result_fd: int | None = None

#: In a child: send only what :func:`plain_loads` rebuilds (a sandboxed callable).
_plain_only = False

#: The globals a plain-data outcome may name: the builtin types pickle rebuilds
#: through a call, and the builtin exceptions (constructed from their args only).
PLAIN_GLOBALS = frozenset(
    {"bytearray", "complex", "frozenset", "range", "set", "slice"}
    | {
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
)


def plain_loads(data: bytes) -> Any:
    """:func:`pickle.loads` for a sender that is not trusted: plain data only."""
    return _plain_unpickler()(io.BytesIO(data)).load()


def _plain_unpickler() -> type[pickle.Unpickler]:
    """The unpickler that rebuilds plain data and builtin exceptions, and nothing else."""
    global _PlainUnpickler
    if _PlainUnpickler is not None:
        return _PlainUnpickler
    import pickle

    class PlainUnpickler(pickle.Unpickler):
        """Refuses to look up anything but :data:`PLAIN_GLOBALS`."""

        def find_class(self, module: str, name: str) -> Any:
            if module == "builtins" and name in PLAIN_GLOBALS:
                return getattr(builtins, name)
            raise pickle.UnpicklingError(
                f"{module}.{name} is not plain data (a sandboxed callable's result may hold "
                "None, bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, "
                "set, frozenset, range, slice and builtin exceptions)"
            )

    _PlainUnpickler = PlainUnpickler
    return PlainUnpickler


#: Made on first use (see :func:`_plain_unpickler`), like pickle itself.
_PlainUnpickler: type[pickle.Unpickler] | None = None


def plain_results_only() -> None:
    """In a sandboxed child, before its target runs: send plain data or fail by name."""
    global _plain_only
    _plain_only = True


# -- the child side ----------------------------------------------------------


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
    import pickle  # loaded by the creator before the clone (see pyclone._preload)

    payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    if _plain_only:
        plain_loads(payload)  # what the creator will do: an UnpicklingError names the type
    return FRAME.pack(len(payload)) + payload


#: The frame of a target that returned None: what ``_framed(("ok", None))`` makes
#: with pickle's protocol 5 (written out: pickle loads on first use), and what
#: every later pickle still reads.
_OK_NONE = (
    b"\x14\x00\x00\x00\x00\x00\x00\x00"  # the payload's 20 bytes
    b"\x80\x05\x95\t\x00\x00\x00\x00\x00\x00\x00\x8c\x02ok\x94N\x86\x94."
)


def _child_main(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    fd: int,
    mask: set[int] | None = None,
) -> int:
    """Run the target in a fork-like child and send its outcome to the parent.

    ``mask`` is the creator's signal mask: the launch held every
    asynchronous signal so that one sent early is not lost in the
    interpreter's after-fork hooks, and restoring the mask here, inside
    the target's ``try``, delivers it now.  A KeyboardInterrupt that ends
    the target is sent back like any exception, and then the child dies
    by SIGINT (returncode -2), as the python program does on an uncaught
    Ctrl-C.
    """
    global _child_result_fd
    _child_result_fd = fd
    try:
        if mask is not None:
            release_signals(mask)
        value = target(*args, **kwargs)
    except SystemExit:
        raise
    except BaseException as exc:
        text = _format_exc(exc)
        sys.stderr.write(text)
        summary = f"{type(exc).__qualname__}: {exc}"
        try:
            _send(fd, ("error", _portable(exc), text, summary))
        except Exception:
            _send(fd, ("error", None, text, summary))
        if isinstance(exc, KeyboardInterrupt):
            _die_by_sigint()
        return 1
    try:
        if value is None:
            _send_frame(fd, _OK_NONE)  # the same bytes, without pickling
        else:
            _send(fd, ("ok", value))
    except BrokenPipeError:
        return 0
    except Exception as exc:
        text = _format_exc(exc)
        summary = f"unpicklable result {type(value).__qualname__}: {exc}"
        _send(fd, ("error", None, text, summary))
        return 1
    return 0


def _format_exc(exc: BaseException) -> str:
    """The traceback text of ``exc``, being handled; its last line where none can be had.

    :mod:`traceback` is loaded by the creator before the clone (see
    :mod:`pyclone._preload`), except for a sandbox's command, whose setup
    raises nothing unforeseen: should it, the import runs in the new root,
    which need not hold the standard library.
    """
    try:
        import traceback

        return traceback.format_exc()
    except Exception:
        return (
            f"{type(exc).__qualname__}: {exc}\n(no traceback: the traceback module cannot load)\n"
        )


def _portable(exc: BaseException) -> BaseException | None:
    """``exc`` if the creator will be able to rebuild it from its pickle, else None.

    An exception whose ``__init__`` takes other arguments than its
    ``args`` pickles fine but fails to unpickle; the creator then gets the
    type name, message and traceback text alone (so too, in a sandbox, for an
    exception that is not a builtin one or carries what is not plain data).
    """
    import pickle

    loads = plain_loads if _plain_only else pickle.loads
    try:
        loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        return None
    return exc


def _die_by_sigint() -> None:
    """End this child by SIGINT with its default action (flushing stdio first)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    os.kill(os.getpid(), signal.SIGINT)


# -- the creator side ---------------------------------------------------------


def frame_complete(buffer: bytearray) -> bool:
    """True once ``buffer`` holds the whole frame (header and payload)."""
    if len(buffer) < FRAME.size:
        return False
    size: int = FRAME.unpack_from(buffer)[0]
    return len(buffer) >= FRAME.size + size


def over_limit(buffer: bytearray, limit: int | None) -> bool:
    """Does the frame's header declare a payload larger than ``limit`` bytes?

    The header comes first, so the reader can stop before it buffers
    anything of a payload it will refuse (a sandbox could otherwise make
    the caller hold as much as it cares to send).
    """
    if limit is None or len(buffer) < FRAME.size:
        return False
    size: int = FRAME.unpack_from(buffer)[0]
    return size > limit


#: What unpickling a frame raises when the child's objects cannot be rebuilt
#: here (a missing class, an ``__init__`` that the pickled args do not fit),
#: with pickle's UnpicklingError (added where pickle is loaded).  Anything else
#: (a KeyboardInterrupt from a signal handler) passes through.
_UNPICKLING_ERRORS = (
    AttributeError,
    EOFError,
    ImportError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
)


def piped_result(
    buffer: bytearray,
    pid: int,
    returncode: int | None,
    *,
    plain: bool = False,
    limit: int | None = None,
) -> Any:
    """The target's value from the frame in ``buffer``; raise ChildError for anything else.

    ``plain``: the sender is not trusted (a sandbox), so the frame is rebuilt
    with :func:`plain_loads` and must have an outcome's shape.  ``limit``:
    the largest payload accepted, in bytes (the reader kept only the header
    of a larger one).
    """
    if over_limit(buffer, limit):
        size = FRAME.unpack_from(buffer)[0]
        raise ChildError(
            f"task {pid} sent a result of {size} bytes, more than its result_limit of "
            f"{limit} bytes: none of it was read (a larger result_limit accepts it)",
            returncode=returncode,
        )
    if not frame_complete(buffer):
        raise ChildError(
            f"task {pid} {describe_end(returncode)} without returning a result",
            returncode=returncode,
        )
    import pickle

    # an untrusted frame may fail in any way: every error of it is the child's
    caught: type[Exception] | tuple[type[Exception], ...] = (
        Exception if plain else (pickle.UnpicklingError, *_UNPICKLING_ERRORS)
    )
    try:
        payload = bytes(buffer[FRAME.size :])
        if plain:
            outcome = plain_loads(payload)
            _check_outcome(outcome)
        else:
            outcome = pickle.loads(payload)
    except caught as err:
        raise ChildError(
            f"task {pid} sent back an outcome that cannot be rebuilt here: "
            f"{type(err).__qualname__}: {err}",
            returncode=returncode,
        ) from err
    if outcome[0] == "ok":
        return outcome[1]
    _, exc, text, summary = outcome
    error = ChildError(
        f"task {pid} raised {summary}",
        exception=exc,
        remote_traceback=text,
        returncode=returncode,
    )
    if exc is not None:
        raise error from exc
    raise error


def _check_outcome(outcome: Any) -> None:
    """ValueError unless ``outcome`` has the shape of one :func:`_child_main` sends."""
    if type(outcome) is tuple and len(outcome) == 2 and outcome[0] == "ok":
        return
    if (
        type(outcome) is tuple
        and len(outcome) == 4
        and outcome[0] == "error"
        and (outcome[1] is None or isinstance(outcome[1], BaseException))
        and type(outcome[2]) is str
        and type(outcome[3]) is str
    ):
        return
    raise ValueError("the frame does not hold an outcome of pyclone's")


def shared_result(outcome: list[tuple[Any, ...]], pid: int, returncode: int | None) -> Any:
    """The outcome a CLONE_VM child left in shared memory (the objects themselves)."""
    if not outcome:
        raise ChildError(
            f"task {pid} {describe_end(returncode)} without returning a result",
            returncode=returncode,
        )
    first = outcome[0]
    if first[0] == "ok":
        return first[1]
    _, exc, text = first
    raise ChildError(
        f"task {pid} raised {type(exc).__qualname__}: {exc}",
        exception=exc,
        remote_traceback=text,
        returncode=returncode,
    ) from exc


def describe_end(returncode: int | None) -> str:
    """How a task ended, for a message: "exited with status 3", "was killed by SIGKILL"."""
    if returncode is None:
        return "ended with a status the kernel could not report"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"
