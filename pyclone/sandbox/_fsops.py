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
    ``ro_bind_data``; ``size`` the byte limit of a ``tmpfs``; ``fd`` the
    caller's descriptor whose file a ``bind_fd`` or ``ro_bind_fd`` binds.

    A ``*_try`` bind is skipped, creating nothing, when its source does not
    exist (ENOENT, a dangling symlink included); any other failure to find
    it is an error, as for the plain bind.  An ``*_fd`` bind binds the path
    the descriptor's file has (``/proc/self/fd/FD`` resolved: a directory,
    file or ``O_PATH`` descriptor; a pipe, socket or deleted file has none,
    ENOENT), checks that the mount is that file, and then closes the
    sandbox's copy of the descriptor (unless it is 0-2 or in ``pass_fds``);
    the caller's stays open.  An ``mqueue`` is a new POSIX message queue
    filesystem (of the sandbox's ipc namespace), nosuid, nodev and noexec.

    The overlays, as bwrap's: ``lower`` the host directories layered
    (lowest first) by an ``overlay`` (whose ``source`` is the writable upper
    directory and ``workdir`` overlayfs's work directory, both on the host),
    a ``tmp_overlay`` (writes go to a tmpfs and vanish) or a ``ro_overlay``
    (no writes, two layers at least).
    """

    kind: str
    dest: str
    source: str | None = None
    mode: int | None = None
    data: bytes | None = None
    size: int | None = None
    lower: tuple[str, ...] | None = None
    workdir: str | None = None
    fd: int | None = None


#: kind -> the mode of what it creates when ``mode`` is not given (bwrap's defaults)
DEFAULT_MODES = {"dir": 0o755, "tmpfs": 0o755, "file": 0o666, "bind_data": 0o600}
DEFAULT_MODES["ro_bind_data"] = 0o600
#: the binds the keyword options also make (``bind=``, ``ro_bind=``, ``dev_bind=``)
BIND_KINDS = ("bind", "ro_bind", "dev_bind")
#: binds skipped when their source is missing
TRY_KINDS = ("bind_try", "ro_bind_try", "dev_bind_try")
#: binds of what a descriptor is open on
FD_KINDS = ("bind_fd", "ro_bind_fd")
#: every kind that bind mounts a host path
ALL_BIND_KINDS = (*BIND_KINDS, *TRY_KINDS, *FD_KINDS)
DATA_KINDS = ("file", "bind_data", "ro_bind_data")
OVERLAY_KINDS = ("overlay", "tmp_overlay", "ro_overlay")
KINDS = (
    *ALL_BIND_KINDS, "tmpfs", "proc", "dev", "mqueue", "symlink", "dir", *DATA_KINDS, "chmod",
    "remount_ro", *OVERLAY_KINDS,
)  # fmt: skip
#: the kinds that alone ask for no new root: they only mount (or remount) over a directory
MOUNT_ONLY_KINDS = ("tmpfs", "proc", "mqueue", "remount_ro")
#: the kinds that may work over the caller's own tree (the others would write to it)
OVER_TREE_KINDS = (*ALL_BIND_KINDS, *MOUNT_ONLY_KINDS)
#: the kinds that create nothing at their destination, not even its parents
NO_CREATE_KINDS = ("chmod", "remount_ro")
_ROOT_OK = (*ALL_BIND_KINDS, "tmpfs", "dir", "chmod", "remount_ro", *OVERLAY_KINDS)
#: kind -> how many lower directories it needs at least (bwrap's rule)
MIN_LOWER = {"overlay": 1, "tmp_overlay": 1, "ro_overlay": 2}
MAX_MODE = 0o7777


def check_ops(value: Any) -> tuple[FsOp, ...]:
    """``ops`` in normal form: FsOp entries, paths normalized, bwrap's default modes filled in."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"ops must be a list of FsOp (or tuples), not {value!r}")
    return tuple(_check_op(item) for item in value)


def _check_op(item: Any) -> FsOp:
    if not isinstance(item, tuple) or not 2 <= len(item) <= 9:
        raise TypeError(f"ops entries must be FsOp or (kind, dest, ...) tuples, not {item!r}")
    op = FsOp(*item)
    if op.kind not in KINDS:
        raise ValueError(f"unknown operation kind {op.kind!r}: valid kinds are {', '.join(KINDS)}")
    dest = check_path(op.dest, f"{op.kind} destination")
    if dest == "/" and op.kind not in _ROOT_OK:
        raise ValueError(f"'/' cannot be the destination of {op.kind}")
    source = op.source
    if op.kind == "overlay" and source is not None:
        source = check_path(source, "overlay source", absolute=False)
    elif op.kind in (*BIND_KINDS, *TRY_KINDS, "symlink", "overlay"):
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
    fd = op.fd
    if op.kind in FD_KINDS:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"{op.kind} {dest} needs its descriptor as an int, not {fd!r}")
        if fd < 0:
            raise ValueError(f"{op.kind} descriptor must be 0 or more, not {fd}")
    elif fd is not None:
        raise ValueError(f"only bind_fd and ro_bind_fd take a descriptor, not {op.kind}")
    lower, workdir = _check_overlay(op)
    return FsOp(op.kind, dest, source, mode, data, size, lower, workdir, fd)


def _check_overlay(op: FsOp) -> tuple[tuple[str, ...] | None, str | None]:
    """An overlay's lower directories and work directory, checked (None for other kinds)."""
    lower, workdir = op.lower, op.workdir
    if op.kind not in OVERLAY_KINDS:
        if lower is not None or workdir is not None:
            raise ValueError(f"{op.kind} takes no lower directories or workdir")
        return None, None
    if lower is None or isinstance(lower, (str, bytes)) or not isinstance(lower, Iterable):
        raise TypeError(f"{op.kind} {op.dest} needs its lower directories as a list of paths")
    lower = tuple(check_path(path, f"{op.kind} lower directory", absolute=False) for path in lower)
    if len(lower) < MIN_LOWER[op.kind]:
        raise ValueError(
            f"{op.kind} {op.dest} needs at least {MIN_LOWER[op.kind]} lower directories, "
            f"not {len(lower)}"
        )
    if op.kind == "overlay":
        if workdir is None:
            raise ValueError(f"overlay {op.dest} needs a workdir")
        workdir = check_path(workdir, "overlay workdir", absolute=False)
    elif workdir is not None:
        raise ValueError(f"{op.kind} takes no workdir")
    return lower, workdir


def resolved(op: FsOp, cwd: str) -> FsOp:
    """``op`` with its host paths (a bind's or overlay's) made absolute against ``cwd``."""

    def absolute(path: str) -> str:
        return os.path.normpath(os.path.join(cwd, path))

    if op.kind in FD_KINDS:
        # the magic link to it, as in bwrap (which names it in its messages);
        # what that leads to is found in the child
        return op._replace(source=f"/proc/self/fd/{op.fd}")
    if op.kind in (*BIND_KINDS, *TRY_KINDS) and op.source is not None:
        return op._replace(source=absolute(op.source))
    if op.kind in OVERLAY_KINDS:
        return op._replace(
            source=None if op.source is None else absolute(op.source),
            lower=tuple(absolute(path) for path in op.lower or ()),
            workdir=None if op.workdir is None else absolute(op.workdir),
        )
    return op


# A backslash before each separator (and before a backslash itself); a table,
# not a regular expression: ``re`` alone would add 2 ms to this package's import.
_OPTION_ESCAPES = str.maketrans({c: "\\" + c for c in "\\,:"})


def escape_option(path: str) -> str:
    """``path`` in a mount option: backslash before the separators ``,`` and ``:``, as bwrap."""
    return path.translate(_OPTION_ESCAPES)


def overlay_options(op: FsOp, index: int, host: str) -> str:
    """overlayfs's mount options for ``op``, as bwrap writes them.

    Host paths are under ``host`` (where the caller's root is); a
    ``tmp_overlay`` writes to the ``index``-th upper and work directories of
    the staging root.  The lower directories go top first, as overlayfs
    wants them.  ``userxattr``: in a user namespace overlayfs may keep its
    metadata only in user.* extended attributes (trusted.* needs
    CAP_SYS_ADMIN over the host).
    """
    parts = []
    if op.kind == "overlay":
        assert op.source is not None and op.workdir is not None
        parts.append(f"upperdir={host}{escape_option(op.source)}")
        parts.append(f"workdir={host}{escape_option(op.workdir)}")
    elif op.kind == "tmp_overlay":
        parts.append(f"upperdir=/tmp-overlay-upper-{index},workdir=/tmp-overlay-work-{index}")
    lower = ":".join(host + escape_option(path) for path in reversed(op.lower or ()))
    return ",".join([*parts, f"lowerdir={lower}", "userxattr"])


def bind_flags(kind: str) -> tuple[bool, bool]:
    """(read-only, devices allowed) of a bind of ``kind``."""
    return kind.startswith("ro_"), kind.startswith("dev_")


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
