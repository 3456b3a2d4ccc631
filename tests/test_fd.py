"""The descriptor owner: closes once, and no exception between two bytecodes loses a number."""

from __future__ import annotations

import errno
import functools
import gc
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

import pyclone
from pyclone._fd import Fd, close_all, pipe

_PACKAGE = os.path.dirname(pyclone.__file__) + os.sep


class _Injected(Exception):
    """What the tracer raises, as a signal handler would."""


def _open(fd: int) -> bool:
    return os.path.exists(f"/proc/self/fd/{fd}")


def _raising_at(step: int) -> Callable[[FrameType, str, Any], Any]:
    """A tracer raising at the ``step``-th opcode (or call) of Python code under pyclone/.

    It stands in for a signal handler that raises wherever the eval loop
    runs one: any Python code an owner runs is a place where it can.
    """
    seen = [0]

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(_PACKAGE):
            return None
        frame.f_trace_opcodes = True
        if event in ("call", "opcode", "line"):
            seen[0] += 1
            if seen[0] == step:
                raise _Injected
        return trace

    return trace


def _interrupted(action: Callable[[], None], step: int) -> None:
    sys.settrace(_raising_at(step))
    try:
        action()
    except _Injected:
        pass
    finally:
        sys.settrace(None)


def test_dup_gives_a_new_owner_of_the_same_file() -> None:
    r, w = pipe()
    try:
        copy = r.dup()
        assert copy.fd is not None and copy.fd not in (r.fd, w.fd)
        assert os.get_inheritable(copy.fd) is False  # close-on-exec, as every pyclone fd
        os.write(w.fd, b"x")  # type: ignore[arg-type]
        r.close()
        assert os.read(copy.fd, 1) == b"x"  # the copy outlives the original
        number = copy.fd
        copy.close()
        assert not _open(number)
        with pytest.raises(OSError) as info:
            copy.dup()
        assert info.value.errno == errno.EBADF
    finally:
        close_all([r, w])


def test_close_closes_once() -> None:
    r, w = pipe()
    number = r.fd
    assert number is not None and _open(number)
    r.close()
    assert r.fd is None and not _open(number)
    r.close()  # a second close does nothing, even if the number was reused
    w.close()


def test_freed_owner_closes() -> None:
    r, w = pipe()
    numbers = [r.fd, w.fd]
    del r, w
    gc.collect()
    assert not any(_open(n) for n in numbers if n is not None)


def test_close_reports_the_kernel_errno() -> None:
    owner = Fd(os.dup(0))
    assert owner.fd is not None
    os.close(owner.fd)  # closed behind the owner's back
    with pytest.raises(OSError) as info:
        owner.close()
    assert info.value.errno == 9  # EBADF
    assert owner.fd is None


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("3", TypeError, "fd must be an int, not str"),
        (True, TypeError, "fd must be an int, not bool"),
        (3.0, TypeError, "fd must be an int, not float"),
        (-1, ValueError, "fd must be a descriptor number >= 0, not -1"),
        (1 << 40, ValueError, "fd is out of range"),
    ],
)
def test_bad_numbers_are_refused(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Fd(value)  # type: ignore[arg-type]


def test_repr_says_what_it_owns() -> None:
    r, w = pipe()
    assert repr(r) == f"<pyclone Fd {r.fd}>"
    close_all([r, w])
    assert repr(r) == "<pyclone Fd closed>"


def _close_each(owners: list[Fd]) -> None:
    for owner in owners:
        owner.close()


@pytest.mark.parametrize("how", ["close", "drop", "close_all"])
def test_exception_at_any_point_loses_no_descriptor(how: str) -> None:
    """An exception raised at any step of closing or freeing leaves nothing open.

    Owners written in Python lost the number when an exception came right
    after they forgot it, or before the first line of their ``__del__``.
    """
    for step in range(1, 40):  # more steps than the Python owners had
        r, w = pipe()
        numbers = [r.fd, w.fd]
        owners = [r, w]
        del r, w
        if how == "close":
            _interrupted(functools.partial(_close_each, owners), step)
        elif how == "drop":
            _interrupted(owners.clear, step)
        else:
            _interrupted(functools.partial(close_all, owners), step)
        owners.clear()
        gc.collect()
        assert not any(_open(n) for n in numbers if n is not None), f"leaked at step {step}"
