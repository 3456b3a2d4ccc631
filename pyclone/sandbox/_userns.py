"""The parent's part of a new user namespace: writing the child's uid and gid maps.

The child waits on the launch gate until these are written, so its first step
already runs with the ids inside.  ``setgroups`` is set to ``deny`` before the
gid map, as the kernel requires of an unprivileged writer.
"""

from __future__ import annotations

import os

from ._checks import IdMap
from ._description import Description
from ._status import parent_step


def write_maps(sb: Description, pid: int) -> None:
    """The explicit maps, or the caller's euid/egid as the ids inside (default: the same ids)."""
    euid, egid = os.geteuid(), os.getegid()
    uid_map = sb.uid_map or ((euid if sb.uid is None else sb.uid, euid, 1),)
    gid_map = sb.gid_map or ((egid if sb.gid is None else sb.gid, egid, 1),)
    _write_proc(pid, "uid_map", uid_map)
    with parent_step("setgroups"):
        _write_file(f"/proc/{pid}/setgroups", b"deny")
    _write_proc(pid, "gid_map", gid_map)


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)  # these files take one write(2) of the whole text
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from exc
    finally:
        os.close(fd)


def _write_proc(pid: int, name: str, lines: IdMap) -> None:
    text = "".join(f"{a} {b} {c}\n" for a, b, c in lines)
    with parent_step(name):
        _write_file(f"/proc/{pid}/{name}", text.encode())
