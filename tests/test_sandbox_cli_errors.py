"""``pyclone run``'s setup failures in bwrap's words, each run next to the same line in bwrap.

pyclone words them as bubblewrap 0.8 does (Debian 12's, this machine's);
later versions reword some (0.13: "File exists" becomes "existing
destination is a ...", "Can't chmod" becomes "Can't open"), so the word for
word comparison is made against a 0.8 bwrap, and the exit statuses against any.
"""

from __future__ import annotations

import errno

import pytest

from pyclone.sandbox import SandboxError
from pyclone.sandbox._cli_errors import message

from sandbox_helpers import WHO, bwrap_version, run_tool

#: The bwrap release whose messages pyclone follows.
WORDED_AS = (0, 8)

#: A root holding /usr and its links, so that ``true`` runs when setup succeeds.
USR = [
    "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/bin", "/bin",
    "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64",
]  # fmt: skip

#: A file where the options below want a directory.
FILE_AT_T = ["--ro-bind", "/usr/bin/true", "/t"]

IDS = [
    "bind-source", "symlink", "dir-parents", "tmpfs", "proc-parents", "bind-parents",
    "bind-dir", "chmod", "lock-file", "chdir",
]  # fmt: skip


@WHO
@pytest.mark.parametrize(
    "options, expected",
    [
        (["--bind", "/source-enoent", "/dest"], "Can't find source path /source-enoent"),
        (["--symlink", "a", "/tmp/x", "--symlink", "b", "/tmp/x"], "Can't make symlink at /tmp/x"),
        ([*FILE_AT_T, "--dir", "/t/x"], "Can't mkdir parents for /t/x"),
        ([*FILE_AT_T, "--tmpfs", "/t"], "Can't mkdir /t"),
        ([*FILE_AT_T, "--proc", "/t/p"], "Can't mkdir parents for /t/p"),
        ([*FILE_AT_T, "--bind", "/usr", "/t/u"], "Can't mkdir parents for /t/u"),
        ([*FILE_AT_T, "--ro-bind", "/usr", "/t"], "Can't mkdir /t"),
        (["--chmod", "0700", "/nonexist"], "Can't chmod 0700 /nonexist"),
        (["--lock-file", "/nonexist"], "Unable to open lock file /nonexist"),
        (["--chdir", "/nonexist"], "Can't chdir to /nonexist"),
    ],
    ids=IDS,
)
def test_setup_failures_say_what_bwrap_says(who: str, options: list[str], expected: str) -> None:
    ours = run_tool(who, "pyclone", *USR, *options, "true")
    theirs = run_tool(who, "bwrap", *USR, *options, "true")
    assert (ours.returncode, theirs.returncode) == (125, 1), (ours.stderr, theirs.stderr)
    assert ours.stderr.startswith(f"pyclone run: {expected}: "), ours.stderr
    if bwrap_version()[:2] == WORDED_AS:
        assert ours.stderr.removeprefix("pyclone run: ") == theirs.stderr.removeprefix("bwrap: ")


@WHO
def test_a_missing_command_is_bwraps_execvp_failure(who: str) -> None:
    ours = run_tool(who, "pyclone", *USR, "no-such-program")
    theirs = run_tool(who, "bwrap", *USR, "no-such-program")
    assert ours.returncode == 127  # pyclone's own status (bwrap's is 1)
    assert ours.stderr == "pyclone run: execvp no-such-program: No such file or directory\n"
    assert ours.stderr.removeprefix("pyclone run: ") == theirs.stderr.removeprefix("bwrap: ")


def test_a_step_bwrap_lacks_is_named_as_the_api_names_it() -> None:
    failed = SandboxError("rlimit nofile", errno.EINVAL, "Invalid argument")
    assert message(failed, ()) == "rlimit nofile: Invalid argument"
    mapped = SandboxError("uid_map", errno.EPERM, "Operation not permitted", "/proc/7/uid_map")
    assert message(mapped, ()) == "setting up uid map: Operation not permitted"
    # the API keeps its own wording
    assert str(mapped).startswith("sandbox setup failed at 'uid_map': [Errno 1] ")
