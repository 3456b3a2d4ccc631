"""Ordered filesystem operations of a sandbox (:class:`FsOp`, bwrap's setup ops) and their check.

The keyword mount options of a Sandbox are applied parents first; ``ops`` is
applied in its own order, after them, so that a later operation covers an
earlier one on the same or a parent destination, as on bwrap's command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, NamedTuple

from ._checks import check_path


class FsOp(NamedTuple):
    """One filesystem operation, as one bwrap option makes it.

    ``kind`` is one of :data:`KINDS`; ``dest`` the path inside the sandbox;
    ``source`` the host path of a bind (relative to the caller's directory)
    or the target of a symlink; ``mode`` the permission bits of what a
    ``dir``, ``file``, ``bind_data``, ``ro_bind_data`` or ``tmpfs`` creates
    (bwrap's ``--perms``; the defaults are bwrap's) and the new bits of a
    ``chmod``; ``data`` the content of a ``file``, ``bind_data`` or
    ``ro_bind_data``; ``size`` the byte limit of a ``tmpfs``.
    """

    kind: str
    dest: str
    source: str | None = None
    mode: int | None = None
    data: bytes | None = None
    size: int | None = None


#: kind -> the mode of what it creates when ``mode`` is not given (bwrap's defaults)
DEFAULT_MODES = {"dir": 0o755, "tmpfs": 0o755, "file": 0o666, "bind_data": 0o600}
DEFAULT_MODES["ro_bind_data"] = 0o600
BIND_KINDS = ("bind", "ro_bind", "dev_bind")
DATA_KINDS = ("file", "bind_data", "ro_bind_data")
KINDS = (*BIND_KINDS, "tmpfs", "proc", "dev", "symlink", "dir", *DATA_KINDS, "chmod", "remount_ro")
#: the kinds that may work over the caller's own tree (the others would write to it)
OVER_TREE_KINDS = (*BIND_KINDS, "tmpfs", "proc", "remount_ro")
#: the kinds that create nothing at their destination, not even its parents
NO_CREATE_KINDS = ("chmod", "remount_ro")
_ROOT_OK = (*BIND_KINDS, "tmpfs", "dir", "chmod", "remount_ro")
MAX_MODE = 0o7777


def check_ops(value: Any) -> tuple[FsOp, ...]:
    """``ops`` in normal form: FsOp entries, paths normalized, bwrap's default modes filled in."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"ops must be a list of FsOp (or tuples), not {value!r}")
    return tuple(_check_op(item) for item in value)


def _check_op(item: Any) -> FsOp:
    if not isinstance(item, tuple) or not 2 <= len(item) <= 6:
        raise TypeError(f"ops entries must be FsOp or (kind, dest, ...) tuples, not {item!r}")
    op = FsOp(*item)
    if op.kind not in KINDS:
        raise ValueError(f"unknown operation kind {op.kind!r}: valid kinds are {', '.join(KINDS)}")
    dest = check_path(op.dest, f"{op.kind} destination")
    if dest == "/" and op.kind not in _ROOT_OK:
        raise ValueError(f"'/' cannot be the destination of {op.kind}")
    source = op.source
    if op.kind in (*BIND_KINDS, "symlink"):
        if source is None:
            raise ValueError(f"{op.kind} {dest} needs a source")
        source = check_path(source, f"{op.kind} source", absolute=False)
    elif source is not None:
        raise ValueError(f"{op.kind} takes no source, not {source!r}")
    mode = op.mode
    if mode is not None:
        if isinstance(mode, bool) or not isinstance(mode, int):
            raise TypeError(f"{op.kind} mode must be an int, not {mode!r}")
        if not 0 <= mode <= MAX_MODE:
            raise ValueError(f"{op.kind} mode must be between 0 and 0o7777, not {mode:#o}")
        if op.kind not in (*DEFAULT_MODES, "chmod"):
            raise ValueError(f"{op.kind} takes no mode")
    elif op.kind == "chmod":
        raise ValueError(f"chmod {dest} needs a mode")
    else:
        mode = DEFAULT_MODES.get(op.kind)
    data = op.data
    if op.kind in DATA_KINDS:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{op.kind} {dest} needs its data as bytes, not {data!r}")
        data = bytes(data)
    elif data is not None:
        raise ValueError(f"{op.kind} takes no data")
    size = op.size
    if size is not None:
        if op.kind != "tmpfs":
            raise ValueError(f"only a tmpfs takes a size, not {op.kind}")
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"tmpfs size must be an int, not {size!r}")
        if size <= 0:
            raise ValueError(f"tmpfs size must be a positive number of bytes, not {size}")
    return FsOp(op.kind, dest, source, mode, data, size)


def resolved(op: FsOp, cwd: str) -> FsOp:
    """``op`` with a bind's source made absolute against the caller's directory ``cwd``."""
    if op.kind in BIND_KINDS and op.source is not None:
        return op._replace(source=os.path.normpath(os.path.join(cwd, op.source)))
    return op


def parent_mode(mode: int | None) -> int:
    """The mode of the parents created for a destination made with ``mode`` (bwrap's rule).

    They are 0755, but not searchable by the group (others) when what is
    made there is inaccessible to it: the least astonishing parents.
    """
    out = 0o755
    if mode is not None and not mode & 0o070:
        out &= ~0o050
    if mode is not None and not mode & 0o007:
        out &= ~0o005
    return out
