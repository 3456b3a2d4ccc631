"""``python -m pyclone run``: exit statuses, setup failures, help, the same Sandbox, its parent."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import subprocess
import sys
import tempfile
from typing import Any

import pytest

from pyclone import Sandbox

from conftest import WAIT, require_root, unprivileged_python
from sandbox_helpers import (
    BWRAP_ARGS,
    BWRAP_LIKE,
    NOBODY,
    ROOT_DIR,
    WHO,
    readable_tree,
    require_bwrap,
    require_nobody_userns,
    run_tool,
)


def _cli(who: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool(who, "pyclone", *args)


@WHO
def test_cli_passes_the_exit_status_through(who: str) -> None:
    done = _cli(who, *BWRAP_ARGS, "--", "sh", "-c", "id -u; ls /; exit 7")
    assert done.returncode == 7, done.stderr
    uid = "0" if who == "root" else str(NOBODY)  # the caller's own uid, as in bwrap
    assert done.stdout.split() == [uid, "bin", "dev", "lib", "lib64", "proc", "tmp", "usr"]


@pytest.mark.parametrize("tool", ["pyclone", "bwrap"])
def test_cli_status_with_stdout_closed_is_the_commands_as_under_bwrap(tool: str) -> None:
    """``pyclone run`` ends without the interpreter's finalization: its own stdout closed
    (so sys.stdout is None) changes nothing, the command's status comes through."""
    require_root()
    argv = [require_bwrap()] if tool == "bwrap" else [sys.executable, "-m", "pyclone", "run"]
    line = [*argv, *BWRAP_ARGS, "--", "sh", "-c", "echo err >&2; exit 5"]
    done = subprocess.run(
        ["bash", "-c", 'exec "$@" >&-', "bash", *line],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=dict(os.environ, PYTHONPATH=ROOT_DIR),
        check=False,
    )
    assert (done.returncode, done.stderr) == (5, "err\n")


@WHO
def test_cli_reports_setup_failures(who: str) -> None:
    # bwrap's wording, after the program's name, and bwrap's status 1 unless
    # the failures are told apart
    for extra, not_found, setup_failed in (([], 1, 1), (["--distinct-exit-codes"], 127, 125)):
        missing = _cli(who, *extra, "--ro-bind", "/usr", "/usr", "--", "no-such-program")
        assert missing.returncode == not_found
        assert missing.stderr == "pyclone run: execvp no-such-program: No such file or directory\n"
        bad = _cli(who, *extra, "--bind", "/no/such", "/x", "--", "true")
        assert bad.returncode == setup_failed
        message = "pyclone run: Can't find source path /no/such: No such file or directory\n"
        assert bad.stderr == message
        unknown = _cli(who, *extra, "--no-such-option", "true")
        assert unknown.returncode == (2 if extra else 1)
        not_executable = _cli(who, *extra, "--ro-bind", "/", "/", "--", "/etc")
        assert not_executable.returncode == (126 if extra else 1)


def test_cli_help_speaks_bwrap() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyclone", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=dict(os.environ, PYTHONPATH=ROOT_DIR),
        check=True,
    )
    for option in (
        "--unshare-all", "--unshare-net", "--ro-bind SRC DEST", "--bind SRC DEST",
        "--symlink SRC DEST", "--tmpfs DEST", "--proc DEST", "--dev DEST", "--hostname",
        "--uid", "--gid", "--chdir", "--die-with-parent", "--new-session", "--cap-drop",
        "--cap-add", "--no-new-session", "--dev-bind SRC DEST", "--setenv VAR VALUE",
        "--unsetenv", "--clearenv", "--memory-max", "--pids-max",
    ):  # fmt: skip
        assert option in done.stdout, option


def test_cli_builds_the_same_sandbox_as_the_expression() -> None:
    from pyclone.cli import build_parser
    from pyclone.sandbox import sandbox_from_args

    args = build_parser().parse_args(["run", *BWRAP_ARGS, "--", "sh"])
    expected = Sandbox(
        **{**BWRAP_LIKE, "new": {"user", "pid", "mnt", "net", "uts", "ipc", "cgroup"}},
        new_root=True,
        start_dirs=[d for d in (os.getcwd(), os.environ.get("HOME", "")) if d.startswith("/")],
        export_pwd=True,
        close_fds=False,  # what the caller passes on reaches the command, as under bwrap
    )
    assert sandbox_from_args(args) == expected
    assert stat.S_ISDIR(os.stat("/usr").st_mode)


