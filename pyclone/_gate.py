"""The launch gate: a child that waits until its creator has prepared it.

The child runs its own preparation first and reports it over one pipe,
then waits at the gate (another pipe) while the creator places it in a
cgroup, writes its maps or offsets; if that fails the child is killed and
collected.  Used by :mod:`pyclone._launch` for gated fork-like launches.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
from collections.abc import Callable, Mapping
from typing import Any

from ._fd import Fd
from ._reaper import _active
from ._task import Task
from ._transport import _child_main
from .cgroup import Cgroup
from .flags import CloneFlag

__all__ = ["GATE_FAILED_STATUS"]

#: Exit status of a child whose creator failed to prepare it (see ``before_start``).
GATE_FAILED_STATUS = 127


def _wait_ready(task: Task, ready_r: int) -> None:
    """Wait for the child's report that its own preparation is done; raise what it reports."""
    poller = select.poll()
    poller.register(ready_r, select.POLLIN)
    if task.pidfd is not None:
        poller.register(task.pidfd, select.POLLIN)
    while True:
        events = dict(poller.poll())
        if ready_r in events:
            data = os.read(ready_r, 512)
            break
        if task.pidfd in events:
            data = b""
            break
    if data[:1] == b"\x01":
        return
    if data[:1] == b"\x00" and len(data) >= 5:
        (err,) = struct.unpack("<i", data[1:5])
        raise OSError(err, f"in the new task {task.pid}: {data[5:].decode(errors='replace')}")
    raise RuntimeError(f"task {task.pid} ended before it was prepared")


def _gated_child(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kw: Mapping[str, Any],
    result_w: int,
    gate_r: int,
    ready_w: int,
    child_prepare: Callable[[], None] | None,
    child_enter: Callable[[], None] | None,
    mask: set[int] | None = None,
) -> Callable[[], int]:
    """The child's main: prepare and report, wait at the gate, then run the target.

    ``gate_r`` and ``ready_w`` are -1 when there is no gate or no
    preparation to report.  ``mask`` is the creator's signal mask, which
    the child gets back just before the target runs: until then signals
    sent to it are held.
    """

    def run_target() -> Any:
        if child_enter is not None:
            child_enter()
        return target(*args, **kw)

    def child() -> int:
        if child_prepare is not None:
            try:
                child_prepare()
            except OSError as exc:
                text = str(exc).encode(errors="replace")[:400]
                os.write(ready_w, b"\x00" + struct.pack("<i", exc.errno or 0) + text)
                return GATE_FAILED_STATUS
            os.write(ready_w, b"\x01")
        if gate_r >= 0 and os.read(gate_r, 1) != b"\x01":
            return GATE_FAILED_STATUS  # the creator could not prepare this task
        return _child_main(run_target, (), {}, result_w, mask)

    return child


def _number(owner: Fd | None) -> int:
    """The descriptor a child is handed (-1: none)."""
    return -1 if owner is None or owner.fd is None else owner.fd


def _prepare_and_open_gate(
    task: Task,
    gate_w: Fd,
    ready_r: Fd | None,
    cgroup: Cgroup | None,
    into_cgroup: bool,
    before_start: Callable[[Task], None] | None,
) -> None:
    """Wait for the child's preparation, prepare it from here, then let it run.

    If any of it fails (or is interrupted), the child is killed and
    collected and the error propagates.
    """
    try:
        if ready_r is not None:
            _wait_ready(task, _number(ready_r))
        if cgroup is not None:
            cgroup._place(task.pid, v2=not into_cgroup)
        if before_start is not None:
            before_start(task)
        if ready_r is not None:
            ready_r.close()
        os.write(_number(gate_w), b"\x01")
        gate_w.close()
    except BaseException:
        gate_w.close()
        if ready_r is not None:
            ready_r.close()
        _discard(task)
        raise


def _discard(task: Task) -> None:
    """Kill a task whose preparation failed, collect it and release it.

    If an interrupt stops the wait, the task stays on the reaper list.
    """
    task._abandon()
    if task.flags & CloneFlag.PARENT and task.pidfd is not None:
        # not ours to reap: do not wait for its real parent to do it
        task._poll_pidfd(None)
        task._finish(None)
    else:
        task.wait()
    task.close()
    with contextlib.suppress(ValueError):
        _active.remove(task)
