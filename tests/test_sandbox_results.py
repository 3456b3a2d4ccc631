"""What a sandboxed callable sends back: plain data only, since the sandbox writes the pipe.

A pickle can name any callable for the unpickling process to call, so a
caller that unpickled whatever the sandbox wrote would run the sandbox's
code outside it.  These tests write such a pickle from inside a real
sandbox and check that the caller refuses it, and that plain results and
errors still come back.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import pytest

from pyclone import ChildError, Sandbox, _transport

from conftest import WAIT, Health, watchdog

#: What the planted pickle's call appends to, in whichever process unpickles it.
_PLANTED: list[str] = []

_SANDBOX = Sandbox(new={"user", "pid", "net"})


def _plant(note: str) -> None:
    _PLANTED.append(note)


class _Planted:
    """Unpickling it calls :func:`_plant` (it could as well be os.system)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_plant, ("ran in the caller",))


def _write_frame(outcome: object) -> None:
    """Bypass the child's own check: write a frame as code in the sandbox could."""
    fd = _transport._child_result_fd
    assert fd is not None
    payload = pickle.dumps(outcome)
    os.write(fd, _transport.FRAME.pack(len(payload)) + payload)
    os._exit(0)


def test_a_pickle_that_names_a_callable_is_refused_not_called(healthy: Health) -> None:
    task = _SANDBOX.spawn(_write_frame, args=(("ok", _Planted()),))
    with pytest.raises(ChildError, match=r"_plant is not plain data") as caught:
        task.result(WAIT)
    assert caught.value.returncode == 0
    assert _PLANTED == []


@pytest.mark.parametrize("outcome", [7, ("ok",), ("error", None, 1, "x"), ("mine", 1)])
def test_plain_data_without_an_outcomes_shape_is_refused(outcome: object) -> None:
    task = _SANDBOX.spawn(_write_frame, args=(outcome,))
    with pytest.raises(ChildError, match="not hold an outcome of pyclone's"):
        task.result(WAIT)


def _plain() -> object:
    return {
        "n": [1, -2, 2.5, 1 + 2j, True, None],
        "bytes": (b"x", bytearray(b"y")),
        "sets": ({3}, frozenset({4})),
        "ranges": (range(3), slice(1, 2)),
        "error": KeyError("k"),
    }


def test_plain_data_comes_back_whole(healthy: Health) -> None:
    got = _SANDBOX.spawn(_plain).result(WAIT)
    assert isinstance(got, dict)
    assert {k: v for k, v in got.items() if k != "error"} == {
        k: v for k, v in _plain().items() if k != "error"
    }
    assert isinstance(got["error"], KeyError) and got["error"].args == ("k",)


class _Point:
    pass


def test_a_result_of_another_type_fails_in_the_child_with_its_name() -> None:
    with pytest.raises(ChildError, match=r"unpicklable result _Point: .*_Point is not plain data"):
        _SANDBOX.spawn(_Point).result(WAIT)


class _MyError(Exception):
    pass


def _raise_mine() -> None:
    raise _MyError("custom")


def _raise_builtin() -> None:
    raise PermissionError(13, "no", "/x")


def test_a_custom_exception_comes_back_as_its_name_and_traceback() -> None:
    with pytest.raises(ChildError, match="raised _MyError: custom") as caught:
        _SANDBOX.spawn(_raise_mine).result(WAIT)
    assert caught.value.exception is None
    assert "_MyError: custom" in (caught.value.remote_traceback or "")


def test_a_builtin_exception_comes_back_as_itself() -> None:
    with pytest.raises(ChildError, match="raised PermissionError") as caught:
        _SANDBOX.spawn(_raise_builtin).result(WAIT)
    exc = caught.value.exception
    assert isinstance(exc, PermissionError)
    assert (exc.errno, exc.strerror, exc.filename) == (13, "no", "/x")


def test_a_callable_outside_a_sandbox_still_sends_any_picklable_result() -> None:
    """The restriction is the sandbox's: the caller's own children are trusted."""
    import pyclone

    got = pyclone.spawn_task(_Point).result(WAIT)
    assert type(got).__name__ == "_Point"


# -- how much of it the caller holds ------------------------------------------


def _flood(declared: int) -> None:
    """Declare ``declared`` bytes, then send until the caller stops reading."""
    fd = _transport._child_result_fd
    assert fd is not None
    os.write(fd, _transport.FRAME.pack(declared))
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except BrokenPipeError:
        os._exit(3)  # the caller closed the pipe: it refused the rest


@pytest.mark.parametrize("timeout", [WAIT, None])
def test_a_flood_is_refused_unread_and_the_sender_gets_epipe(
    healthy: Health, timeout: float | None
) -> None:
    """With or without a timeout: the reader closes the pipe at once, not once the task
    ends, which it cannot while blocked on the full pipe (the watchdog bounds the wait)."""
    task = _SANDBOX.spawn(_flood, args=(1 << 62,))
    with pytest.raises(ChildError, match=rf"{1 << 62} bytes, more than its result_limit of"):
        with watchdog(WAIT):
            task.result(timeout)
    assert task.returncode == 3
    assert len(task._buffer) == _transport.FRAME.size  # only the header was kept


def test_the_default_limit_is_64_mib() -> None:
    refused = _SANDBOX.spawn(_flood, args=((64 << 20) + 1,))
    with pytest.raises(ChildError, match=f"result_limit of {64 << 20} bytes"):
        refused.result(WAIT)
    assert refused.returncode == 3


def _blob(size: int) -> bytes:
    return b"x" * size


def test_a_result_within_the_limit_comes_back_and_one_over_it_does_not() -> None:
    assert _SANDBOX.spawn(_blob, args=(1000,), result_limit=2000).result(WAIT) == b"x" * 1000
    with pytest.raises(ChildError, match="more than its result_limit of 100 bytes") as caught:
        _SANDBOX.spawn(_blob, args=(1000,), result_limit=100).result(WAIT)
    assert caught.value.exception is None


def test_no_limit_accepts_more_than_the_default() -> None:
    size = (64 << 20) + 1
    got = _SANDBOX.spawn(_blob, args=(size,), result_limit=None).result(WAIT)
    assert isinstance(got, bytes) and len(got) == size


def test_a_flood_is_refused_when_awaited_too(healthy: Health) -> None:
    import asyncio

    async def main() -> int | None:
        task = _SANDBOX.spawn(_flood, args=(1 << 40,), result_limit=1000)
        code = await asyncio.wait_for(task.wait_async(), WAIT)
        with pytest.raises(ChildError, match="more than its result_limit of 1000 bytes"):
            task.result(WAIT)
        assert len(task._buffer) == _transport.FRAME.size
        return code

    assert asyncio.run(main()) == 3


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1, ValueError, "result_limit must be at least 0 bytes, not -1"),
        ("1", TypeError, "result_limit must be an int .* not str"),
        (True, TypeError, "result_limit must be an int .* not bool"),
        (1.5, TypeError, "result_limit must be an int .* not float"),
    ],
)
def test_a_bad_result_limit_is_refused_before_anything_starts(
    healthy: Health, value: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _SANDBOX.spawn(_blob, args=(1,), result_limit=value)  # type: ignore[arg-type]
