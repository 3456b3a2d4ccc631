"""``pyclone run``'s --info-fd, --json-status-fd, --lock-file, --sync-fd, --block-fd, --userns
and --pidns options, and their refusals of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import pytest

from pyclone.cli import build_parser
from pyclone.sandbox import sandbox_from_args

from conftest import WAIT, require_root, unprivileged_python
from sandbox_helpers import (
    NOBODY,
    ROOT_DIR,
    WHO,
    lock_is_held,
    read_until_eof,
    readable_tree,
    require_nobody_userns,
    run_tool,
)

#: The whole host read-only, a fresh /tmp: enough for sh and the checks here.
HOST = ["--ro-bind", "/", "/", "--tmpfs", "/tmp"]


def _start(
    args: Sequence[str], pass_fds: Sequence[int], stdin: int | None = None
) -> subprocess.Popen[bytes]:
    require_root()
    return subprocess.Popen(
        [sys.executable, "-m", "pyclone", "run", *args],
        pass_fds=pass_fds,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=ROOT_DIR),
    )


def _python(who: str, script: str) -> subprocess.CompletedProcess[str]:
    """``python -c SCRIPT`` (with this pyclone importable) as root or uid 65534."""
    if who == "nobody":
        require_nobody_userns()
        python, path = unprivileged_python(), readable_tree()
        extra: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    else:
        require_root()
        python, path, extra = sys.executable, ROOT_DIR, {}
    return subprocess.run(
        [python, "-c", script],
        capture_output=True,
        text=True,
        timeout=3 * WAIT,
        env=dict(os.environ, PYTHONPATH=path),
        cwd="/",
        check=False,
        **extra,
    )


def _documents(text: str) -> list[dict[str, int]]:
    """The JSON documents of a status stream, one a line."""
    return [json.loads(line) for line in text.splitlines()]


def test_info_fd_and_json_status_fd_in_bwrap_format() -> None:
    info_r, info_w = os.pipe()
    status_r, status_w = os.pipe()
    go_r, go_w = os.pipe()
    # The command waits for the test: the info pipe must reach EOF while the sandbox
    # runs (the launcher closed it, the sandbox never held it).
    script = (
        f"test ! -e /proc/self/fd/{info_w} && test ! -e /proc/self/fd/{status_w} && read x; exit 5"
    )
    process = _start(
        ["--unshare-all", *HOST, "--info-fd", str(info_w), "--json-status-fd", str(status_w),
         "--", "sh", "-c", script],
        pass_fds=(info_w, status_w),
        stdin=go_r,
    )  # fmt: skip
    os.close(info_w), os.close(status_w), os.close(go_r)
    try:
        deadline = time.monotonic() + WAIT
        info = read_until_eof(info_r, deadline).decode()
        assert process.poll() is None, "the sandbox ended before the info was complete"
        os.write(go_w, b"go\n")
        status = read_until_eof(status_r, deadline).decode()
        _out, err = process.communicate(timeout=WAIT)
    finally:
        for fd in (info_r, status_r, go_w):
            os.close(fd)
        process.kill()
        process.wait(WAIT)
    assert process.returncode == 5, err
    names = ["child-pid"]
    names += [f"{n}-namespace" for n in ("cgroup", "ipc", "mnt", "net", "pid", "uts")]
    assert info.startswith('{\n    "child-pid": ') and info.endswith("\n}\n")
    assert list(json.loads(info)) == names
    first, last = _documents(status)
    assert first == json.loads(info)
    assert last == {"exit-code": 5}


def test_json_status_fd_has_no_exit_code_when_the_exec_failed() -> None:
    status_r, status_w = os.pipe()
    process = _start([*HOST, "--json-status-fd", str(status_w), "/"], pass_fds=(status_w,))
    os.close(status_w)
    try:
        status = read_until_eof(status_r, time.monotonic() + WAIT).decode()
        _out, err = process.communicate(timeout=WAIT)
    finally:
        os.close(status_r)
    assert process.returncode == 1, err  # bwrap's status
    (started,) = _documents(status)
    assert list(started) == ["child-pid", "mnt-namespace"]


@pytest.mark.parametrize("pid", [[], ["--unshare-pid"]], ids=["no-pidns", "pidns"])
def test_lock_file_is_held_while_the_sandbox_runs(pid: list[str]) -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:  # /tmp is a new tmpfs inside
        lock = os.path.join(tmp, "lock")
        open(lock, "w").close()
        info_r, info_w = os.pipe()
        go_r, go_w = os.pipe()
        process = _start(
            [*pid, "--bind", "/", "/", "--tmpfs", "/tmp", "--lock-file", lock,
             "--info-fd", str(info_w), "sh", "-c", "read x"],
            pass_fds=(info_w,),
            stdin=go_r,
        )  # fmt: skip
        os.close(info_w), os.close(go_r)
        try:
            read_until_eof(info_r, time.monotonic() + WAIT)
            deadline = time.monotonic() + WAIT
            while not lock_is_held(lock) and process.poll() is None:
                assert time.monotonic() < deadline, "the lock was never taken"
                time.sleep(0.02)
            assert process.poll() is None, process.communicate()
            os.write(go_w, b"\n")
            _out, err = process.communicate(timeout=WAIT)
            assert process.returncode == 0, err
            assert not lock_is_held(lock)
        finally:
            os.close(info_r), os.close(go_w)
            process.kill()
            process.wait(WAIT)


def test_block_fd_holds_the_command_until_data_arrives() -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:  # /tmp is a new tmpfs inside
        marker = os.path.join(tmp, "ran")
        block_r, block_w = os.pipe()
        info_r, info_w = os.pipe()
        process = _start(
            ["--bind", "/", "/", "--block-fd", str(block_r), "--info-fd", str(info_w),
             "sh", "-c", f"test ! -e /proc/self/fd/{block_r} && touch {marker}"],
            pass_fds=(block_r, info_w),
        )  # fmt: skip
        os.close(block_r), os.close(info_w)
        try:
            read_until_eof(info_r, time.monotonic() + WAIT)
            assert not os.path.exists(marker), "the command ran before --block-fd had data"
            os.write(block_w, b"x")
            _out, err = process.communicate(timeout=WAIT)
        finally:
            os.close(block_w), os.close(info_r)
        assert process.returncode == 0, err
        assert os.path.exists(marker)


def test_sync_fd_stays_open_outside_the_command() -> None:
    sync_r, sync_w = os.pipe()
    process = _start(
        [*HOST, "--sync-fd", str(sync_w), "sh", "-c", f"test ! -e /proc/self/fd/{sync_w}"],
        pass_fds=(sync_w,),
    )
    os.close(sync_w)
    try:
        assert read_until_eof(sync_r, time.monotonic() + WAIT) == b""  # EOF once all ended
        _out, err = process.communicate(timeout=WAIT)
    finally:
        os.close(sync_r)
    assert process.returncode == 0, err


@WHO
def test_userns_joins_the_given_user_namespace(who: str) -> None:
    # The first sandbox's user namespace, found by its --info-fd pid, is joined by
    # the second (what bwrap's test-specifying-userns.sh does), as root and as 65534.
    script = (
        "import json, os, subprocess, sys\n"
        "run = [sys.executable, '-m', 'pyclone', 'run', '--ro-bind', '/', '/']\n"
        "r, w = os.pipe(); go_r, go_w = os.pipe()\n"
        "first = subprocess.Popen(\n"
        "    run + ['--unshare-user', '--unshare-pid', '--info-fd', str(w),\n"
        "    'sh', '-c', 'readlink /proc/self/ns/user /proc/self/ns/pid; read x'],\n"
        "    pass_fds=(w,), stdin=go_r, stdout=subprocess.PIPE, text=True)\n"
        "os.close(w); os.close(go_r)\n"
        "pid = json.loads(os.read(r, 4096))['child-pid']\n"
        "user = os.open(f'/proc/{pid}/ns/user', os.O_RDONLY)\n"
        "pidns = os.open(f'/proc/{pid}/ns/pid', os.O_RDONLY)\n"
        "second = subprocess.run(run + ['--userns', str(user), '--pidns', str(pidns),\n"
        "    'sh', '-c', 'readlink /proc/self/ns/user /proc/self/ns/pid; echo $$'],\n"
        "    pass_fds=(user, pidns), capture_output=True, text=True, timeout=20)\n"
        "os.write(go_w, b'\\n')\n"
        "print(json.dumps([first.communicate(timeout=20)[0], first.returncode,\n"
        "                  second.stdout, second.stderr, second.returncode]))\n"
    )
    done = _python(who, script)
    assert done.returncode == 0, done.stderr
    first, first_code, second, second_err, second_code = json.loads(done.stdout)
    assert first_code == 0 and second_code == 0, second_err
    assert second.splitlines()[:2] == first.splitlines()
    assert int(second.splitlines()[2]) > 1  # a process of the joined pid namespace, not its init


@pytest.mark.parametrize(
    "args, message",
    [
        (["--info-fd", "x"], "Invalid fd: x"),
        (["--json-status-fd", "-1"], "Invalid fd: -1"),
        (["--sync-fd", ""], "Invalid fd: "),
        (["--info-fd"], "expected one argument"),
        (["--lock-file"], "expected one argument"),
        (["--info-fd", "99"], "--info-fd 99: Bad file descriptor"),
        (["--json-status-fd", "99"], "--json-status-fd 99: Bad file descriptor"),
        (["--sync-fd", "99"], "--sync-fd 99: Bad file descriptor"),
        (["--block-fd", "99"], "--block-fd 99: Bad file descriptor"),
        (["--userns", "99"], "--userns 99: Bad file descriptor"),
        (["--pidns", "99"], "--pidns 99: Bad file descriptor"),
        (["--userns2", "99"], "--userns2 99: Bad file descriptor"),
        (["--userns2", "a"], "Invalid fd: a"),
        (["--userns", "0", "--unshare-user"], "--userns not compatible --unshare-user"),
        (["--userns", "0", "--unshare-all"], "--userns not compatible --unshare-user-try"),
        (["--unshare-pid", "--as-pid-1", "--lock-file", "/x"], "lock_file needs the"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(args: list[str], message: str) -> None:
    command = [] if message == "expected one argument" else ["true"]  # the option comes last
    done = run_tool("root", "pyclone", *HOST, *args, *command)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr


@WHO
def test_setup_failures_of_the_new_options_name_their_step(who: str) -> None:
    missing = run_tool(who, "pyclone", *HOST, "--lock-file", "/no/such/lock", "true")
    assert missing.returncode == 1
    prefix = "pyclone run: "  # then bwrap's wording
    reason = "No such file or directory"
    assert missing.stderr == f"{prefix}Unable to open lock file /no/such/lock: {reason}\n"
    not_a_namespace = run_tool(who, "pyclone", *HOST, "--userns", "0", "true")
    assert not_a_namespace.returncode == 1
    assert not_a_namespace.stderr == (
        f"{prefix}Joining specified user namespace failed: Invalid argument\n"
    )


def test_help_lists_the_options_and_they_reach_the_sandbox() -> None:
    done = run_tool("root", "pyclone", "--help")
    assert done.returncode == 0, done.stderr
    for option in (
        "--info-fd FD", "--json-status-fd FD", "--lock-file DEST", "--sync-fd FD",
        "--block-fd FD", "--userns FD", "--userns2 FD", "--pidns FD",
    ):  # fmt: skip
        assert option in done.stdout, option
    options = ["--lock-file", "/a", "--lock-file", "/b", "--sync-fd", "0", "--block-fd", "1"]
    options += ["--userns", "2", "--userns2", "0", "--pidns", "1"]
    sandbox = sandbox_from_args(build_parser().parse_args(["run", *options, "true"]))
    assert sandbox.lock_file == ("/a", "/b")
    assert (sandbox.sync_fd, sandbox.block_fd) == (0, 1)
    assert (sandbox.userns, sandbox.userns2, sandbox.pidns) == (2, 0, 1)
    assert "user" not in sandbox.new  # joined, not made (even for an unprivileged caller)
