"""``python -m pyclone demo``: the clone(2) article's sample, in pyclone."""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

from . import actions
from ._pyclone import CLONE_VFORK, CLONE_VM, clone
from .spec import SharePreset
from .task import spawn_task

_HELLO = b"hello from parent"


def _clone_vm_sample(flags: int) -> int:
    """The article's sample: a child prints the parent's ``buf``, then writes into it."""
    buf = bytearray(100)
    buf[: len(_HELLO)] = _HELLO

    def child() -> int:
        print(f'Child sees buf = "{_text(buf)}"', flush=True)
        message = b"hello from child"
        buf[: len(message) + 1] = message + b"\0"
        return 0

    pid = clone(child, flags | signal.SIGCHLD)
    _, status = os.waitpid(pid, 0)
    print(f'Child exited with status {status}. buf = "{_text(buf)}"', flush=True)
    return 0


def run_copy_demo() -> int:
    """One task without CLONE_VM: the child writes into its own copy of ``buf``."""
    return _clone_vm_sample(0)


def run_vm_demo() -> int:
    """The same task with CLONE_VM|CLONE_VFORK: the child writes into the parent's ``buf``."""
    return _clone_vm_sample(CLONE_VM | CLONE_VFORK)


def run_thread_demo() -> int:
    """A process task and a thread task side by side: pid, tgid and parent pid of each.

    Both run a C-level action (a Python callable cannot be a thread); the
    numbers are the kernel's, read from ``/proc/<pid>/status`` while the
    tasks sleep in their action, then the tasks are ended.
    """
    rows = [("caller", _ids(os.getpid()))]
    kinds: tuple[tuple[str, SharePreset], ...] = (
        ("process task", "process"),
        ("thread task", "thread"),
    )
    for name, share in kinds:
        with spawn_task(actions.sleep(60), share=share) as task:
            try:
                rows.append((name, _ids(task.pid)))
            finally:
                task.kill()
    print(f"{'':14}{'pid':>8}{'tgid':>8}{'ppid':>8}")
    for name, (pid, tgid, ppid) in rows:
        print(f"{name:14}{pid:>8}{tgid:>8}{ppid:>8}")
    caller = os.getpid()
    print(f"The process task is a new thread group (tgid = its pid) whose parent is {caller}.")
    print(f"The thread task has its own id but the caller's tgid {caller}: os.getpid() in it")
    print("would return the caller's pid, and its parent is the caller's parent.")
    return 0


def _ids(pid: int) -> tuple[int, int, int]:
    """(Pid, Tgid, PPid) of a task, as the kernel reports them."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["Pid"]), int(fields["Tgid"]), int(fields["PPid"])


def _text(buf: bytearray) -> str:
    return bytes(buf).split(b"\0", 1)[0].decode()


def _run(args: Any) -> int:
    if getattr(args, "which", None) == "thread":
        return run_thread_demo()
    if getattr(args, "which", None) == "vm":
        return run_vm_demo()
    return run_copy_demo()


def add_parser(sub: Any) -> None:
    """Register the ``demo`` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="show one task created with two flag sets (the clone-vm sample)",
        description="Create a child with clone(2) that prints the parent's buffer and "
        "writes into it.  Without CLONE_VM the child writes into its own copy.",
    )
    parser.add_argument(
        "which",
        nargs="?",
        choices=["thread", "vm"],
        help="thread: a process task and a thread task side by side (pid, tgid, parent pid); "
        "vm: share the memory (CLONE_VM|CLONE_VFORK), so the child writes into the parent's "
        "buffer",
    )
    parser.set_defaults(func=_run)
