"""The privilege model of a sandbox: ids and the five capability sets inside, against bwrap's.

An unprivileged caller keeps its ids and no capability; root keeps its own;
``--cap-add``/``--cap-drop`` change that as in bwrap; nothing outside the
caller's bounding set survives; and what was dropped cannot be taken back
(remount, capset, a new user namespace, a setuid binary).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from typing import Any

import pytest
from bwrap_oracle import require_tools

import pyclone
from pyclone import Sandbox

from conftest import WAIT, Health, become_nobody, require_root
from sandbox_helpers import (
    BWRAP_ARGS,
    NOBODY,
    WHO,
    in_fork,
    run_as,
    run_tool,
    setuid_root_copy,
    shared_dir,
)

_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
_REPORT = ["sh", "-c", "id -u; id -g; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status"]

#: command lines (before the report) both tools accept, for each caller
_LINES = {
    "root": [
        [],
        ["--unshare-all"],
        ["--unshare-user"],
        ["--unshare-all", "--cap-drop", "ALL"],
        ["--unshare-all", "--cap-drop", "ALL", "--cap-add", "CAP_NET_ADMIN"],
        ["--unshare-all", "--cap-drop", "CAP_CHOWN"],
        ["--unshare-user", "--uid", "1000", "--gid", "1000"],
    ],
    "nobody": [
        [],
        ["--unshare-all"],
        ["--unshare-all", "--cap-add", "CAP_NET_ADMIN"],
        ["--unshare-all", "--uid", "0", "--gid", "0"],
        ["--unshare-all", "--uid", "0", "--cap-add", "CAP_SYS_ADMIN"],
        ["--unshare-all", "--uid", "1000", "--cap-drop", "CAP_CHOWN"],
    ],
}


def _privileges(who: str, tool: str, line: list[str]) -> dict[str, Any]:
    done = run_tool(who, tool, *line, "--ro-bind", "/", "/", *_REPORT)
    assert done.returncode == 0, (tool, line, done.stderr)
    uid, gid, *caps = done.stdout.split("\n")[:7]
    return {"uid": uid, "gid": gid, **{c.split(":")[0]: int(c.split()[1], 16) for c in caps}}


@pytest.mark.parametrize(
    ("who", "line"), [(who, line) for who, lines in _LINES.items() for line in lines], ids=str
)
def test_ids_and_capabilities_are_bwraps(who: str, line: list[str]) -> None:
    theirs = _privileges(who, "bwrap", line)
    ours = _privileges(who, "pyclone", line)
    assert ours == theirs, line


def _bounding() -> int:
    with open("/proc/self/status") as f:
        return next(int(x.split()[1], 16) for x in f if x.startswith("CapBnd:"))


def _inside_caps(sb: Sandbox) -> dict[str, int]:
    def inside() -> dict[str, int]:
        with open("/proc/self/status") as f:
            return {k: int(v, 16) for k, v in (x.split(":\t") for x in f if x[:3] == "Cap")}

    got: dict[str, int] = sb.spawn(inside).result(WAIT)
    return got


def _without_one_bounding_cap() -> dict[str, int]:
    # a host whose bounding set lacks CAP_SYS_NICE (bit 23)
    pyclone._pyclone.prctl(pyclone._pyclone.PR_CAPBSET_DROP, 23)
    return {
        "root": _inside_caps(Sandbox(new="all"))["CapBnd"],
        "root cap_add ALL": _inside_caps(Sandbox(new="all", cap_add="ALL"))["CapEff"],
        "host": _bounding(),
    }


def test_never_more_than_the_callers_bounding_set(healthy: Health) -> None:
    require_root()
    got = in_fork(_without_one_bounding_cap)
    assert not got["host"] & (1 << 23)
    assert got["root"] == got["host"]  # the new user namespace had given it back
    assert got["root cap_add ALL"] == got["host"]


def _nobody_without_one_bounding_cap() -> dict[str, int]:
    pyclone._pyclone.prctl(pyclone._pyclone.PR_CAPBSET_DROP, 23)
    become_nobody()
    return {
        "plain": _inside_caps(Sandbox(new="all"))["CapEff"],
        "cap_add ALL": _inside_caps(Sandbox(new="all", cap_add="ALL"))["CapEff"],
        "host": _bounding(),
    }


def test_an_unprivileged_callers_own_namespace_gets_what_it_asks(healthy: Health) -> None:
    # as bwrap: the kernel gives the creator of a user namespace every
    # capability in it, whatever its bounding set, so cap_add gives them
    # (nested sandboxes of a caller with an emptied bounding set need it)
    require_root()
    got = in_fork(_nobody_without_one_bounding_cap)
    assert not got["host"] & (1 << 23)
    assert got["plain"] == 0
    assert got["cap_add ALL"] & (1 << 23)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert got["cap_add ALL"] == (1 << (int(f.read()) + 1)) - 1


def _unprivileged_api() -> dict[str, Any]:
    def inside() -> tuple[int, int, dict[str, int]]:
        with open("/proc/self/status") as f:
            caps = {k: int(v, 16) for k, v in (x.split(":\t") for x in f if x[:3] == "Cap")}
        return os.getuid(), os.getgid(), caps

    plain = Sandbox(new="all").spawn(inside).result(WAIT)
    added = Sandbox(new="all", cap_add=["CAP_NET_RAW"]).spawn(inside).result(WAIT)
    return {"plain": plain, "added": added}


def test_api_callable_holds_no_capability_when_unprivileged() -> None:
    got = run_as("nobody", _unprivileged_api)
    uid, gid, caps = got["plain"]
    assert (uid, gid) == (NOBODY, NOBODY)
    assert caps == dict.fromkeys(_SETS, 0)
    net_raw = 1 << 13
    assert got["added"][2] == dict.fromkeys(_SETS, net_raw)


def _remount_attack(data: str) -> dict[str, Any]:
    """In the sandbox, make the read-only bind of ``data`` writable again, then write."""

    def inside() -> dict[str, Any]:
        m = pyclone._pyclone
        out: dict[str, Any] = {}

        def attempt(name: str, fn: Any) -> None:
            try:
                fn()
                out[name] = "ok"
            except OSError as exc:
                out[name] = errno.errorcode.get(exc.errno or 0, str(exc))

        def write() -> None:
            with open("/data/f", "w") as f:
                f.write("overwritten")

        attempt("remount", lambda: m.mount(None, "/data", None, m.MS_BIND | m.MS_REMOUNT))
        attempt("write", write)
        attempt("capset", lambda: m.capset((1 << 21), (1 << 21), 0))
        # a user namespace of its own gives every capability, over its own namespaces only
        attempt("unshare", lambda: m.unshare(m.CLONE_NEWUSER | m.CLONE_NEWNS))
        attempt("remount again", lambda: m.mount(None, "/data", None, m.MS_BIND | m.MS_REMOUNT))
        attempt("write again", write)
        return out

    drop = "ALL" if os.geteuid() == 0 else ()  # root keeps its capabilities unless told
    sb = Sandbox(new="all", new_root=True, ro_bind=[(data, "/data")], cap_drop=drop)
    got: dict[str, Any] = sb.spawn(inside).result(WAIT)
    with open(os.path.join(data, "f")) as f:
        got["file"] = f.read()
    return got


def _attack_own_dir(owner: int) -> dict[str, Any]:
    with shared_dir(owner, 0o755) as data:
        with open(os.path.join(data, "f"), "w") as f:
            f.write("original")
        os.chown(os.path.join(data, "f"), owner, owner)
        return _remount_attack(data)


@WHO
def test_read_only_bind_stays_read_only(who: str) -> None:
    owner = 0 if who == "root" else NOBODY
    got = run_as(who, _attack_own_dir, owner)
    assert got["remount"] == "EPERM"
    assert got["write"] == "EROFS"
    assert got["capset"] == "EPERM"
    assert got["unshare"] == "ok"
    assert got["remount again"] == "EPERM"  # the copied mount's read-only flag is locked
    assert got["write again"] == "EROFS"
    assert got["file"] == "original"


@WHO
def test_remount_attack_from_the_command_line_matches_bwrap(who: str) -> None:
    """``mount -o remount,bind,rw`` fails in both (pyclone's alone where bwrap is missing)."""
    owner = 0 if who == "root" else NOBODY
    with shared_dir(owner, 0o755) as data:
        path = os.path.join(data, "f")
        with open(path, "w") as f:
            f.write("original\n")
        os.chown(path, owner, owner)
        script = "mount -o remount,bind,rw /data || exit 3; echo overwritten > /data/f"
        line = [*BWRAP_ARGS, "--ro-bind", data, "/data"]
        if who == "root":
            line += ["--cap-drop", "ALL"]
        for tool in ("bwrap", "pyclone") if shutil.which("bwrap") else ("pyclone",):
            done = run_tool(who, tool, *line, "sh", "-c", script)
            assert done.returncode == 3, (tool, done.stdout, done.stderr)
            with open(path) as f:
                assert f.read() == "original\n", tool


def test_setuid_root_binary_gives_back_no_capability(healthy: Health) -> None:
    require_root("needs root to create a setuid-root binary")
    with shared_dir(owner=0) as bindir:
        copy = setuid_root_copy("/usr/bin/cat", bindir)
        # The host's tree, where the setuid bit works (no bind of ours, so no
        # nosuid), and no PR_SET_NO_NEW_PRIVS: only the bounding set holds.
        sb = Sandbox(new={"mnt"}, uid=NOBODY, gid=NOBODY, no_new_privs=False, new_root=False)
        done = sb.run([copy, "/proc/self/status"], capture_output=True, timeout=WAIT)
        assert done.returncode == 0, done.stderr
        status = dict(x.split(":\t", 1) for x in done.stdout.decode().splitlines())
        assert status["Uid"].split()[1] == "0"  # the setuid bit did work...
        for name in ("CapEff", "CapPrm", "CapBnd"):
            assert int(status[name], 16) == 0, name  # ...and brought no capability


def _ptrace_from_inside(victim: int) -> int:
    """In a sandbox with every namespace, try to attach to ``victim`` (outside): the errno."""

    def inside() -> int:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.restype = ctypes.c_long
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        ptrace_attach = 16
        if libc.ptrace(ptrace_attach, victim, None, None) == 0:
            return 0
        return ctypes.get_errno()

    got: int = Sandbox(new="all").spawn(inside).result(WAIT)
    return got


def _tracer(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))


