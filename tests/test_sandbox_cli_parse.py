"""``python -m pyclone run``'s parsing rules, each run next to the same line through bwrap."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest

import pyclone
from pyclone.cli import build_parser
from pyclone.sandbox import sandbox_from_args

from conftest import WAIT, require_root
from sandbox_helpers import ROOT_DIR

#: The whole host tree as the sandbox's root: a line both programs accept that lets the
#: command print where it started.
HOST_ROOT = ["--bind", "/", "/"]


def _run(
    program: Sequence[str], *args: str, fds: Sequence[int] = (), cwd: str = "/"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*program, *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=dict(os.environ, PYTHONPATH=ROOT_DIR),
        cwd=cwd,
        pass_fds=tuple(fds),
        check=False,
    )


def pyclone_run(
    *args: str, fds: Sequence[int] = (), cwd: str = "/"
) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "pyclone", "run"], *args, fds=fds, cwd=cwd)


def bwrap(*args: str, fds: Sequence[int] = ()) -> subprocess.CompletedProcess[str]:
    path = shutil.which("bwrap")
    if path is None:
        pytest.skip("bwrap is not installed: nothing to compare with (apt-get install bubblewrap)")
    return _run([path], *args, fds=fds)


@contextmanager
def args_pipe(*words: str) -> Iterator[int]:
    """The read end of a pipe that holds ``words`` NUL-separated, its write end closed."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"".join(os.fsencode(w) + b"\0" for w in words))
        os.close(write_end)
        yield read_end
    finally:
        os.close(read_end)


def test_an_abbreviated_option_is_an_unknown_option() -> None:
    done = pyclone_run("--unshare-al", "true")
    assert done.returncode == 1
    assert "usage: pyclone run" in done.stderr
    assert "Unknown option --unshare-al" in done.stderr
    theirs = bwrap("--unshare-al", "true")
    assert theirs.returncode == 1
    assert "bwrap: Unknown option --unshare-al" in theirs.stderr


def test_an_unknown_option_is_named_with_runs_usage() -> None:
    done = pyclone_run("--foo", "true")
    assert done.returncode == 1
    assert done.stderr.startswith("usage: pyclone run "), done.stderr
    assert "pyclone run: error: Unknown option --foo" in done.stderr
    theirs = bwrap("--foo", "true")
    assert theirs.returncode == 1
    assert "bwrap: Unknown option --foo" in theirs.stderr


def test_options_after_the_command_are_the_commands() -> None:
    require_root()
    done = pyclone_run(*HOST_ROOT, "echo", "--foo", "--args", "9")
    assert (done.returncode, done.stdout) == (0, "--foo --args 9\n"), done.stderr
    theirs = bwrap(*HOST_ROOT, "echo", "--foo", "--args", "9")
    assert (theirs.returncode, theirs.stdout) == (0, "--foo --args 9\n"), theirs.stderr


@pytest.mark.parametrize("before", [[], HOST_ROOT])
def test_version_prints_pyclones_version_wherever_it_is(before: list[str]) -> None:
    done = pyclone_run(*before, "--version")
    assert (done.returncode, done.stdout) == (0, f"pyclone {pyclone.__version__}\n"), done.stderr
    theirs = bwrap(*before, "--version")
    assert theirs.returncode == 0
    assert theirs.stdout.startswith("bubblewrap ")


def test_args_reads_options_from_a_file_descriptor() -> None:
    require_root()
    with args_pipe("--chdir", "/usr") as fd:
        done = pyclone_run(*HOST_ROOT, "--args", str(fd), "pwd", fds=[fd])
    assert (done.returncode, done.stdout) == (0, "/usr\n"), done.stderr
    with args_pipe("--chdir", "/usr") as fd:
        theirs = bwrap(*HOST_ROOT, "--args", str(fd), "pwd", fds=[fd])
    assert (theirs.returncode, theirs.stdout) == (0, "/usr\n"), theirs.stderr


@pytest.mark.parametrize(
    ("where", "expected"), [("first", "/tmp"), ("last", "/usr")], ids=["then-chdir", "after-chdir"]
)
def test_args_are_parsed_where_they_stand(where: str, expected: str) -> None:
    require_root()
    for program, prefix in ((pyclone_run, "pyclone run"), (bwrap, "bwrap")):
        with args_pipe("--chdir", "/usr") as fd:
            from_fd = ["--args", str(fd)]
            by_hand = ["--chdir", "/tmp"]
            options = from_fd + by_hand if where == "first" else by_hand + from_fd
            done = program(*HOST_ROOT, *options, "pwd", fds=[fd])
        assert (done.returncode, done.stdout) == (0, f"{expected}\n"), (prefix, done.stderr)
        assert f"{prefix}: Only the last --chdir option will take effect" in done.stderr


def test_args_in_a_file_take_options_only() -> None:
    require_root()
    # bwrap stops reading the file at its first non-option and drops the rest.
    for program in (pyclone_run, bwrap):
        with args_pipe("--chdir", "/usr", "echo", "dropped") as fd:
            done = program(*HOST_ROOT, "--args", str(fd), "pwd", fds=[fd])
        assert (done.returncode, done.stdout) == (0, "/usr\n"), done.stderr


