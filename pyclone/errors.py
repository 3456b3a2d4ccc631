"""The exceptions pyclone raises, and the hook that words the kernel's refusals."""

from __future__ import annotations

import importlib
import os
import subprocess

from . import _pyclone
from .flags import flag_names

__all__ = ["ChildError", "TimeoutExpired", "UnsupportedFlags"]

#: A flag set or child kind that pyclone refuses (a :class:`ValueError`).
#: The message says why and what to use instead.
UnsupportedFlags = _pyclone.UnsupportedFlags


class TimeoutExpired(subprocess.TimeoutExpired):
    """A wait on a task did not finish within its timeout.

    A :class:`subprocess.TimeoutExpired`, so code written for
    :class:`subprocess.Popen` catches it too.  ``pid`` names the task.
    """

    def __init__(self, pid: int, timeout: float) -> None:
        super().__init__(cmd=f"task {pid}", timeout=timeout)
        self.pid = pid

    def __str__(self) -> str:
        return f"task {self.pid} did not end within {self.timeout} seconds"


class ChildError(Exception):
    """The task's target raised, or the task ended without a result.

    ``exception`` is the child's exception when it could be sent back
    (it is also ``__cause__``), ``remote_traceback`` the traceback text
    formatted in the child, and ``returncode`` the task's exit status
    (negative: killed by that signal).
    """

    def __init__(
        self,
        message: str,
        *,
        exception: BaseException | None = None,
        remote_traceback: str | None = None,
        returncode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.exception = exception
        self.remote_traceback = remote_traceback
        self.returncode = returncode

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_child_error,
            (self.args[0], self.exception, self.remote_traceback, self.returncode),
        )

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text


def _rebuild_child_error(
    message: str,
    exception: BaseException | None,
    remote_traceback: str | None,
    returncode: int | None,
) -> ChildError:
    return ChildError(
        message, exception=exception, remote_traceback=remote_traceback, returncode=returncode
    )


def clone_error(err: int, flags: int, api: str, exit_signal: int) -> OSError:
    """Build the OSError for a clone the kernel rejected (installed as the C error hook).

    The message names the flags and, where the rule model knows it, the
    kernel rule that failed.
    """
    if api == "clone":
        spelled = flag_names(flags, api="clone")
    else:
        spelled = flag_names(flags, api="clone3") + f", exit_signal={exit_signal}"
    message = f"{api}({spelled}): {os.strerror(err)}"
    rule = _rule_for(err, flags, api, exit_signal)
    if rule:
        message += f": {rule}"
    return OSError(err, message)


def _rule_for(err: int, flags: int, api: str, exit_signal: int) -> str | None:
    """The name of the kernel rule the model says failed, when the rule model is present."""
    try:
        rules = importlib.import_module("pyclone.rules")
    except ImportError:
        return None
    rule: str | None = rules.rule_for_errno(err, flags, api=api, exit_signal=exit_signal)
    return rule


_pyclone._set_error_hook(clone_error)