def _attack_a_process_outside() -> tuple[int, int]:
    with subprocess.Popen(["sleep", "60"]) as victim:  # the caller's uid: ptrace-able outside
        try:
            return _ptrace_from_inside(victim.pid), _tracer(victim.pid)
        finally:
            victim.kill()


@WHO
def test_a_process_outside_cannot_be_traced(who: str) -> None:
    # the same uid could trace it from outside; inside, its pid names nothing
    err, tracer = run_as(who, _attack_a_process_outside)
    assert err == errno.ESRCH
    assert tracer == 0


@WHO
def test_a_process_outside_cannot_be_traced_from_the_command_line_either(who: str) -> None:
    """``strace -p`` of a process of the caller's fails in both tools (no such process)."""
    require_tools("strace")
    user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if who == "nobody" else {}
    with subprocess.Popen(["sleep", "60"], **user) as victim:
        try:
            for tool in ("bwrap", "pyclone") if shutil.which("bwrap") else ("pyclone",):
                argv = ["strace", "-e", "trace=none", "-p", str(victim.pid)]
                done = run_tool(who, tool, *BWRAP_ARGS, *argv)
                assert done.returncode != 0, (tool, done.stderr)
                assert "No such process" in done.stderr, (tool, done.stderr)
                assert _tracer(victim.pid) == 0, tool
        finally:
            victim.kill()
