"""The borrowed child's stack: a mapping of its own, never the caller's stack below its pointer.

A CLONE_VM child that dies mid-call (``os._exit``) leaves its frames on its
stack, and the caller's recovery still reads them (to sever them from the
thread state it keeps).  Were that stack the caller's own, below its stack
pointer, any call or signal frame of the caller would overwrite them (and an
ASan build reports the read: ``.ci/sanitize`` runs this file).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

import pyclone
from pyclone import CLONE_VFORK, CLONE_VM
from pyclone.borrowed import abandoned_thread_states, vm_supported

from conftest import WAIT, Health, check_interpreter, reap

pytestmark = pytest.mark.skipif(
    not vm_supported(), reason="this interpreter cannot run Python in CLONE_VM children"
)

VMV = CLONE_VM | CLONE_VFORK | signal.SIGCHLD
MIB = 1024 * 1024


def _stack_pointer() -> int:
    """This thread's stack pointer, as the kernel saw it when the read below entered it.

    /proc/thread-self/syscall: the system call number, six arguments, then
    the stack pointer and the program counter.
    """
    with open("/proc/thread-self/syscall") as f:
        fields = f.read().split()
    return int(fields[-2], 16)


def _mapping_of(address: int) -> tuple[int, int, str]:
    """(start, end, name) of the mapping of this address space that holds ``address``."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, end = (int(part, 16) for part in fields[0].split("-"))
            if start <= address < end:
                return start, end, fields[5].strip() if len(fields) == 6 else ""
    raise AssertionError(f"no mapping holds {address:#x}")


def _where_the_child_runs(stack_size: int) -> dict[str, Any]:
    box: list[tuple[int, tuple[int, int, str]]] = []

    def child() -> int:
        sp = _stack_pointer()
        box.append((sp, _mapping_of(sp)))  # the child's mapping is gone once it has ended
        return 0

    caller_sp = _stack_pointer()
    caller_map = _mapping_of(caller_sp)
    assert reap(pyclone.clone(child, VMV, stack_size)) == 0
    child_sp, child_map = box[0]
    return {
        "caller_sp": caller_sp,
        "caller_map": caller_map,
        "child_sp": child_sp,
        "child_map": child_map,
    }


@pytest.mark.parametrize("stack_size", [0, 16 * MIB], ids=["default", "16MiB"])
@pytest.mark.parametrize("caller", ["main-thread", "thread"])
def test_child_stack_is_not_the_callers(healthy: Health, stack_size: int, caller: str) -> None:
    """The child's stack pointer lies outside the caller's stack mapping."""
    if caller == "thread":
        found: list[dict[str, Any]] = []
        t = threading.Thread(target=lambda: found.append(_where_the_child_runs(stack_size)))
        t.start()
        t.join(WAIT)
        assert not t.is_alive()
        where = found[0]
    else:
        where = _where_the_child_runs(stack_size)
    start, end, name = where["child_map"]
    # Judged against the caller's stack mapping as the caller saw it before the launch:
    # the kernel may merge the child's mapping with a thread stack just above it into one
    # entry of /proc/self/maps (seen on 3.15 in Debian sid), so the child's own entry can
    # span both without the two stacks overlapping.
    caller_start, caller_end, _ = where["caller_map"]
    assert not caller_start <= where["child_sp"] < caller_end, where
    assert name != "[stack]", where
    assert end - start >= max(stack_size, 8 * MIB), where  # the guard page is a mapping apart


def _dive(depth: int, keep: list[Any]) -> int:
    """Recurse through C calls (sorted's key: an entry frame on the C stack per level), then die."""
    if depth:
        return sorted([1, 0], key=lambda x: _dive(depth - 1, keep) if x else 0)[0]
    keep.append(sys._getframe())
    try:
        1 / 0  # noqa: B018 - a traceback that reaches into the dead child
    except ZeroDivisionError as exc:
        keep.append(exc)
    os._exit(5)


