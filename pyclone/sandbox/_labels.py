"""SELinux labels (bwrap's ``--exec-label`` and ``--file-label``): refused, with a reason.

pyclone applies no SELinux label.  bwrap refuses a label where SELinux is not
enabled ("labeling not supported on this system") and applies it otherwise;
pyclone refuses it in both cases, saying which one it is, so that a sandbox
never runs with a label silently left out.
"""

from __future__ import annotations

import os
from typing import Any

#: bwrap's wording where SELinux is not enabled.
NOT_ON_THIS_SYSTEM = "labeling not supported on this system"


def selinux_enabled() -> bool:
    """libselinux's test: an selinuxfs is mounted (it holds ``enforce`` once a policy is loaded)."""
    return os.path.exists("/sys/fs/selinux/enforce")


def refusal() -> str:
    """Why a label cannot be applied here: bwrap's wording, or pyclone's where SELinux is on."""
    if selinux_enabled():
        return "labeling not supported by pyclone (it applies no SELinux label)"
    return NOT_ON_THIS_SYSTEM


def check_label(value: Any, name: str) -> None:
    """``exec_label``/``file_label``: None, or a ValueError saying why it cannot be applied."""
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str (an SELinux context), not {value!r}")
    raise ValueError(f"{name}={value!r} cannot be applied: {refusal()}")
