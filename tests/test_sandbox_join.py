"""Sandbox(userns=, pidns=): the given namespaces joined, the relay that enters a pid
namespace, and its end taking the joined process with it (as root and as uid 65534)."""

from __future__ import annotations

import errno
import os
import signal
import tempfile

import pytest

from pyclone import Sandbox, SandboxError

from conftest import WAIT, require_root
from sandbox_helpers import WHO, gone, run_as, wait_until


def _join(pid: bool) -> tuple[str, str, int]:
    r, w = os.pipe()
    first = Sandbox(new={"user", "mnt", "pid"}).spawn(["sh", "-c", "read x"], stdin=r)
    os.close(r)
    try:
        user = os.open(f"/proc/{first.pid}/ns/user", os.O_RDONLY)
        pidns = os.open(f"/proc/{first.pid}/ns/pid", os.O_RDONLY)
        joined = Sandbox(new={"mnt"}, userns=user, pidns=pidns if pid else None)
        script = "readlink /proc/self/ns/user /proc/self/ns/pid; echo $$"
        done = joined.run(["sh", "-c", script], capture_output=True)
        user_link, pid_link, inner = done.stdout.decode().split()
        wanted = os.readlink(f"/proc/{first.pid}/ns/user"), os.readlink(f"/proc/{first.pid}/ns/pid")
        os.close(user), os.close(pidns)
    finally:
        os.close(w)
        first.wait(WAIT)
        first.close()
    assert user_link == wanted[0]
    assert (pid_link == wanted[1]) == pid
    return user_link, pid_link, int(inner)


@WHO
@pytest.mark.parametrize("pid", [False, True], ids=["userns", "userns-pidns"])
def test_given_namespaces_are_joined(who: str, pid: bool) -> None:
    _user, _pid, inner = run_as(who, _join, pid)
    assert inner > 1  # in the joined pid namespace: not its init


def _kill_joined() -> bool:
    r, w = os.pipe()
    first = Sandbox(new={"user", "mnt", "pid"}).spawn(["sh", "-c", "read x"], stdin=r)
    os.close(r)
    try:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            os.chmod(tmp, 0o777)
            pidfile = os.path.join(tmp, "pid")
            user = os.open(f"/proc/{first.pid}/ns/user", os.O_RDONLY)
            pidns = os.open(f"/proc/{first.pid}/ns/pid", os.O_RDONLY)
            task = Sandbox(new={"mnt"}, userns=user, pidns=pidns).spawn(
                ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000"]
            )
            os.close(user), os.close(pidns)
            wait_until(lambda: os.path.exists(pidfile) and os.path.getsize(pidfile), "the pid")
            # The relay is the task: killing it ends what it forked into the joined namespace.
            children = f"/proc/{task.pid}/task/{task.pid}/children"
            with open(children) as f:
                (forked,) = (int(p) for p in f.read().split())
            task.send_signal(signal.SIGKILL)
            task.wait(WAIT)
            task.close()
            wait_until(lambda: gone(forked), "the joined process to end")
    finally:
        os.close(w)
        first.wait(WAIT)
        first.close()
    return True


@WHO
def test_killing_a_joined_sandbox_leaves_nothing_in_the_namespace(who: str) -> None:
    assert run_as(who, _kill_joined)


def test_joining_something_else_names_the_step() -> None:
    require_root()
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(SandboxError) as info:
            Sandbox(new={"mnt"}, userns=fd).run(["true"])
    finally:
        os.close(fd)
    assert info.value.step == "userns" and info.value.errno == errno.EINVAL


def test_userns2_is_entered_after_the_setup() -> None:
    # As root, without --userns: the mounts are made in the caller's user
    # namespace, then the sandbox moves into the given one (bwrap's --userns2).
    require_root()
    r, w = os.pipe()
    first = Sandbox(new={"user", "mnt"}).spawn(["sh", "-c", "read x"], stdin=r)
    os.close(r)
    try:
        user = os.open(f"/proc/{first.pid}/ns/user", os.O_RDONLY)
        try:
            done = Sandbox(new={"mnt"}, tmpfs=["/mnt"], userns2=user).run(
                ["readlink", "/proc/self/ns/user"], capture_output=True
            )
        finally:
            os.close(user)
        wanted = os.readlink(f"/proc/{first.pid}/ns/user")
    finally:
        os.close(w)
        first.wait(WAIT)
        first.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == wanted
