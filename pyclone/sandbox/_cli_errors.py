"""``pyclone run``'s wording of a failed setup step: the message bwrap prints for the same failure.

bwrap names what it could not do ("Can't find source path /x", "Can't chdir to /y")
followed by the system's reason; :class:`SandboxError` names the step and the system
call's path, from which the same sentence is rebuilt here.  The Python API keeps its own
message (``str(SandboxError)``); only the command line speaks bwrap.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._fsops import ALL_BIND_KINDS, FD_KINDS, OVERLAY_KINDS, FsOp, overlay_options
from ._status import SandboxError

#: Steps whose failure bwrap words without naming a path.
_FIXED = {
    "uid_map": "setting up uid map",
    "gid_map": "setting up gid map",
    "setgroups": "error writing to setgroups",
    "make / private": "Failed to make / private",
    "pivot_root": "pivot_root",
    "setsid": "setsid",
    "fork init": "Can't fork for pid 1",
    "keepcaps": "prctl(PR_SET_KEEPCAPS) failed",
    "capabilities": "capset failed",
    "init capabilities": "capset failed",
    "no_new_privs": "prctl(PR_SET_NO_NEW_PRIVS) failed",
    "die_with_parent": "prctl",
    "seccomp": "prctl(PR_SET_SECCOMP)",
    "userns": "Joining specified user namespace failed",
    "pidns": "Setting pidns failed",
    "userns2": "Setting userns2 failed",
    "unshare": "Creating new namespace failed",
    "unshare pid": "Creating new namespace failed",
    "loopback": "loopback: Failed to bring up lo",
    "open /proc": "Can't open /proc",
    "open max_user_namespaces": "cannot open /proc/sys/user/max_user_namespaces",
    "max_user_namespaces": "sysctl user.max_user_namespaces = 1",
    "unshare user ns": "unshare user ns",
    "userns_block_fd": "read userns_block_fd",
}


def message(exc: SandboxError, ops: Sequence[FsOp], hostname: str | None = None) -> str:
    """bwrap's message for ``exc`` (without the program's name).

    ``ops`` are the sandbox's filesystem operations as applied (sources
    absolute), to name a bind's source; ``hostname`` the one asked for.
    """
    if exc.errno is None and exc.step == "assert_userns_disabled":
        return str(exc.strerror)  # as bwrap's die: no system call failed
    if exc.step == "clone":
        if exc.errno == errno.ENOSPC:
            return (
                "Creating new namespace failed: nesting depth or "
                "/proc/sys/user/max_*_namespaces exceeded (ENOSPC)"
            )
        return f"Creating new namespace failed: {os.strerror(exc.errno or 0)}"
    what = _what(exc, ops, hostname)
    overlay = exc.step.partition(" ")[0] in OVERLAY_KINDS and exc.filename2 is not None
    if overlay and exc.errno == errno.ELOOP and what is not None:
        # bwrap's own reason: ELOOP's "Too many levels of symbolic links" misleads here
        return f"{what}: Overlay directories may not overlap"
    # as bwrap's die_with_error: what failed, then the C library's text for errno
    reason = exc.strerror if exc.errno is None else os.strerror(exc.errno)
    return f"{exc.step if what is None else what}: {reason}"


#: bwrap's one exit status for whatever goes wrong before the command runs
BWRAP_FAILURE = 1
#: pyclone's distinct ones (--distinct-exit-codes): a refused command line, a
#: failed setup, a command that cannot be executed, one that is not found
USAGE, SETUP_FAILED, CANNOT_EXECUTE, NOT_FOUND = 2, 125, 126, 127


def failure_status(distinct: bool, kind: int) -> int:
    """The exit status for a failure of ``kind`` (a distinct one): bwrap's 1 unless ``distinct``."""
    return kind if distinct else BWRAP_FAILURE


def die(carrier: Any, message: str) -> NoReturn:
    """bwrap's ``die`` for a refused command line: ``prog: message``, then exit.

    ``carrier`` is the parser or the parsed namespace: either has ``prog``,
    ``level_prefix`` and ``distinct_exit_codes`` (absent means off).
    """
    prefix = getattr(carrier, "level_prefix", False)
    print(diagnostic(carrier.prog, message, level_prefix=prefix), file=sys.stderr)
    sys.exit(failure_status(getattr(carrier, "distinct_exit_codes", False), USAGE))


#: syslog(3)'s levels, which bwrap's --level-prefix puts before each diagnostic
LOG_ERR = 3
LOG_WARNING = 4


def diagnostic(prog: str, text: str, *, level_prefix: bool, level: int = LOG_ERR) -> str:
    """One line of diagnostics as bwrap writes it: ``prog: text``, after ``<level>`` if asked.

    The prefix (bwrap's --level-prefix) is the one that ``logger --prio-prefix``
    and ``systemd-cat --level-prefix=1`` read.
    """
    return f"<{level}>{prog}: {text}" if level_prefix else f"{prog}: {text}"


