"""Flag sets written as text (``"VM,SIGHAND"``, ``"CLONE_VM|SIGCHLD"``, ``0x100``).

The syntax the ``explain`` command takes; kept with the rule model so that
any front end spells flags the same way.
"""

from __future__ import annotations

import signal

from ..flags import SINGLE_FLAGS, CloneFlag


def _parse_signal(text: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit() or text.lower().startswith("0x"):
        return int(text, 0)
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None


def parse_flags(text: str) -> tuple[int, int | None]:
    """Parse ``"VM,SIGHAND"``, ``"CLONE_VM|CLONE_FS|SIGCHLD"`` or a number.

    Returns ``(flags, exit_signal)``: names with or without ``CLONE_``,
    numbers (``0x100``, ``256``), separated by commas, ``|`` or spaces; a
    signal name (``SIGCHLD``) gives the exit signal (None if there is none).
    """
    flags = 0
    exit_signal: int | None = None
    for part in text.replace("|", ",").replace(" ", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if part[0].isdigit():
            flags |= int(part, 0)
            continue
        name = part.upper()
        name = name[len("CLONE_") :] if name.startswith("CLONE_") else name
        if name in CloneFlag.__members__:
            flags |= int(CloneFlag[name])
        elif name.startswith("SIG"):
            exit_signal = _parse_signal(name)
        else:
            known = ", ".join(str(m.name) for m in SINGLE_FLAGS)
            raise ValueError(f"unknown flag {part!r}: known flags are {known}")
    return flags, exit_signal
