"""One clone request in the form the kernel checks it, built from pyclone's arguments.

:func:`_call` validates the arguments of :func:`pyclone.rules.predict_errno`
and friends and splits a clone(2) word the way the kernel does.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from ._caller import CallerState, _LiveCaller

_MASK64 = (1 << 64) - 1
_CSIGNAL = 0xFF
_APIS = ("clone", "clone3")


@dataclass(frozen=True)
class Call:
    """One clone request in the form the kernel checks it.

    ``flags`` are the clone3-style flags (for clone(2): the low 32 bits
    without the exit-signal byte), ``exit_signal`` the exit signal, and
    ``caller`` the caller's state.
    """

    api: str
    flags: int
    exit_signal: int
    caller: CallerState | _LiveCaller

    def has(self, flags: int) -> bool:
        """True if every bit of ``flags`` is set."""
        return self.flags & int(flags) == int(flags)

    def any(self, flags: int) -> bool:
        """True if some bit of ``flags`` is set."""
        return bool(self.flags & int(flags))


def _call(
    flags: int,
    api: str,
    exit_signal: int | None,
    privileged: bool | CallerState | None,
) -> Call:
    if api not in _APIS:
        raise ValueError(f"api must be 'clone' or 'clone3', not {api!r}")
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    if not 0 <= flags <= _MASK64:
        raise ValueError(f"flags must fit in 64 unsigned bits, not {flags:#x}")
    if exit_signal is not None and (
        not isinstance(exit_signal, int) or isinstance(exit_signal, bool)
    ):
        raise TypeError(f"exit_signal must be an int or None, not {type(exit_signal).__name__}")
    if api == "clone":
        low = flags & _CSIGNAL
        if exit_signal is None:
            exit_signal = low
        elif not 0 <= exit_signal <= _CSIGNAL:
            raise ValueError(f"clone(2) takes an exit signal of 0-255, not {exit_signal}")
        elif low and low != exit_signal:
            raise ValueError(
                f"flags carry exit signal {low} in their low byte but exit_signal={exit_signal}"
            )
        # The kernel takes the low 32 bits and splits off the exit-signal byte.
        word = flags & 0xFFFFFFFF & ~_CSIGNAL
    else:
        if exit_signal is None:
            exit_signal = int(signal.SIGCHLD)
        elif not 0 <= exit_signal <= _MASK64:
            raise ValueError(f"exit_signal must fit in 64 unsigned bits, not {exit_signal}")
        word = flags
    caller: CallerState | _LiveCaller
    if privileged is None:
        caller = _LiveCaller()
    elif isinstance(privileged, CallerState):
        caller = privileged
    elif privileged is True:
        caller = CallerState.privileged()
    elif privileged is False:
        caller = CallerState.unprivileged()
    else:
        raise TypeError(f"privileged must be None, a bool or a CallerState, not {privileged!r}")
    return Call(api, word, exit_signal, caller)
