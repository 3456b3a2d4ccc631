"""Waiting for a :class:`~pyclone.Task` from asyncio: its pidfd on the event loop.

:meth:`Task.wait_async <pyclone.Task.wait_async>` is a thin method over
:func:`wait_async` here, so the Task module stays about one task's
lifetime; this one is about the loop.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

from ._fd import Fd
from ._lazy import asyncio  # the real asyncio (with ssl, sockets) loads when a task is awaited
from ._pyclone import _await_exit
from ._transport import frame_complete

__all__ = ["wait_async"]


class Task(Protocol):
    """What of a :class:`pyclone.Task` the loop's wait uses (the Task module imports this one)."""

    ended: bool
    returncode: int | None
    _pidfd: Fd | None
    _result_fd: Fd | None
    _buffer: bytearray
    _result_limit: int | None
    _async_wait: asyncio.Task[None] | None
    _async_waiters: int
    _wait_lock: threading.RLock

    def poll(self) -> int | None: ...
    def _close_result_fd(self) -> None: ...


async def wait_async(task: Task) -> int | None:
    """Wait for ``task`` on the running loop; the method's docstring says how."""
    if task.ended:
        return task.returncode
    loop = asyncio.get_running_loop()
    if task._pidfd is None:
        await _collect(task)
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


async def _collect(task: Task) -> None:
    """Collect the ended task, or wait for whoever collects it.

    :meth:`Task.poll` collects only while no thread waits for the task (it
    leaves it to that thread then); a task pyclone does not reap (CLONE_PARENT)
    ends once its real parent has reaped it; a task without a pidfd is
    polled for.  All of it with a growing pause between looks.
    """
    delay = 0.001
    while task.poll() is None and not task.ended:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def _watch(task: Task, loop: asyncio.AbstractEventLoop) -> None:
    """One watch per task and loop, shared by its waiters: pidfd and result pipe readers.

    The loop watches duplicates of the task's descriptors, owned here: a
    thread's wait (or a signal handler's) may collect the task and close
    the originals meanwhile, and the loop must never watch a number that a
    new descriptor may take.  The pipe is read by the C call the waits use,
    with no Python code between a read and keeping its bytes, so reads
    here and in a waiting thread keep the frame's order.
    """
    pidfd = _copy(task._pidfd)
    result = _copy(task._result_fd) if pidfd is not None else None
    if pidfd is None or (result is None and task._result_fd is not None):
        # A thread collected the task first, or no descriptor was left for a
        # copy: poll instead (each look reads what the pipe holds).
        if pidfd is not None:
            pidfd.close()
        await _collect(task)
        return
    exited: asyncio.Future[None] = loop.create_future()
    limit = -1 if task._result_limit is None else task._result_limit

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    def on_result() -> None:
        nonlocal result
        assert result is not None
        got = _await_exit(pidfd, result, task._buffer, limit, 0.0, False)
        if got is None:
            return  # signal handlers ran: the loop calls again if there is more
        if got[2]:  # end of file, or a refused frame: stop reading
            _stop_reading()
            if task._wait_lock.acquire(False):  # not while a thread's wait polls it
                try:
                    task._close_result_fd()  # the sender of a refused frame gets EPIPE
                finally:
                    task._wait_lock.release()
        elif frame_complete(task._buffer):
            _stop_reading()

    def _stop_reading() -> None:
        nonlocal result
        if result is not None:
            loop.remove_reader(_number(result))
            result.close()
            result = None

    try:
        if result is not None:
            os.set_blocking(_number(result), False)
            loop.add_reader(_number(result), on_result)
        loop.add_reader(_number(pidfd), on_exit)
        try:
            await exited
        finally:
            loop.remove_reader(_number(pidfd))
            _stop_reading()
    finally:
        pidfd.close()
    await _collect(task)


def _number(owner: Fd) -> int:
    """The number of a duplicate this watch owns: open until the watch closes it."""
    fd = owner.fd
    assert fd is not None
    return fd


def _copy(owner: Fd | None) -> Fd | None:
    """A duplicate of ``owner``'s descriptor for the loop, or None if it is closed (or EMFILE)."""
    if owner is None:
        return None
    try:
        return owner.dup()
    except OSError:
        return None
