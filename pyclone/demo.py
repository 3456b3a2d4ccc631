"""``python -m pyclone demo``: the clone(2) article's sample, in pyclone."""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

from ._pyclone import clone

_HELLO = b"hello from parent"


def run_copy_demo() -> int:
    """One task without CLONE_VM: the child writes into its own copy of ``buf``."""
    buf = bytearray(100)
    buf[: len(_HELLO)] = _HELLO

    def child() -> int:
        print(f'Child sees buf = "{_text(buf)}"', flush=True)
        message = b"hello from child"
        buf[: len(message) + 1] = message + b"\0"
        return 0

    pid = clone(child, signal.SIGCHLD)
    _, status = os.waitpid(pid, 0)
    print(f'Child exited with status {status}. buf = "{_text(buf)}"', flush=True)
    return 0


def _text(buf: bytearray) -> str:
    return bytes(buf).split(b"\0", 1)[0].decode()


def _run(args: Any) -> int:
    return run_copy_demo()


def add_parser(sub: Any) -> None:
    """Register the ``demo`` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="show one task created with two flag sets (the clone-vm sample)",
        description="Create a child with clone(2) that prints the parent's buffer and "
        "writes into it.  Without CLONE_VM the child writes into its own copy.",
    )
    parser.set_defaults(func=_run)
