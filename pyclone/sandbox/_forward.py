"""``forward_signals``: the signals the caller of :meth:`Sandbox.run` gets, passed to the sandbox.

The sandbox runs in a session of its own (``new_session``), so a terminal's
Ctrl-C or a supervisor's SIGTERM reaches only the caller; with
``forward_signals`` the caller hands each such signal to the sandbox's
first process while it waits: the init, which passes it on to the command,
or the command itself when it is pid 1 (``init=False``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from ..task import Task
from ._init import _FORWARDED as FORWARDED


class Forwarder:
    """Passes each forwarded signal to the task once it exists (those before it, then)."""

    def __init__(self) -> None:
        self.task: Task | None = None
        self.pending: list[int] = []

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.task is None:
            self.pending.append(signum)
        else:
            self.task.send_signal(signum)  # nothing once it is collected (pidfd)

    def started(self, task: Task) -> None:
        self.task = task
        for signum in self.pending:
            task.send_signal(signum)
        self.pending.clear()


@contextlib.contextmanager
def forwarding(enabled: bool) -> Iterator[Forwarder | None]:
    """Handlers that forward :data:`FORWARDED` while the block runs (the old ones after it)."""
    if not enabled:
        yield None
        return
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("forward_signals needs run() in the main thread: only it handles signals")
    forwarder = Forwarder()
    old = {signum: signal.signal(signum, forwarder.handle) for signum in FORWARDED}
    try:
        yield forwarder
    finally:
        for signum, handler in old.items():
            # None: set outside Python, so no way back to it; the default is the nearest
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