@pytest.mark.parametrize(
    ("data", "fd_text", "message"),
    [
        (["--args", "0"], None, "--args not supported in arguments file"),
        (None, "x", "Invalid fd: x"),
        (None, "999", "Can't read --args data: Bad file descriptor"),
    ],
    ids=["nested", "not-a-number", "closed-fd"],
)
def test_args_errors_are_bwraps(data: list[str] | None, fd_text: str | None, message: str) -> None:
    for program, prefix, status in ((pyclone_run, "pyclone run: error:", 1), (bwrap, "bwrap:", 1)):
        with args_pipe(*(data or [])) as fd:
            done = program(*HOST_ROOT, "--args", fd_text or str(fd), "true", fds=[fd])
        assert done.returncode == status, done.stderr
        assert f"{prefix} {message}" in done.stderr


def test_args_expand_in_the_parser() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"--unshare-pid\0--tmpfs\0/tmp\0")
    os.close(write_end)
    try:
        args = build_parser().parse_args(["run", "--args", str(read_end), "--", "sh"])
    except BaseException:
        os.close(read_end)
        raise
    with pytest.raises(OSError):
        os.fstat(read_end)  # read to its end and closed, as bwrap does
    assert args.unshare_pid and args.tmpfs == ["/tmp"]
    assert args.command == ["--", "sh"]


def _user_namespaces_allowed() -> bool:
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return f.read().strip() != "0" and os.path.exists("/proc/self/ns/user")
    except OSError:
        return os.path.exists("/proc/self/ns/user")


@pytest.mark.parametrize(
    ("option", "ns", "allowed"),
    [
        ("--unshare-user-try", "user", _user_namespaces_allowed),
        ("--unshare-cgroup-try", "cgroup", lambda: os.path.exists("/proc/self/ns/cgroup")),
    ],
)
def test_unshare_try_unshares_when_the_kernel_allows(
    option: str, ns: str, allowed: Callable[[], bool]
) -> None:
    expected = allowed()
    sandbox = sandbox_from_args(build_parser().parse_args(["run", option, "--", "true"]))
    assert (ns in sandbox.new) is expected
    require_root()
    host = os.readlink(f"/proc/self/ns/{ns}")
    for program in (pyclone_run, bwrap):
        done = program(*HOST_ROOT, option, "readlink", f"/proc/self/ns/{ns}")
        assert done.returncode == 0, done.stderr
        assert (done.stdout.strip() != host) is expected, (program, done.stdout)


def test_the_last_chdir_wins_with_bwraps_warning() -> None:
    require_root()
    for program, prefix in ((pyclone_run, "pyclone run"), (bwrap, "bwrap")):
        done = program(*HOST_ROOT, "--chdir", "/usr", "--chdir", "/tmp", "pwd")
        assert (done.returncode, done.stdout) == (0, "/tmp\n"), done.stderr
        assert f"{prefix}: Only the last --chdir option will take effect" in done.stderr
        once = program(*HOST_ROOT, "--chdir", "/usr", "pwd")
        assert (once.returncode, once.stdout) == (0, "/usr\n"), once.stderr
        assert "Only the last" not in once.stderr


@pytest.mark.parametrize(
    "env_options",
    [
        ["--clearenv"],
        ["--setenv", "PWD", "/elsewhere"],
        ["--unsetenv", "PWD"],
        ["--clearenv", "--setenv", "A", "1"],
    ],
    ids=["clearenv", "setenv-PWD", "unsetenv-PWD", "clearenv-setenv"],
)
def test_pwd_is_where_the_command_starts(env_options: list[str]) -> None:
    require_root()
    # bwrap sets PWD after every environment option, to the directory it changed to.
    for program in (pyclone_run, bwrap):
        done = program(*HOST_ROOT, "--chdir", "/usr", *env_options, "env")
        assert done.returncode == 0, done.stderr
        assert "PWD=/usr" in done.stdout.splitlines(), (program, done.stdout)
        if env_options[0] == "--clearenv":
            kept = {line.partition("=")[0] for line in done.stdout.splitlines()}
            assert kept == {"PWD", *env_options[2:3]}, (program, done.stdout)


def test_pwd_follows_the_sandboxs_directory() -> None:
    require_root()
    # Without --chdir the command starts in the caller's directory when the new root
    # has it (here the whole host tree), and PWD says the same.
    chosen = pyclone_run(*HOST_ROOT, "--chdir", "/tmp", "--clearenv", "env", cwd="/usr")
    assert (chosen.returncode, chosen.stdout) == (0, "PWD=/tmp\n"), chosen.stderr
    stayed = pyclone_run(*HOST_ROOT, "--clearenv", "env", cwd="/usr")
    assert (stayed.returncode, stayed.stdout) == (0, "PWD=/usr\n"), stayed.stderr
    where = pyclone_run(*HOST_ROOT, "pwd", cwd="/usr")
    assert (where.returncode, where.stdout) == (0, "/usr\n"), where.stderr
