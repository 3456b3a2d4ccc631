"""Setup failures: SandboxError, and each failure reported as the step that failed."""

from __future__ import annotations

import errno
import os
import pickle
from typing import Any, cast

import pytest

import pyclone
from pyclone import Sandbox, SandboxError
from pyclone.sandbox import _status

from conftest import WAIT, Health, check_health
from sandbox_helpers import WHO, run_as


def test_sandbox_error_is_a_picklable_oserror() -> None:
    exc = SandboxError("mount /proc", errno.EPERM, "Operation not permitted", "/proc")
    assert isinstance(exc, OSError)
    back = pickle.loads(pickle.dumps(exc))
    assert (back.step, back.errno, back.strerror, back.filename) == (
        "mount /proc",
        errno.EPERM,
        "Operation not permitted",
        "/proc",
    )
    assert str(back) == (
        "sandbox setup failed at 'mount /proc': [Errno 1] Operation not permitted: '/proc'"
    )


# -- the status records -----------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        ("ok",),
        ("error", "exec", errno.ENOENT, "No such file or directory", "/no/such", None),
        ("error", "mount /proc", None, "ValueError: a \0 in it", None, "/b"),
        ("error", "bind", -1, "", "caf\udce9", "\u00e9t\u00e9"),  # an undecodable byte, escaped
    ],
)
def test_a_status_record_comes_back_as_it_was_sent(record: tuple[Any, ...]) -> None:
    assert _status.decode(_status.encode(record)) == record


def test_a_status_field_must_be_a_str_an_int_or_none() -> None:
    for bad in (b"bytes", 1.5, True, ["list"]):
        with pytest.raises(TypeError, match="a str, an int or None"):
            _status.encode(("error", bad))


class _Planted:
    """What unpickling it does: calls ``_PLANTED.append`` (any call would do)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_PLANTED.append, ("ran in the caller",))


_PLANTED: list[str] = []


def _read_status(data: bytes) -> None:
    r, w = os.pipe()
    try:
        os.write(w, data)
        os.close(w)
        w = -1
        # the task is read only for a report with no record at all
        _status.await_status(r, cast(Any, None))
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_a_pickle_on_the_status_pipe_is_refused_not_unpickled() -> None:
    """The write end is in the sandbox: what arrives there must never run in the caller."""
    payload = pickle.dumps(("error", _Planted()))
    with pytest.raises(SandboxError, match="not one of pyclone's") as caught:
        _read_status(_status.RECORD.pack(len(payload)) + payload)
    assert caught.value.step == "setup"
    assert _PLANTED == []


@pytest.mark.parametrize(
    "body",
    [
        _status.encode(("error", "exec")),  # too few fields
        _status.encode(("error", 5, None, "x", None, None)),  # a step that is not a name
        _status.encode(("error", "exec", None, "x", 3, None)),  # a path that is a number
        _status.encode(("done",)),  # no such kind
        b"\x05\x00\x00\x00i9",  # a field longer than its record
        b"\x03\x00\x00\x00i-x",  # an int that is not one
    ],
)
def test_a_malformed_status_record_is_a_setup_error(body: bytes) -> None:
    with pytest.raises(SandboxError, match="not one of pyclone's") as caught:
        _read_status(_status.RECORD.pack(len(body)) + body)
    assert caught.value.step == "setup"


def test_an_error_record_after_the_ok_one_is_still_raised() -> None:
    """An exec that fails after the setup reported success."""
    records = b""
    for record in (("ok",), ("error", "exec", errno.ENOENT, "No such file", "/x", None)):
        body = _status.encode(record)
        records += _status.RECORD.pack(len(body)) + body
    with pytest.raises(SandboxError) as caught:
        _read_status(records)
    assert (caught.value.step, caught.value.errno, caught.value.filename) == (
        "exec",
        errno.ENOENT,
        "/x",
    )


# -- setup failures ---------------------------------------------------------------------


def _failures() -> list[tuple[str, int | None, str | None]]:
    out = []
    for sb, target in (
        (Sandbox(new={"user", "mnt"}, bind=[("/no/such/dir", "/x")]), ["true"]),
        (Sandbox(new={"user", "mnt"}, tmpfs=["/no/such/mount/point"]), ["true"]),
        (Sandbox(new={"user", "mnt"}, ro_bind=[("/usr", "/usr")], symlink=[("usr/bin", "/bin")]),
         ["no-such-program"]),
        (Sandbox(new={"user", "mnt"}, ro_bind=[("/usr", "/usr")]), ["/usr"]),
    ):  # fmt: skip
        try:
            sb.spawn(target).wait(WAIT)
            out.append(("no error", None, None))
        except SandboxError as exc:
            out.append((exc.step, exc.errno, exc.filename))
    return out


@WHO
def test_setup_failures_name_their_step(who: str) -> None:
    before = Health.take() if who == "root" else None
    assert run_as(who, _failures) == [
        ("bind /x", errno.ENOENT, "/no/such/dir"),
        ("mount tmpfs /no/such/mount/point", errno.ENOENT, "/no/such/mount/point"),
        ("exec", errno.ENOENT, "no-such-program"),
        ("exec", errno.EACCES, "/usr"),
    ]
    if before is not None:
        check_health(before)  # nothing half-started left: no zombie, no fd


def _bad_map() -> tuple[str, int | None, str | None]:
    try:
        Sandbox(new="user", uid_map=[(0, 0, 1)]).spawn(lambda: 0).wait(WAIT)
    except SandboxError as exc:
        return exc.step, exc.errno, exc.filename
    return ("no error", None, None)


def test_bad_uid_map_is_reported_as_uid_map() -> None:
    step, err, filename = run_as("nobody", _bad_map)  # mapping outside uid 0 needs privilege
    assert (step, err) == ("uid_map", errno.EPERM)
    assert filename is not None and filename.endswith("/uid_map")


def test_callable_failure_is_still_a_child_error(healthy: Health) -> None:
    def boom() -> None:
        raise KeyError("inside")

    task = Sandbox(new="user").spawn(boom)
    with pytest.raises(pyclone.ChildError) as info:
        task.result(WAIT)
    assert isinstance(info.value.exception, KeyError)
