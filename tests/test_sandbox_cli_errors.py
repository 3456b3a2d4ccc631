"""``pyclone run``'s setup failures in bwrap's words, each run next to the same line in bwrap.

pyclone words them as bubblewrap 0.8 does (Debian 12's, this machine's);
later versions reword some (0.13: "File exists" becomes "existing
destination is a ...", "Can't chmod" becomes "Can't open"), so the word for
word comparison is made against a 0.8 bwrap, and the exit statuses against any.
"""

from __future__ import annotations

import errno
import subprocess

import pytest
from bwrap_oracle import SETPRIV, bwrap_with

from pyclone.sandbox import SandboxError
from pyclone.sandbox._cli_errors import diagnostic, message

from conftest import WAIT
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
    assert (ours.returncode, theirs.returncode) == (1, 1), (ours.stderr, theirs.stderr)
    assert ours.stderr.startswith(f"pyclone run: {expected}: "), ours.stderr
    if bwrap_version()[:2] == WORDED_AS:
        assert ours.stderr.removeprefix("pyclone run: ") == theirs.stderr.removeprefix("bwrap: ")


@WHO
def test_a_missing_command_is_bwraps_execvp_failure(who: str) -> None:
    ours = run_tool(who, "pyclone", *USR, "no-such-program")
    theirs = run_tool(who, "bwrap", *USR, "no-such-program")
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr == "pyclone run: execvp no-such-program: No such file or directory\n"
    assert ours.stderr.removeprefix("pyclone run: ") == theirs.stderr.removeprefix("bwrap: ")


def test_a_step_bwrap_lacks_is_named_as_the_api_names_it() -> None:
    failed = SandboxError("rlimit nofile", errno.EINVAL, "Invalid argument")
    assert message(failed, ()) == "rlimit nofile: Invalid argument"
    mapped = SandboxError("uid_map", errno.EPERM, "Operation not permitted", "/proc/7/uid_map")
    assert message(mapped, ()) == "setting up uid map: Operation not permitted"
    # the API keeps its own wording
    assert str(mapped).startswith("sandbox setup failed at 'uid_map': [Errno 1] ")


@WHO
def test_level_prefix_puts_syslogs_level_before_each_diagnostic(who: str) -> None:
    """bwrap's --level-prefix: ``<3>`` before an error, ``<4>`` before a warning.

    Parse errors too, once --level-prefix is among the options (bwrap 0.8 lacks
    the option, so the format is upstream's test-run.sh case: see
    test_sandbox_bwrap_suite_newer.py).
    """
    done = run_tool(who, "pyclone", "--level-prefix", *USR, "--chdir", "/nonexist", "true")
    assert done.returncode == 1
    assert done.stderr == "<3>pyclone run: Can't chdir to /nonexist: No such file or directory\n"
    done = run_tool(who, "pyclone", "--level-prefix", *USR, "--chdir", "/", "--chdir", "/", "true")
    assert done.returncode == 0
    assert done.stderr == "<4>pyclone run: Only the last --chdir option will take effect\n"
    done = run_tool(who, "pyclone", *USR, "--level-prefix", "--foo", "true")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "<3>pyclone run: error: Unknown option --foo"
    done = run_tool(who, "pyclone", *USR, "--argv0", "a", "--argv0", "b", "true")
    assert done.stderr.splitlines()[-1] == "pyclone run: error: --argv0 used multiple times"
    assert diagnostic("bwrap", "x", level_prefix=False) == "bwrap: x"
    newer = bwrap_with("--level-prefix")
    if newer is not None:  # the setup failure, word for word with a bwrap that has it
        command = [*(SETPRIV if who == "nobody" else []), *newer, "--level-prefix", *USR]
        theirs = subprocess.run(
            [*command, "--chdir", "/nonexist", "true"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd="/",
            check=False,
        )
        assert theirs.stderr == "<3>bwrap: Can't chdir to /nonexist: No such file or directory\n"
