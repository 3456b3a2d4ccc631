"""The exception of a wait that timed out: a subprocess.TimeoutExpired, kept apart.

Its own module so that :mod:`pyclone.errors` loads :mod:`subprocess` only
when a wait first times out (``pyclone.errors.TimeoutExpired`` is this
class, read through the module's ``__getattr__``).
"""

from __future__ import annotations

import subprocess


class TimeoutExpired(subprocess.TimeoutExpired, TimeoutError):
    """A wait on a task did not finish within its timeout.

    A :class:`subprocess.TimeoutExpired`, so code written for
    :class:`subprocess.Popen` catches it too, and a builtin
    :class:`TimeoutError`, so ``except TimeoutError`` does.  ``pid``
    names the task.
    """

    def __init__(self, pid: int, timeout: float) -> None:
        super().__init__(cmd=f"task {pid}", timeout=timeout)
        self.pid = pid
        self.args = (pid, timeout)  # OSError leaves them empty when __init__ is overridden

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.pid, self.timeout))

    def __str__(self) -> str:
        return f"task {self.pid} did not end within {self.timeout} seconds"


# Its public name: what repr(), the docs and a pickle of it say.
TimeoutExpired.__module__ = "pyclone.errors"
