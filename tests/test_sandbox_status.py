"""Setup failures: SandboxError, and each failure reported as the step that failed."""

from __future__ import annotations

import errno
import pickle

import pytest

import pyclone
from pyclone import Sandbox, SandboxError

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
