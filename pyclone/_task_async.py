"""Waiting for a :class:`~pyclone.Task` from asyncio: its pidfd on the event loop.

:meth:`Task.wait_async <pyclone.Task.wait_async>` is a thin method over
:func:`wait_async` here, so the Task module stays about one task's
lifetime; this one is about the loop.
"""

from __future__ import annotations

import os
from typing import Protocol

from ._lazy import asyncio  # the real asyncio (with ssl, sockets) loads when a task is awaited
from ._reaper import collect_pidfd, parent_status_now
from .flags import CloneFlag

__all__ = ["wait_async"]

_PARENT = int(CloneFlag.PARENT)  # a plain int: IntFlag tests run Python code in enum.py


class Task(Protocol):
    """What of a :class:`pyclone.Task` the loop's wait uses (the Task module imports this one)."""

    ended: bool
    returncode: int | None
    flags: CloneFlag
    _async_wait: asyncio.Task[None] | None
    _async_waiters: int

    @property
    def pidfd(self) -> int | None: ...
    def _wait(self, timeout: float | None) -> bool: ...
    def _result_number(self) -> int | None: ...
    def _take_result_data(self, data: bytes) -> bool: ...
    def _result_refused(self) -> bool: ...
    def _close_result_fd(self) -> None: ...
    def _drain_result(self) -> None: ...
    def _finish(self, code: int | None) -> None: ...


async def wait_async(task: Task) -> int | None:
    """Wait for ``task`` on the running loop; the method's docstring says how."""
    if task.ended:
        return task.returncode
    loop = asyncio.get_running_loop()
    if task.pidfd is None:
        delay = 0.001
        while not task.ended:
            task._wait(0.0)
            if not task.ended:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        return task.returncode
    watch = task._async_wait
    if watch is None or watch.get_loop() is not loop:
        watch = task._async_wait = loop.create_task(_watch(task, loop))
    task._async_waiters += 1
    try:
        await asyncio.shield(watch)
    finally:
        task._async_waiters -= 1
        if task._async_waiters == 0 and not watch.done():
            watch.cancel()  # the last waiter gave up: stop watching
            task._async_wait = None
    return task.returncode


async def _watch(task: Task, loop: asyncio.AbstractEventLoop) -> None:
    """One watch per task and loop, shared by its waiters: pidfd and result pipe readers."""
    pidfd = task.pidfd
    assert pidfd is not None
    exited: asyncio.Future[None] = loop.create_future()
    result_fd = task._result_number()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    def on_result() -> None:
        nonlocal result_fd
        assert result_fd is not None
        try:
            data = os.read(result_fd, 1 << 16)
        except BlockingIOError:
            return
        if not data or not task._take_result_data(data):
            loop.remove_reader(result_fd)
            if task._result_refused():
                # closed only once unwatched, and forgotten here: the number
                # may soon belong to another descriptor this loop watches
                task._close_result_fd()
                result_fd = None

    loop.add_reader(pidfd, on_exit)
    if result_fd is not None:
        os.set_blocking(result_fd, False)
        loop.add_reader(result_fd, on_result)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        if result_fd is not None:
            loop.remove_reader(result_fd)
    task._drain_result()
    known, code = (False, None)
    if not int(task.flags) & _PARENT:
        known, code = collect_pidfd(pidfd)  # the task is a zombie: this does not block
    delay = 0.001
    while not known:  # someone else reaps it: wait for that, then read the status
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
        known, code = parent_status_now(pidfd)
    if not task.ended:
        task._finish(code)