def _scribble(depth: int, then: Callable[[], object] = int) -> int:
    """Nested C calls, as _dive makes, then ``then()``: fills the stack below the pointer."""
    if depth:
        sorted([1, 0], key=lambda x: x and _scribble(depth - 1, then))
    else:
        then()
    return 1


def test_dead_frames_survive_the_callers_stack_reuse(healthy: Health) -> None:
    """Children die deep in C-level recursion; the caller then overwrites its own stack below
    its pointer (deep C recursion, a signal frame, a handler that recurses) and is intact.

    Each child is started from a shallower point of the caller's stack than the one
    before, so that, were the children on the caller's stack, each would lay its frames
    over those the one before abandoned (as an ASan build sees: poisoned by the dead
    child's instrumented frames, the read that severs them is reported).
    """
    keep: list[Any] = []
    hits: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        _scribble(100)
        hits.append(signum)

    statuses: list[int] = []

    def spawn(i: int) -> None:
        statuses.append(reap(pyclone.clone(lambda: _dive(80 + 10 * i, keep), VMV)))

    before = abandoned_thread_states()
    # Before 3.11 each C call counts against the recursion limit too: _scribble(250)
    # nests about a thousand of them there, under pytest's own frames.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            for i in range(6):
                _scribble(10 * (5 - i), lambda i=i: spawn(i))  # type: ignore[misc]
                assert os.waitstatus_to_exitcode(statuses[-1]) == 5
                _scribble(250)
                json.dumps(json.loads("[" * 300 + "]" * 300))
                signal.raise_signal(signal.SIGUSR1)
                gc.collect()
    finally:
        signal.signal(signal.SIGUSR1, old)
        sys.setrecursionlimit(limit)
    assert len(hits) == 6
    assert abandoned_thread_states() == before + 6
    frames = [obj for obj in keep if isinstance(obj, FrameType)]
    errors = [obj for obj in keep if isinstance(obj, ZeroDivisionError)]
    assert len(frames) == len(errors) == 6
    for frame in frames:
        assert frame.f_code is _dive.__code__
        chain: FrameType | None = frame
        while chain is not None:  # severed where the child's call began
            assert chain.f_lineno is None or chain.f_lineno > 0
            chain = chain.f_back
        assert "_dive" in "".join(traceback.format_stack(frame))
    for exc in errors:
        assert "ZeroDivisionError" in "".join(traceback.format_exception(exc))
    check_interpreter()


_REUSE_SCRIPT = """
import functools, os, signal, sys, warnings
import pyclone
warnings.simplefilter("ignore")
V = pyclone.CLONE_VM | pyclone.CLONE_VFORK | signal.SIGCHLD

def nest(kind, n, then):
    # n nested C-level calls of one kind (each leaves a C frame of its own size)
    if n == 0:
        then()
    elif kind == 0:
        functools.reduce(lambda a, b: nest(kind, n - 1, then), [1, 2])
    elif kind == 1:
        list(map(lambda x: nest(kind, n - 1, then), [1]))
    else:
        sorted([1, 0], key=lambda x: x and nest(kind, n - 1, then))
    return 1

def die():
    os._exit(3)

def spawn(kind, depth):
    status = os.waitpid(pyclone.clone(lambda: nest(kind, depth, die), V), 0)[1]
    assert os.waitstatus_to_exitcode(status) == 3, status

pairs = 0
for kind in range(3):
    for depth in range(40):
        for kind_b in range(3):
            nest(kind, 20, lambda: spawn(kind_b, 2))  # from deep in the caller's stack
            spawn(kind_b, depth)  # from higher up, dying at every depth in turn
            pairs += 1
print(pairs, pyclone.abandoned_thread_states())
"""


def test_children_dying_over_each_others_stacks() -> None:
    """Child after child dies mid-call, each started higher up the caller's stack than the
    one before and dying at every depth in turn: were they on the caller's stack, one
    would die where an earlier one's frames were (an ASan build reported the read of
    the dead frames then, in pyclone_sever); on stacks of their own, nothing overlaps."""
    proc = subprocess.run(
        [sys.executable, "-c", _REUSE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["360", "720"]
