"""``pyclone run --disable-userns``, ``--assert-userns-disabled``, ``--userns-block-fd``,
``--exec-label`` and ``--file-label``, each compared with real bwrap as root and as 65534."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import WAIT, require_root, unprivileged_python
from sandbox_helpers import (
    NOBODY,
    ROOT_DIR,
    WHO,
    bwrap_version,
    read_until_eof,
    readable_tree,
    require_bwrap,
    require_nobody_userns,
    run_tool,
)

TOOLS = pytest.mark.parametrize("tool", ["bwrap", "pyclone"])
#: The host's tree, writable as bwrap's tests have it.
HOST = ["--bind", "/", "/"]
CLONE_NEWUSER = 0x10000000


def _name(tool: str) -> str:
    return "bwrap" if tool == "bwrap" else "pyclone run"


def _prog(who: str, tool: str) -> list[str]:
    """The tool's command line, for a run inside a sandbox (its environment is inherited)."""
    if tool == "bwrap":
        return [require_bwrap()]
    python = unprivileged_python() if who == "nobody" else sys.executable
    return [python, "-m", "pyclone", "run"]


@WHO
@TOOLS
def test_a_new_user_namespace_fails_with_enospc_after_disable_userns(who: str, tool: str) -> None:
    done = run_tool(who, tool, "--unshare-user", "--disable-userns", *HOST, "unshare", "-U", "true")
    assert done.returncode == 1, done.stderr
    assert "unshare failed: No space left on device" in done.stderr
    # the kernel's errno itself, without unshare(1)'s words
    python = unprivileged_python() if who == "nobody" else sys.executable
    probe = (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
        f"print(libc.unshare({CLONE_NEWUSER}), ctypes.get_errno())"
    )
    done = run_tool(who, tool, "--unshare-user", "--disable-userns", *HOST, python, "-c", probe)
    assert (done.returncode, done.stdout) == (0, f"-1 {errno.ENOSPC}\n"), done.stderr


@WHO
@TOOLS
def test_the_nested_namespace_maps_the_sandboxs_own_ids(who: str, tool: str) -> None:
    args = ["--unshare-user", "--uid", "5", "--gid", "7", "--disable-userns", *HOST]
    done = run_tool(who, tool, *args, "sh", "-c", "id -u; id -g; cat /proc/self/setgroups")
    assert (done.returncode, done.stdout) == (0, "5\n7\ndeny\n"), done.stderr
    done = run_tool(who, tool, *args, "cat", "/proc/self/uid_map", "/proc/self/gid_map")
    assert done.stdout.split() == ["5", "5", "1", "7", "7", "1"], done.stderr


@WHO
@TOOLS
def test_assert_userns_disabled_fails_where_one_can_be_made(who: str, tool: str) -> None:
    done = run_tool(who, tool, "--unshare-user", "--assert-userns-disabled", *HOST, "true")
    assert done.returncode == 1, done.stderr
    message = "creation of new user namespaces was not disabled as requested"
    assert done.stderr == f"{_name(tool)}: {message}\n"


@WHO
@TOOLS
def test_assert_userns_disabled_passes_inside_a_disabled_sandbox(who: str, tool: str) -> None:
    # uid 0 with every capability in the outer sandbox: the inner run needs no user
    # namespace of its own (an unprivileged one would ask for one, and fail)
    outer = ["--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL"]
    inner = [*_prog(who, tool), "--assert-userns-disabled", *HOST, "echo", "inside"]
    done = run_tool(who, tool, *outer, "--disable-userns", *HOST, *inner)
    assert (done.returncode, done.stdout) == (0, "inside\n"), done.stderr
    # and a nested sandbox that asks for a user namespace is refused by the kernel
    inner = [*_prog(who, tool), "--unshare-user", *HOST, "true"]
    done = run_tool(who, tool, *outer, "--disable-userns", *HOST, *inner)
    assert done.returncode == 1, done.stderr
    limit = "nesting depth or /proc/sys/user/max_*_namespaces exceeded (ENOSPC)"
    assert f"{_name(tool)}: Creating new namespace failed: {limit}\n" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--disable-userns"], "--disable-userns requires --unshare-user"),
        (["--unshare-all", "--disable-userns"], "--disable-userns requires --unshare-user"),
        (["--userns-block-fd", "0"], "--userns-block-fd requires --unshare-user"),
        (["--unshare-user", "--userns-block-fd", "0"], "--userns-block-fd requires --info-fd"),
        (
            ["--unshare-user", "--disable-userns", "--userns-block-fd", "0", "--info-fd", "2"],
            "--disable-userns is not compatible with  --userns-block-fd",
        ),
        (["--userns-block-fd", "x"], "Invalid fd: x"),
        (["--exec-label", "system_u:system_r:x:s0"], "labeling not supported on this system"),
        (["--file-label", "x", "--foo"], "labeling not supported on this system"),
    ],
)
@WHO
@TOOLS
def test_misuse_is_refused_with_bwraps_words(
    who: str, tool: str, args: list[str], message: str
) -> None:
    if os.path.exists("/sys/fs/selinux/enforce") and "label" in message:
        pytest.skip("SELinux is enabled here: bwrap would apply the label")
    done = run_tool(who, tool, *HOST, *args, "true")
    if tool == "pyclone" and message.startswith("Invalid fd"):
        # argparse's refusal of a value: its usage line, as for every option
        assert done.returncode == 1 and message in done.stderr, done.stderr
        return
    assert done.returncode == 1, done.stderr
    if tool == "bwrap" and bwrap_version()[:2] != (0, 8):
        # later releases dropped the second space pyclone copies from 0.8
        message = " ".join(message.split())
    assert f"{_name(tool)}: {message}\n" in done.stderr


def _start_blocked(who: str, tool: str, info_w: int, block_r: int) -> subprocess.Popen[str]:
    if who == "nobody":
        require_nobody_userns()
        extra: dict[str, object] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    else:
        require_root()
        extra = {}
    env = dict(os.environ)
    if tool == "pyclone":
        env["PYTHONPATH"] = readable_tree() if who == "nobody" else ROOT_DIR
    options = ["--unshare-user", "--info-fd", str(info_w), "--userns-block-fd", str(block_r)]
    command = ["sh", "-c", "id -u; id -g; cat /proc/self/uid_map"]
    return subprocess.Popen(
        [*_prog(who, tool), *options, *HOST, *command],
        pass_fds=(info_w, block_r),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd="/",
        **extra,  # type: ignore[call-overload]
    )


@WHO
@TOOLS
def test_userns_block_fd_leaves_the_maps_to_the_writer(who: str, tool: str) -> None:
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    try:
        process = _start_blocked(who, tool, info_w, block_r)
    finally:
        os.close(info_w)
        os.close(block_r)
    try:
        # the whole report, its end seen while the sandbox waits: nothing else holds FD
        info = json.loads(read_until_eof(info_r, time.monotonic() + WAIT))
        pid = info["child-pid"]
        outside = NOBODY if who == "nobody" else 0
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(f"0 {outside} 1\n")
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(f"0 {outside} 1\n")
        os.write(block_w, b"x")
        out, err = process.communicate(timeout=WAIT)
    finally:
        os.close(info_r)
        os.close(block_w)
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
    assert process.returncode == 0, err
    assert out.split() == ["0", "0", "0", str(outside), "1"]


@TOOLS
def test_help_lists_the_options(tool: str) -> None:
    done = run_tool("root", tool, "--help")
    for option in ("--disable-userns", "--assert-userns-disabled", "--userns-block-fd"):
        assert option in done.stdout
    for option in ("--exec-label", "--file-label"):
        assert option in done.stdout
