"""Helpers shared by the pyclone.actions tests: the seed sample's buffer, thread bookkeeping."""

from __future__ import annotations

import os
import time

from pyclone import CloneFlag

from conftest import WAIT

HELLO = b"hello from parent\0"
CHILD = b"hello from child\0"
THREAD = CloneFlag(
    CloneFlag.VM
    | CloneFlag.FS
    | CloneFlag.FILES
    | CloneFlag.SIGHAND
    | CloneFlag.THREAD
    | CloneFlag.SYSVSEM
)


def seed_buffer() -> bytearray:
    buf = bytearray(100)
    buf[: len(HELLO)] = HELLO
    return buf


def text(buf: bytearray) -> bytes:
    return bytes(buf).split(b"\0", 1)[0]


def wait_thread_gone(tid: int) -> None:
    """Wait for a thread to leave /proc/self/task.

    A raw-clone thread cannot be joined from Python, and a joined one may
    still be finishing its exit in the kernel after its tid word cleared.
    """
    deadline = time.monotonic() + WAIT
    while os.path.exists(f"/proc/self/task/{tid}"):
        assert time.monotonic() < deadline, f"thread {tid} did not end"
        time.sleep(0.001)


def wait_threads_settle(count: int) -> None:
    """Wait for the process to be back to ``count`` threads.

    Each waited thread has cleared its tid word, but on a busy machine an
    earlier one may still be between that wake-up and leaving the task list.
    """
    deadline = time.monotonic() + WAIT
    while (now := len(os.listdir("/proc/self/task"))) > count:
        assert time.monotonic() < deadline, f"{now - count} threads did not end"
        time.sleep(0.001)
    assert now == count


def maps_lines() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)
