"""``pyclone run --seccomp FD`` and ``--add-seccomp-fd FD``, compared with real bwrap."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Sequence

import pytest
from bpf_programs import NO_RETURN, deny

from sandbox_helpers import BWRAP_ARGS, run_tool

TOOLS = pytest.mark.parametrize("tool", ["bwrap", "pyclone"])
WHO = pytest.mark.parametrize("who", ["root", "nobody"])


def _run(
    who: str, tool: str, args: Sequence[str], programs: Sequence[bytes] = ()
) -> subprocess.CompletedProcess[str]:
    """``TOOL ARGS`` as ``who`` with each of ``programs`` readable from fd 3, 4, ..."""
    return run_tool(who, tool, *args, data=programs)


def _name(tool: str) -> str:
    return "bwrap" if tool == "bwrap" else "pyclone run"


@WHO
@TOOLS
def test_a_program_makes_a_call_fail_with_its_errno(who: str, tool: str) -> None:
    program = deny("uname", errno.EACCES)
    done = _run(who, tool, [*BWRAP_ARGS, "--seccomp", "3", "uname"], [program])
    assert done.returncode == 1, done.stderr
    assert "Permission denied" in done.stderr, done.stderr
    done = _run(who, tool, [*BWRAP_ARGS, "uname"])
    assert (done.returncode, done.stdout) == (0, "Linux\n"), done.stderr


@WHO
@TOOLS
def test_added_programs_load_in_order(who: str, tool: str) -> None:
    # Of two filters answering the same way the newest one's errno is used.
    programs = [deny("uname", errno.EACCES), deny("uname", errno.ENOENT)]
    args = [*BWRAP_ARGS, "--add-seccomp-fd", "3", "--add-seccomp-fd", "4", "uname"]
    done = _run(who, tool, args, programs)
    assert done.returncode == 1 and "No such file or directory" in done.stderr, done.stderr
    args = [*BWRAP_ARGS, "--add-seccomp-fd", "4", "--add-seccomp-fd", "3", "uname"]
    done = _run(who, tool, args, programs)
    assert done.returncode == 1 and "Permission denied" in done.stderr, done.stderr


@TOOLS
def test_a_descriptor_that_is_not_open(tool: str) -> None:
    for option in ("--seccomp", "--add-seccomp-fd"):
        done = _run("nobody", tool, [*BWRAP_ARGS, option, "9", "true"])
        assert done.returncode == 1, (option, done.stderr)
        expected = f"{_name(tool)}: Can't read seccomp data: Bad file descriptor\n"
        assert expected in done.stderr, (option, done.stderr)


@TOOLS
def test_both_options_together_are_refused(tool: str) -> None:
    program = deny("uname", errno.EACCES)
    for first, second in (("--seccomp", "--add-seccomp-fd"), ("--add-seccomp-fd", "--seccomp")):
        args = [*BWRAP_ARGS, first, "3", second, "4", "true"]
        done = _run("nobody", tool, args, [program, program])
        assert done.returncode == 1, done.stderr
        assert f"{_name(tool)}: {second} cannot be combined with {first}\n" in done.stderr


def test_pyclone_refuses_what_the_kernel_would() -> None:
    # bwrap leaves these to the kernel's load (EINVAL, exit status 1).
    for data, message in ((b"", "not 0"), (b"\0" * 8 * 4097, "not 4097")):
        done = _run("nobody", "pyclone", [*BWRAP_ARGS, "--seccomp", "3", "true"], [data])
        assert done.returncode == 1, done.stderr
        assert "pyclone run: Invalid seccomp data, the program must hold 1 to 4096" in done.stderr
        assert message in done.stderr
    done = _run("nobody", "pyclone", [*BWRAP_ARGS, "--seccomp", "3", "true"], [NO_RETURN])
    assert done.returncode == 1, done.stderr
    assert "seccomp_programs" in done.stderr and "Invalid argument" in done.stderr


def test_a_later_seccomp_replaces_the_earlier() -> None:
    programs = [deny("uname", errno.EACCES), deny("uname", errno.ENOENT)]
    done = _run(
        "nobody", "pyclone", [*BWRAP_ARGS, "--seccomp", "3", "--seccomp", "4", "uname"], programs
    )
    assert "pyclone run: Only the last --seccomp option will take effect" in done.stderr
    assert done.returncode == 1 and "No such file or directory" in done.stderr, done.stderr