def _what(exc: SandboxError, ops: Sequence[FsOp], hostname: str | None) -> str | None:
    step, name = exc.step, exc.filename
    if step in _FIXED:
        return _FIXED[step]
    if step == "exec":
        return f"execvp {name}"
    if step == "chdir":
        return f"Can't chdir to {name}"
    if step == "hostname":
        return f"Can't set hostname to {hostname}"
    if step in ("setresuid", "setresgid"):
        return f"unable to switch to {step[-3:]}"
    if step.startswith("lock_file "):
        path = step.partition(" ")[2]
        # F_SETLK's refusal on Linux (open's EACCES is a permission, not a lock)
        locked = exc.errno == errno.EAGAIN
        return f"Unable to lock file {path}" if locked else f"Unable to open lock file {path}"
    return _filesystem(exc, ops)


def _filesystem(exc: SandboxError, ops: Sequence[FsOp]) -> str | None:
    """A filesystem operation's failure, told apart by the path the system call had."""
    step = exc.step
    if step.startswith("mount tmpfs "):
        kind, dest = "tmpfs", step.removeprefix("mount tmpfs ")
    elif step.startswith("mount "):  # a proc or a dev
        dest = step.removeprefix("mount ")
        kind = _kind_at(ops, dest, ("proc", "dev"))
    else:
        kind, _, dest = step.partition(" ")
    op = _op(ops, kind, dest)
    if op is None:
        return None
    if kind in OVERLAY_KINDS:
        return _overlay(exc, ops, op)
    name, mounting = exc.filename, exc.filename2 is not None
    if op.source is not None and name == op.source and kind != "symlink" and not mounting:
        return f"Can't find source path {op.source}"
    if name is not None and name != dest and dest.startswith(name.rstrip("/") + "/"):
        return f"Can't mkdir parents for {dest}"
    if kind in FD_KINDS and name is None and not mounting:
        return "Race condition binding dirfd"  # what was bound is not the descriptor's file
    if kind in ALL_BIND_KINDS:
        if mounting:
            return f"Can't bind mount {op.source} on {dest}"
        source_is_dir = op.source is not None and os.path.isdir(op.source)
        return f"Can't mkdir {dest}" if source_is_dir else f"Can't create file at {dest}"
    if kind in ("tmpfs", "proc", "dev"):
        fs = "proc" if kind == "proc" else "tmpfs"
        return f"Can't mount {fs} on {dest}" if mounting else f"Can't mkdir {dest}"
    if kind == "mqueue":
        # bwrap names the mount point as its privileged helper saw it, in the staging root
        return f"Can't mount mqueue on /newroot{dest}" if mounting else f"Can't mkdir {dest}"
    return {
        "dir": f"Can't mkdir {dest}",
        "file": f"Can't create file {dest}",
        "bind_data": f"Can't create file at {dest}",
        "ro_bind_data": f"Can't create file at {dest}",
        "symlink": f"Can't make symlink at {dest}",
        "chmod": f"Can't chmod 0{op.mode or 0:o} {dest}",  # C's %#o
        "remount_ro": f"Can't remount readonly on {dest}",
    }.get(kind)


def _overlay(exc: SandboxError, ops: Sequence[FsOp], op: FsOp) -> str:
    """An overlay's failure: a missing host directory, its mount point, or the mount."""
    paths = (op.source, op.workdir, *(op.lower or ()))
    if exc.filename2 is None and exc.filename in paths:
        return f"Can't find source path {exc.filename}"
    name = exc.filename or op.dest
    if exc.filename2 is None and op.dest.startswith(name.rstrip("/") + "/"):
        return f"Can't mkdir parents for {op.dest}"
    if exc.filename2 is None:
        return f"Can't mkdir {op.dest}"
    index = sum(other.kind == "tmp_overlay" for other in ops[: ops.index(op)])
    real = op._replace(
        source=None if op.source is None else os.path.realpath(op.source),
        lower=tuple(os.path.realpath(path) for path in op.lower or ()),
        workdir=None if op.workdir is None else os.path.realpath(op.workdir),
    )
    options = overlay_options(real, index, "/oldroot")
    # bwrap names the mount point as its setup sees it, under /newroot
    return f"Can't make overlay mount on /newroot/{op.dest.lstrip('/')} with options {options}"


def _kind_at(ops: Sequence[FsOp], dest: str, kinds: tuple[str, ...]) -> str:
    """Which of ``kinds`` the operation at ``dest`` is (the last one there wins)."""
    for op in reversed(ops):
        if op.kind in kinds and op.dest == dest:
            return op.kind
    return kinds[0]


def _op(ops: Sequence[FsOp], kind: str, dest: str) -> FsOp | None:
    for op in reversed(ops):
        if op.kind == kind and op.dest == dest:
            return op
    return None
