"""Checks of arguments at the API boundary that several task methods share."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = ["check_timeout", "positional_args"]


def check_timeout(timeout: object, name: str = "timeout") -> None:
    """Refuse a timeout that is not None or a finite, non-negative number of seconds."""
    if timeout is None:
        return
    if type(timeout) not in (int, float) and (
        isinstance(timeout, bool) or not isinstance(timeout, numbers.Real)
    ):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(timeout).__name__}")
    assert isinstance(timeout, numbers.Real)
    if not math.isfinite(timeout) or timeout < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0 or None, not {timeout!r}")


def positional_args(args: object) -> tuple[Any, ...]:
    """The target's positional arguments as a tuple; TypeError naming ``args`` if not iterable."""
    if isinstance(args, tuple):
        return args
    if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
        # a str would pass as its characters: almost always a missing (x,)
        raise TypeError(f"args must be a tuple or other iterable, not {type(args).__name__}")
    return tuple(args)
