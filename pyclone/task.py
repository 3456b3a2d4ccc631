"""Task objects and :func:`spawn_task`: the Popen-like face of clone.

The public home of both names.  The work is done below it:
:mod:`pyclone._task` (the :class:`Task` object), :mod:`pyclone._launch`
(:func:`spawn_task` and its steps), :mod:`pyclone._transport` (the
result pipe) and :mod:`pyclone._reaper` (exit statuses, dropped tasks).
The private names re-exported here are the ones pyclone.sandbox and the
tests reach for as ``pyclone.task._name``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _transport
from ._launch import GATE_FAILED_STATUS as GATE_FAILED_STATUS
from ._launch import TIME_CLOCKS as TIME_CLOCKS
from ._launch import _spawn as _spawn
from ._launch import _spawn_action as _spawn_action
from ._launch import spawn_task
from ._reaper import _active as _active
from ._reaper import _cleanup as _cleanup
from ._task import Task
from ._transport import _child_main as _child_main

__all__ = ["Task", "spawn_task"]

#: In a child: the descriptor its outcome goes to (so sandbox setup keeps it open).
#: The child rebinds it in :mod:`pyclone._transport`; reading it here goes
#: through the module ``__getattr__`` below, so it is never a stale copy.
_child_result_fd: int | None

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name == "_child_result_fd":
            return _transport._child_result_fd
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
