"""Caller-given seccomp programs: Sandbox(seccomp_programs=...) and _pyclone.set_seccomp_filter."""

from __future__ import annotations

import errno
import os

import pytest
from bpf_programs import NO_RETURN, deny

from pyclone import Sandbox, SandboxError, _pyclone

from conftest import WAIT
from sandbox_helpers import WHO, in_fork, run_as


def _getcwd_errno() -> int | None:
    try:
        os.getcwd()
    except OSError as exc:
        return exc.errno
    return None


def _in_sandbox(programs: list[bytes]) -> int:
    """getcwd's errno in a sandbox loading ``programs`` (0 when it works)."""
    sb = Sandbox(new="user", seccomp_programs=programs)
    return int(sb.spawn(_getcwd_errno).result(WAIT) or 0)


@WHO
def test_a_program_makes_the_call_fail_with_its_errno(who: str) -> None:
    assert run_as(who, _in_sandbox, [deny("getcwd", errno.EACCES)]) == errno.EACCES
    assert run_as(who, _in_sandbox, []) == 0  # nothing loaded: getcwd works


@WHO
def test_programs_load_in_order_the_last_wins_among_equals(who: str) -> None:
    # The kernel runs every filter; of equal actions the newest filter's data is used.
    programs = [deny("getcwd", errno.EACCES), deny("getcwd", errno.ENOENT)]
    assert run_as(who, _in_sandbox, programs) == errno.ENOENT
    assert run_as(who, _in_sandbox, programs[::-1]) == errno.EACCES


@WHO
def test_the_init_loads_the_programs_too(who: str) -> None:
    def init_filters() -> list[str]:
        program = deny("getcwd", errno.EACCES)
        sb = Sandbox(new={"user", "pid", "mnt"}, proc="/proc", seccomp_programs=program)
        # pid 1's Seccomp_filters, read in the sandbox's own /proc: as many as the target's
        return sb.spawn(_filters_of_pid_1).result(WAIT)  # type: ignore[no-any-return]

    counts = run_as(who, init_filters)
    assert counts[0] == counts[1] and int(counts[0]) >= 1, counts


def _filters_of_pid_1() -> list[str]:
    found = []
    for pid in ("1", "self"):
        with open(f"/proc/{pid}/status") as f:
            found += [line.split()[1] for line in f if line.startswith("Seccomp_filters:")]
    return found


def test_a_program_the_kernel_refuses_fails_the_step() -> None:
    def refused() -> tuple[str, int | None]:
        try:
            Sandbox(new="user", seccomp_programs=[NO_RETURN]).spawn(_getcwd_errno)
        except SandboxError as exc:
            return exc.step, exc.errno
        return "", None

    assert run_as("nobody", refused) == ("seccomp_programs", errno.EINVAL)


@pytest.mark.parametrize(
    ("programs", "error", "match"),
    [
        ("text", TypeError, "seccomp_programs must be bytes or an iterable"),
        (3, TypeError, "seccomp_programs must be bytes or an iterable"),
        ([3], TypeError, r"seccomp_programs\[0\] must be bytes"),
        (b"\0" * 7, ValueError, "whole number of 8-byte instructions"),
        ([b""], ValueError, r"seccomp_programs\[0\] must hold 1 to 4096 instructions, not 0"),
        ([b"\0" * 8 * 4097], ValueError, "not 4097"),
    ],
)
def test_programs_are_checked_when_the_sandbox_is_built(
    programs: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Sandbox(new="user", seccomp_programs=programs)  # type: ignore[arg-type]


def test_one_program_or_several_become_a_tuple_of_bytes() -> None:
    program = deny("getcwd", errno.EACCES)
    assert Sandbox(seccomp_programs=program).seccomp_programs == (program,)
    many = Sandbox(seccomp_programs=[bytearray(program), memoryview(program)])
    assert many.seccomp_programs == (program, program)
    assert "seccomp_programs" not in repr(Sandbox())


def test_the_c_entry_checks_its_argument() -> None:
    with pytest.raises(TypeError, match="program must be a bytes-like object, not int"):
        _pyclone.set_seccomp_filter(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="program must be a whole number of 8-byte"):
        _pyclone.set_seccomp_filter(b"\0" * 9)
    with pytest.raises(OSError) as info:
        _pyclone.set_seccomp_filter(b"")  # refused by the kernel: nothing is loaded
    assert info.value.errno == errno.EINVAL


@WHO
def test_the_c_entry_loads_a_filter(who: str) -> None:
    # In a fork: a loaded filter can never be removed.
    def load(no_new_privs: bool) -> tuple[int | None, int | None]:
        if no_new_privs:
            _pyclone.prctl(_pyclone.PR_SET_NO_NEW_PRIVS, 1)
        try:
            _pyclone.set_seccomp_filter(deny("getcwd", errno.EPERM))
        except OSError as exc:
            return exc.errno, None
        return None, _getcwd_errno()

    assert in_fork(load, True, who=who) == (None, errno.EPERM)
    # without no_new_privs the kernel wants CAP_SYS_ADMIN, which only root has
    expected = (None, errno.EPERM) if who == "root" else (errno.EACCES, None)
    assert in_fork(load, False, who=who) == expected
