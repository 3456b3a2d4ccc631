"""Awaiting a Task while threads wait for it too, against the real kernel.

The loop watches duplicates of the task's descriptors, and collects the
task only while no thread's wait holds it: a thread that collects first
closes the originals without pulling a number from under the loop, and
the result frame arrives whole whichever side read which part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import threading
import time

import pytest

from pyclone import Task, actions, spawn_task

from conftest import WAIT, Health


def _payload(size: int, delay: float) -> bytes:
    time.sleep(delay)
    return bytes(range(256)) * (size // 256)


def _await_and_wait(task: Task[object]) -> tuple[object, object, object]:
    """``wait_async`` on a loop here while a thread waits for the same task."""
    got: dict[str, object] = {}

    def in_thread() -> None:
        try:
            got["thread"] = task.wait()
        except BaseException as exc:  # the comparison shows it
            got["thread"] = exc

    thread = threading.Thread(target=in_thread)
    thread.start()
    try:
        loop_code = asyncio.run(asyncio.wait_for(task.wait_async(), WAIT))
    finally:
        thread.join(WAIT)
    assert not thread.is_alive()
    return loop_code, got.get("thread"), task.result(0)


@pytest.mark.parametrize("size", [0, 300_000])
def test_a_thread_and_the_loop_wait_for_one_task(healthy: Health, size: int) -> None:
    """Either side may collect it; both get its status and the frame stays whole."""
    expected = bytes(range(256)) * (size // 256)
    for i in range(20):
        task = spawn_task(_payload, (size, 0.002 * (i % 4)))
        assert _await_and_wait(task) == (0, 0, expected)
        assert task.ended and task.pidfd is None and task._result_number() is None


def test_a_thread_and_the_loop_wait_for_an_action_task(healthy: Health) -> None:
    for _ in range(10):
        task = spawn_task(actions.sleep(0.01))
        assert _await_and_wait(task) == (0, 0, 0)
        assert task.pidfd is None


def test_the_loop_watches_copies_of_the_descriptors(healthy: Health) -> None:
    """A thread's wait closes the task's descriptors while the loop still watches."""
    r, w = os.pipe()
    try:
        task = spawn_task(os.read, (r, 1))

        async def main() -> int | None:
            waiting = asyncio.ensure_future(task.wait_async())
            await asyncio.sleep(0.01)  # the watch is on
            os.write(w, b"x")
            assert await asyncio.to_thread(task.wait, WAIT) == 0  # a thread collects it
            assert task.pidfd is None  # ... and closed the originals
            return await asyncio.wait_for(waiting, WAIT)

        assert asyncio.run(main()) == 0
        assert task.result(0) == b"x"  # and the watch closed its copies (healthy checks)
    finally:
        os.close(r)
        os.close(w)


def test_with_no_descriptor_left_for_copies_the_loop_polls(healthy: Health) -> None:
    """EMFILE for the watch's copies: the await polls instead, reading the pipe as it goes."""
    expected = bytes(range(256)) * (300_000 // 256)  # more than a pipe holds
    task = spawn_task(_payload, (300_000, 0.01))
    loop = asyncio.new_event_loop()
    fillers: list[int] = []
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # a table just big enough for what is open now, then filled
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (max(map(int, os.listdir("/proc/self/fd"))) + 8, limits[1])
        )
        with contextlib.suppress(OSError):
            while True:
                fillers.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        with pytest.raises(OSError) as info:
            os.dup(0)
        assert info.value.errno == errno.EMFILE
        code = loop.run_until_complete(asyncio.wait_for(task.wait_async(), WAIT))
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        loop.close()
    assert code == 0 and task.result(0) == expected and task.pidfd is None
