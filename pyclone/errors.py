"""The exceptions pyclone raises, and the hook that words the kernel's refusals."""

from __future__ import annotations

import os
import sys

from . import _pyclone
from .flags import flag_names

__all__ = ["ChildError", "TimeoutExpired", "UnsupportedFlags"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._timeout import TimeoutExpired as TimeoutExpired

#: A flag set or child kind that pyclone refuses (a :class:`ValueError`).
#: The message says why and what to use instead.
UnsupportedFlags = _pyclone.UnsupportedFlags


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


_RULES = f"{__package__}.rules"


def clone_error(err: int, flags: int, api: str, exit_signal: int) -> OSError:
    """Build the OSError for a clone the kernel rejected (installed as the C error hook).

    The message names the flags and, where the rule model
    (:mod:`pyclone.rules`) knows it, the kernel rule that failed.  The
    model is imported at the first refusal, not with the core (it would
    add about 15 ms, with dataclasses and inspect, to every program that
    launches a task).  Where no import works any more (no descriptor left,
    a uid that cannot read the installed package, a new root) or none
    should run (a child on the borrowed interpreter), the OSError is the
    same, errno and flags included, only without the rule's name.
    """
    if api == "clone":
        spelled = flag_names(flags, api="clone")
    else:
        spelled = flag_names(flags, api="clone3") + f", exit_signal={exit_signal}"
    message = f"{api}({spelled}): {os.strerror(err)}"
    if _RULES not in sys.modules and _pyclone._child_kind() == "vm":
        # A child on the borrowed interpreter imports nothing: the import would
        # run on the suspended caller's memory, modules and import locks.
        return OSError(err, message)
    try:
        from .rules import rule_for_errno  # lazy: 15 ms that most programs never need
    except Exception:  # an ImportError, or OSError(EMFILE) from the finder
        return OSError(err, message)
    rule = rule_for_errno(err, flags, api=api, exit_signal=exit_signal)
    if rule:
        message += f": {rule}"
    return OSError(err, message)


_pyclone._set_error_hook(clone_error)


if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        # TimeoutExpired subclasses subprocess's, and subprocess (with selectors)
        # is a few milliseconds of import that most programs never need:
        # ``pyclone run`` waits with no timeout, a wait that times out loads it.
        if name == "TimeoutExpired":
            from ._timeout import TimeoutExpired  # lazy: subprocess, for the first timeout

            globals()[name] = TimeoutExpired  # read directly from now on
            return TimeoutExpired
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
