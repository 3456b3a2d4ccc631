"""``pyclone run``'s filesystem options: bwrap's setup operations, kept in command-line order.

Each option appends an :class:`FsOp` to ``args.fs_ops``; ``--perms`` and
``--size`` modify the next operation, as in bwrap.  :func:`filesystem`
turns the list into Sandbox keywords.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ._fsops import DEFAULT_MODES, FD_KINDS, MAX_MODE, FsOp
from ._hold import read_to_end

#: bwrap's limit on --size (half the address space)
_MAX_SIZE = (1 << 63) - 1
#: the options --perms may precede: those that create a file or directory
_PERMS_TAKERS = ("--dir", "--file", "--bind-data", "--ro-bind-data", "--tmpfs")
_MODIFIERS = ("--perms", "--size")
#: the overlay options -> how many --overlay-src they need at least
_OVERLAYS = {"--overlay": 1, "--tmp-overlay": 1, "--ro-overlay": 2}
_OVERLAY_SRC_FOLLOWED = (
    "--overlay-src must be followed by another --overlay-src or one of --overlay, "
    "--tmp-overlay, or --ro-overlay"
)


class _Op(argparse.Action):
    """A filesystem option: one FsOp appended to ``fs_ops`` (and to the option's own list)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        kind = self.dest
        words = [values] if isinstance(values, str) else list(values)
        mode, size = _take(namespace, "_next_perms"), _take(namespace, "_next_size")
        if kind in ("file", "bind_data", "ro_bind_data"):
            data = _read_fd(parser, option_string or kind, words[0], words[1])
            op = FsOp(kind, words[1], mode=mode, data=data)
        elif kind == "chmod":
            op = FsOp(kind, words[1], mode=_octal(parser, "--chmod", words[0]))
        elif kind in FD_KINDS:
            op = FsOp(kind, words[1], fd=_fd_number(parser, words[0]))
        elif len(words) == 2:
            op = FsOp(kind, words[1], words[0])
        else:
            op = FsOp(kind, words[0], mode=mode, size=size)
        namespace.fs_ops = [*getattr(namespace, "fs_ops", []), op]
        if kind in ("proc", "dev"):
            setattr(namespace, kind, values)
        elif kind in ("bind", "ro_bind", "dev_bind", "symlink", "tmpfs"):
            setattr(namespace, kind, [*(getattr(namespace, kind, None) or []), values])


class _OverlaySrc(argparse.Action):
    """``--overlay-src SRC``: a lower directory of the next overlay option."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        namespace._overlay_srcs = [*(getattr(namespace, "_overlay_srcs", None) or []), values]


class _Overlay(argparse.Action):
    """``--overlay``, ``--tmp-overlay``, ``--ro-overlay``: over the --overlay-src before it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        lower = tuple(_take(namespace, "_overlay_srcs") or ())
        if self.dest == "overlay":
            upper, workdir, dest = values
            op = FsOp("overlay", dest, upper, lower=lower, workdir=workdir)
        else:
            op = FsOp(self.dest, values, lower=lower)
        namespace.fs_ops = [*getattr(namespace, "fs_ops", []), op]


class _Modifier(argparse.Action):
    """``--perms OCTAL`` and ``--size BYTES``: kept for the next operation."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string == "--perms":
            namespace._next_perms = _octal(parser, "--perms", values)
        else:
            namespace._next_size = _size(parser, values)


def _take(namespace: argparse.Namespace, name: str) -> Any:
    value = getattr(namespace, name, None)
    setattr(namespace, name, None)
    return value


def _octal(parser: argparse.ArgumentParser, option: str, text: str) -> int:
    """bwrap's octal argument: digits 0-7 only, at most 07777."""
    if not text or any(c not in "01234567" for c in text) or int(text, 8) > MAX_MODE:
        parser.error(f"{option} takes an octal argument <= 07777")
    return int(text, 8)


def _size(parser: argparse.ArgumentParser, text: str) -> int:
    """bwrap's --size: a non-zero number of bytes, in C's notation (0x hex, 0 octal)."""
    digits = text.lower()
    base = 16 if digits.startswith("0x") else 8 if digits.startswith("0") else 10
    try:
        size = int(digits[2:] if base == 16 else digits, base)
    except ValueError:
        size = 0
    if size <= 0 or digits[:1] in ("+", "-") or "_" in digits:
        parser.error("--size takes a non-zero number of bytes")
    if size > _MAX_SIZE:
        parser.error(f"--size (for tmpfs) is limited to {_MAX_SIZE}")
    return size


def _fd_number(parser: argparse.ArgumentParser, text: str) -> int:
    """A descriptor's number: decimal digits only (bwrap's strtol also takes a sign, spaces)."""
    if not (text.isascii() and text.isdigit()):
        parser.error(f"Invalid fd: {text}")
    return int(text)


def _read_fd(parser: argparse.ArgumentParser, option: str, text: str, dest: str) -> bytes:
    """All of file descriptor ``text``, which is then closed (as bwrap does) unless it is 0-2."""
    fd = _fd_number(parser, text)
    try:
        data = read_to_end(fd)
    except OSError as exc:
        parser.error(f"Can't read data for {option} {dest} from fd {fd}: {exc.strerror}")
    if fd > 2:
        # The standard ones stay open (read to their end): closing one would let the
        # next descriptor opened take its number and reach the command in its place.
        os.close(fd)
    return data


def check_modifiers(
    args: Sequence[str], arity: Callable[[str], int], error: Callable[[str], NoReturn]
) -> None:
    """bwrap's rules: --perms (--size) applies to the option right after it (or after both);
    --overlay-src options go right before the overlay option that reads them, which
    needs at least one of them (--ro-overlay two).
    """
    pending: set[str] = set()
    sources = 0
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-"):
            break
        if arg in _OVERLAYS and sources < _OVERLAYS[arg]:
            plural = "one --overlay-src" if _OVERLAYS[arg] == 1 else "two --overlay-src"
            error(f"{arg} requires at least {plural}")
        if arg in _MODIFIERS:
            if arg in pending:
                error(f"{arg} given twice for the same action")
            pending.add(arg)
        else:
            if "--perms" in pending and arg not in _PERMS_TAKERS:
                error("--perms must be followed by an option that creates a file")
            if "--size" in pending and arg != "--tmpfs":
                error("--size must be followed by --tmpfs")
            pending.clear()
        if arg == "--overlay-src":
            sources += 1
        elif sources and arg not in _OVERLAYS:
            error(_OVERLAY_SRC_FOLLOWED)
        else:
            sources = 0
        i += 1 + arity(arg)
    if sources:
        error(_OVERLAY_SRC_FOLLOWED)


def add_filesystem_options(fs: Any) -> None:
    """The filesystem options of ``pyclone run``, in bwrap's spelling."""
    fs.set_defaults(fs_ops=[], bind=[], ro_bind=[], dev_bind=[], symlink=[], tmpfs=[])
    fs.set_defaults(proc=None, dev=None)
    for option, meta, text in (
        ("--bind", ("SRC", "DEST"), "bind mount host SRC on DEST (nosuid, nodev)"),
        ("--bind-try", ("SRC", "DEST"), "the same, or nothing if SRC does not exist"),
        ("--ro-bind", ("SRC", "DEST"), "bind mount host SRC read-only on DEST"),
        ("--ro-bind-try", ("SRC", "DEST"), "the same, or nothing if SRC does not exist"),
        ("--dev-bind", ("SRC", "DEST"), "bind mount host SRC on DEST, allowing device access"),
        ("--dev-bind-try", ("SRC", "DEST"), "the same, or nothing if SRC does not exist"),
        (
            "--bind-fd",
            ("FD", "DEST"),
            "bind mount the directory (or file) open on FD on DEST; FD (if above 2) is then closed",
        ),
        ("--ro-bind-fd", ("FD", "DEST"), "the same, read-only"),
        ("--symlink", ("SRC", "DEST"), "create a symlink at DEST pointing to SRC"),
        ("--tmpfs", "DEST", "mount an empty tmpfs on DEST (mode 0755 unless --perms)"),
        ("--proc", "DEST", "mount a new procfs on DEST"),
        ("--dev", "DEST", "mount a minimal /dev on DEST"),
        (
            "--mqueue",
            "DEST",
            "mount an mqueue filesystem on DEST (the queues of the new ipc namespace "
            "with --unshare-ipc, else the caller's)",
        ),
        ("--dir", "DEST", "create a directory at DEST (mode 0755 unless --perms)"),
        ("--file", ("FD", "DEST"), "copy from FD to a file at DEST (mode 0666 unless --perms)"),
        ("--bind-data", ("FD", "DEST"), "copy from FD to a file bind mounted on DEST (0600)"),
        ("--ro-bind-data", ("FD", "DEST"), "the same, read-only"),
        ("--chmod", ("OCTAL", "PATH"), "change the mode of PATH to OCTAL"),
        ("--remount-ro", "DEST", "remount the mount on DEST read-only (not its submounts)"),
    ):
        nargs = 2 if isinstance(meta, tuple) else None
        fs.add_argument(option, action=_Op, nargs=nargs, metavar=meta, help=text)
    fs.add_argument(
        "--perms",
        action=_Modifier,
        metavar="OCTAL",
        help="the mode of what the next --dir, --file, --bind-data, --ro-bind-data "
        "or --tmpfs creates",
    )
    fs.add_argument("--size", action=_Modifier, metavar="BYTES", help="size of the next --tmpfs")
    fs.add_argument(
        "--overlay-src",
        action=_OverlaySrc,
        metavar="SRC",
        help="read files from host directory SRC in the overlay option right after "
        "(repeatable: the first is the lowest layer)",
    )
    fs.add_argument(
        "--overlay",
        action=_Overlay,
        nargs=3,
        metavar=("RWSRC", "WORKDIR", "DEST"),
        help="mount overlayfs on DEST, writing to host directory RWSRC (WORKDIR: an empty "
        "directory on the same file system)",
    )
    fs.add_argument(
        "--tmp-overlay",
        action=_Overlay,
        metavar="DEST",
        help="mount overlayfs on DEST, writing to a tmpfs no one else sees",
    )
    fs.add_argument(
        "--ro-overlay",
        action=_Overlay,
        metavar="DEST",
        help="mount overlayfs read-only on DEST (at least two --overlay-src)",
    )


def filesystem(args: argparse.Namespace) -> dict[str, Any]:
    """The Sandbox keywords of the filesystem options.

    The keyword mount options (applied parents first) when that is the same
    as the command line's order: every destination distinct, none below a
    later one, and nothing they cannot say; ``ops`` in command-line order
    otherwise.
    """
    ops: list[FsOp] = list(args.fs_ops)
    simple = ("bind", "ro_bind", "dev_bind", "symlink", "tmpfs", "proc", "dev")
    depths = [os.path.normpath(op.dest).rstrip("/").count("/") for op in ops]
    plain = all(
        op.kind in simple
        and (op.kind != "tmpfs" or (op.mode in (None, DEFAULT_MODES["tmpfs"]) and not op.size))
        for op in ops
    )
    distinct = len({os.path.normpath(op.dest) for op in ops}) == len(ops)
    ordered = depths == sorted(depths)
    once = all(sum(op.kind == kind for op in ops) <= 1 for kind in ("proc", "dev"))
    if not (plain and distinct and ordered and once):
        return {"ops": ops}
    return {
        "bind": [tuple(p) for p in args.bind],
        "ro_bind": [tuple(p) for p in args.ro_bind],
        "dev_bind": [tuple(p) for p in args.dev_bind],
        "symlink": [tuple(p) for p in args.symlink],
        "tmpfs": args.tmpfs,
        "proc": args.proc,
        "dev": args.dev,
    }