_GRANDPARENT = """
import subprocess, sys, time
p = subprocess.Popen(sys.argv[1:], stdout=1)
print(p.pid, flush=True, file=sys.stderr)
time.sleep(600)
"""


@WHO
def test_die_with_parent_follows_the_caller_of_pyclone_run(who: str) -> None:
    """A grandparent that dies takes ``pyclone run`` and its sandbox with it, as with bwrap."""
    env = dict(os.environ, PYTHONPATH=ROOT_DIR)
    python = sys.executable
    extra: dict[str, Any] = {}
    if who == "nobody":
        require_nobody_userns()
        python = unprivileged_python()
        env["PYTHONPATH"] = readable_tree()
        extra = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    else:
        require_root()
    cli = [python, "-m", "pyclone", "run", "--die-with-parent", *BWRAP_ARGS]
    r, w = os.pipe()
    err_r, err_w = os.pipe()
    grandparent = subprocess.Popen(
        [python, "-c", _GRANDPARENT, *cli, "sh", "-c", "echo ready; exec sleep 600"],
        stdout=w,
        stderr=err_w,
        env=env,
        cwd="/",
        **extra,
    )
    os.close(w)
    os.close(err_w)
    pid = None
    try:
        assert select.select([err_r], [], [], WAIT)[0], "no pid from the grandparent"
        pid = int(os.read(err_r, 64).split()[0])
        assert select.select([r], [], [], WAIT)[0], "the sandbox did not start"
        assert os.read(r, 64) == b"ready\n"
        grandparent.kill()
        grandparent.wait(WAIT)
        # every holder of the pipe (pyclone run, the init, sh's sleep) ends: EOF
        assert select.select([r], [], [], WAIT)[0], "the sandbox outlived its caller's parent"
        assert os.read(r, 64) == b""
    finally:
        if grandparent.poll() is None:
            grandparent.kill()
            grandparent.wait(WAIT)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # pyclone run: its sandbox dies with it
        os.close(r)
        os.close(err_r)


def test_cli_new_session_is_the_default() -> None:
    from pyclone.cli import build_parser
    from pyclone.sandbox import sandbox_from_args

    def session(*options: str) -> bool:
        args = build_parser().parse_args(["run", *options, "--", "sh"])
        return sandbox_from_args(args).new_session

    assert session() is True
    assert session("--new-session") is True
    assert session("--no-new-session") is False  # bwrap's default: the caller's terminal


#: A root holding only /usr (and its links): a caller's directory under /var/tmp is not there.
_USR_ONLY = [
    "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/bin", "/bin",
    "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64",
]  # fmt: skip


