"""Sandbox(lock_file=, sync_fd=, block_fd=, userns=, pidns=): the checks, what the init holds."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest

from pyclone import Sandbox

from conftest import WAIT, require_root
from sandbox_helpers import WHO, gone, lock_is_held, run_as, wait_until


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"lock_file": 3}, TypeError),
        ({"lock_file": "relative"}, ValueError),
        ({"sync_fd": "3"}, TypeError),
        ({"sync_fd": -1}, ValueError),
        ({"block_fd": True}, TypeError),
        ({"userns": -2}, ValueError),
        ({"pidns": 1.5}, TypeError),
        ({"userns2": -1}, ValueError),
        ({"lock_file": ["/x"], "init": False}, ValueError),
        ({"userns": 0, "new": {"user", "mnt"}}, ValueError),
    ],
)
def test_bad_options_are_refused_when_built(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        Sandbox(**kwargs)  # type: ignore[arg-type]


def test_bad_descriptors_are_refused_before_the_clone() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)  # a number no descriptor has now
    for name in ("sync_fd", "block_fd", "userns", "pidns", "userns2"):
        with pytest.raises(OSError) as info:
            Sandbox(new={"mnt"}, **{name: fd}).run(["true"])  # type: ignore[arg-type]
        assert info.value.errno == errno.EBADF


def _lock_held_while_running(new: set[str]) -> bool:
    """Is the lock held once the sandbox runs, and freed (its target gone) once it is killed?"""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        lock = os.path.join(tmp, "lock")
        open(lock, "w").close()
        pidfile = os.path.join(tmp, "pid")
        r, w = os.pipe()
        task = Sandbox(new=new, lock_file=[lock]).spawn(
            ["sh", "-c", f"echo $$ > {pidfile}; read x"], stdin=r
        )
        os.close(r)
        try:
            held = lock_is_held(lock)
            wait_until(lambda: os.path.exists(pidfile) and os.path.getsize(pidfile), "the pid")
            with open(pidfile) as f:
                target = int(f.read())
            # Killing the task (the init) ends the target too, and frees the lock.
            task.kill()
            task.wait(WAIT)
            wait_until(lambda: not lock_is_held(lock), "the lock to be freed")
            if "pid" not in new:  # else $$ is the pid inside, and the namespace ended anyway
                wait_until(lambda: gone(target), "the target to end with its init")
        finally:
            os.close(w)
            task.close()
        return held


@WHO
@pytest.mark.parametrize("pid", [False, True], ids=["no-pidns", "pidns"])
def test_lock_file_is_held_by_the_init(who: str, pid: bool) -> None:
    new = {"mnt"} | ({"pid"} if pid else set()) | ({"user"} if who == "nobody" else set())
    assert run_as(who, _lock_held_while_running, new)


def _sync_and_block() -> tuple[bytes, int]:
    sync_r, sync_w = os.pipe()
    block_r, block_w = os.pipe()
    os.write(block_w, b"x")
    done = Sandbox(new={"mnt"}, sync_fd=sync_w, block_fd=block_r).run(
        ["sh", "-c", f"test ! -e /proc/self/fd/{sync_w} && test ! -e /proc/self/fd/{block_r}"]
    )
    os.close(sync_w), os.close(block_r), os.close(block_w)
    os.set_blocking(sync_r, False)
    try:
        left = os.read(sync_r, 1)  # EOF: the sandbox's init let go when it ended
    finally:
        os.close(sync_r)
    return left, done.returncode


def test_sync_fd_and_block_fd_stay_out_of_the_command() -> None:
    require_root()
    assert _sync_and_block() == (b"", 0)
