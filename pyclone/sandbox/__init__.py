"""Sandboxes built from namespaces: :class:`Sandbox`, :class:`SandboxError`, ``pyclone run``.

A :class:`Sandbox` is a declarative description (a frozen value: reusable,
hashable, picklable).  :meth:`Sandbox.spawn` creates a fork-like task with the
namespaces it names; the parent writes the uid/gid maps while the child waits
on a gate, then the child runs the setup steps in plain Python over thin
syscalls (mount, pivot_root, prctl, capset) and finally executes the command
or runs the Python callable.  A failing step is sent back over a close-on-exec
status pipe and raised in the parent as :class:`SandboxError` before
:meth:`~Sandbox.spawn` returns; the half-built task is killed and reaped.

This package only re-exports; each private module holds one part:
``_spec`` the description, ``_checks`` its option checks, ``_fsops`` the
ordered filesystem operations, ``_names`` the
kernel's names, ``_run`` the parent's launch and wait, ``_userns`` the id
maps, ``_setup`` the child's steps, ``_mounts`` the mount plan, ``_init`` the
pid 1, ``_status`` the failure report, ``_cli`` ``python -m pyclone run``
(``_cli_ops`` its filesystem options).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._fsops import FsOp
from ._names import CAPABILITIES as CAPABILITIES
from ._names import DEFAULT_NEW as DEFAULT_NEW
from ._spec import Sandbox
from ._status import SandboxError

if TYPE_CHECKING:
    from ._cli import add_parser, main
    from ._cli import sandbox_from_args as sandbox_from_args

__all__ = ["FsOp", "Sandbox", "SandboxError", "add_parser", "main"]

#: The command line's names, imported on first use (PEP 562): a program that
#: builds sandboxes does not load argparse and the option parsers.
_CLI_NAMES = frozenset({"add_parser", "main", "sandbox_from_args"})


def __getattr__(name: str) -> Any:
    if name in _CLI_NAMES:
        from . import _cli  # lazy: only ``pyclone run`` and its parser need it

        return getattr(_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