def _from(who: str, tool: str, cwd: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``tool`` (pyclone or bwrap) run with ``args`` as ``who``, from directory ``cwd``."""
    extra: dict[str, Any] = {}
    if tool == "bwrap":
        argv, env = [require_bwrap()], dict(os.environ)
    else:
        python = unprivileged_python() if who == "nobody" else sys.executable
        argv = [python, "-m", "pyclone", "run"]
        env = dict(os.environ, PYTHONPATH=readable_tree() if who == "nobody" else ROOT_DIR)
    if who == "nobody":
        require_nobody_userns()
        extra = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    else:
        require_root()
    env.pop("PWD", None)  # the directory is the process's own, as get_current_dir_name finds it
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, timeout=WAIT, env=env, cwd=cwd, **extra
    )


@WHO
@pytest.mark.parametrize(
    "options, where",
    [
        (["--bind", "{here}", "{here}"], "{here}"),
        (["--dir", "/home/u", "--setenv", "HOME", "/home/u"], "/home/u"),
        (["--setenv", "HOME", "/no/such/home"], "/"),
        (["--dir", "/home/u", "--setenv", "HOME", "/home/u", "--chdir", "/usr"], "/usr"),
    ],
    ids=["caller's-dir-inside", "else-HOME", "else-root", "chdir-wins"],
)
def test_cli_starts_where_bwrap_does(who: str, options: list[str], where: str) -> None:
    """The caller's directory if the sandbox has it, else $HOME, else /; PWD says where."""
    here = tempfile.mkdtemp(prefix="pyclone-start-", dir="/var/tmp")
    try:
        os.chmod(here, 0o755)
        args = [o.format(here=here) for o in options]
        expected = where.format(here=here)
        for tool in ("pyclone", "bwrap"):
            done = _from(who, tool, here, *_USR_ONLY, *args, "sh", "-c", 'pwd; echo "$PWD"')
            assert done.returncode == 0, (tool, done.stderr)
            assert done.stdout == f"{expected}\n{expected}\n", (tool, done.stdout)
    finally:
        os.rmdir(here)


@WHO
def test_cli_chdir_to_a_missing_directory_fails_in_bwraps_words(who: str) -> None:
    for tool, prog in (("pyclone", "pyclone run"), ("bwrap", "bwrap")):
        done = _from(who, tool, "/", *_USR_ONLY, "--chdir", "/no/such", "true")
        assert done.returncode == 1, (tool, done.stderr)
        assert done.stderr == f"{prog}: Can't chdir to /no/such: No such file or directory\n"


#: The dispositions the command starts with, and how `yes` ends when its reader goes.
_SIGNALS_SCRIPT = (
    'grep -E "^Sig(Ign|Blk):" /proc/self/status; '
    'yes | head -n 1 >/dev/null; echo "yes ended with ${PIPESTATUS[0]}"'
)


@WHO
def test_the_command_starts_with_sigpipe_and_sigxfsz_at_their_defaults_as_under_bwrap(
    who: str,
) -> None:
    """The interpreter ignores both for itself; the command must not inherit that."""
    outs = {}
    for tool in ("pyclone", "bwrap"):
        done = run_tool(who, tool, *BWRAP_ARGS, "bash", "-c", _SIGNALS_SCRIPT)
        assert done.returncode == 0, (tool, done.stderr)
        outs[tool] = done.stdout
    assert outs["pyclone"] == outs["bwrap"]
    assert "SigIgn:\t0000000000000000\n" in outs["pyclone"]
    assert f"yes ended with {128 + signal.SIGPIPE}\n" in outs["pyclone"]


def test_a_command_of_the_library_starts_with_sigpipe_at_its_default() -> None:
    require_root()
    done = Sandbox(**BWRAP_LIKE).run(["bash", "-c", _SIGNALS_SCRIPT], capture_output=True)  # type: ignore[arg-type]
    assert done.returncode == 0
    assert f"yes ended with {128 + signal.SIGPIPE}\n" in done.stdout.decode()


@pytest.mark.parametrize("given", [{}, {"LC_CTYPE": "C.UTF-8"}], ids=["none", "explicit"])
def test_the_command_gets_the_callers_environment_not_the_interpreters_locale(
    given: dict[str, str],
) -> None:
    """In the C locale the interpreter adds LC_CTYPE=C.UTF-8 for itself (PEP 538);
    a caller's own LC_CTYPE stays."""
    require_root()
    env = {"PATH": "/usr/bin:/bin", **given}
    args = [*BWRAP_ARGS, "--unsetenv", "PYTHONPATH", "env"]
    pyclone = subprocess.run(
        [sys.executable, "-m", "pyclone", "run", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=dict(env, PYTHONPATH=ROOT_DIR),
        cwd="/",
    )
    bwrap = subprocess.run(
        [require_bwrap(), *args], capture_output=True, text=True, timeout=WAIT, env=env, cwd="/"
    )
    assert pyclone.returncode == bwrap.returncode == 0, (pyclone.stderr, bwrap.stderr)
    assert sorted(pyclone.stdout.splitlines()) == sorted(bwrap.stdout.splitlines())
    assert ("LC_CTYPE=C.UTF-8" in pyclone.stdout.splitlines()) == bool(given)


#: The command's descriptors, then what it reads from the caller's descriptor 4.
_LIST_FDS = 'for f in /proc/self/fd/*; do printf "%s " "${f##*/}"; done; echo; cat <&4'


@WHO
@pytest.mark.parametrize(
    "options",
    [[], ["--sync-fd", "3"], ["--block-fd", "3"], ["--file", "3", "/tmp/x"], ["--as-pid-1"]],
    ids=["plain", "sync-fd", "block-fd", "file", "as-pid-1"],
)
def test_the_command_inherits_the_descriptors_bwraps_would(who: str, options: list[str]) -> None:
    """bwrap passes on what it inherited without close-on-exec, less what its options consume."""
    outs = {}
    for tool in ("pyclone", "bwrap"):
        done = run_tool(
            who, tool, *BWRAP_ARGS, *options, "sh", "-c", _LIST_FDS, data=[b"three", b"four\n"]
        )
        assert done.returncode == 0, (tool, done.stderr)
        outs[tool] = done.stdout
    assert outs["pyclone"] == outs["bwrap"]
    assert outs["pyclone"].endswith("\nfour\n")
