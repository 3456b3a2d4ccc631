"""pyclone/_procfs.py: mountinfo's escaped fields, read back from the real kernel."""

from __future__ import annotations

import os
from pathlib import Path

from pyclone import _pyclone, spawn_task
from pyclone._procfs import unescape_mountinfo, write_file

#: A directory name with each character mountinfo escapes (space, tab, newline,
#: backslash) and one it does not (a non-ASCII letter, left as UTF-8).
AWKWARD = "a b\tc\nd\\e é"


def _mount_points_after_mounting(where: str) -> list[str]:
    """In a new mount namespace: mount a tmpfs on ``where``, return mountinfo's raw points."""
    _pyclone.mount("tmpfs", where, "tmpfs", 0, "size=64k")
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line.split(" ")[4] for line in f]


def test_unescape_gives_back_the_path_the_kernel_escaped(tmp_path: Path) -> None:
    where = str(tmp_path / AWKWARD)
    os.mkdir(where)
    task = spawn_task(_mount_points_after_mounting, (where,), new={"user", "mnt"})
    raw = task.result(timeout=60)
    escaped = [point for point in raw if "\\" in point and point.startswith(str(tmp_path))]
    assert len(escaped) == 1, raw  # the kernel escaped it: the name is not there verbatim
    assert where not in raw
    assert unescape_mountinfo(escaped[0]) == where


def test_a_field_without_escapes_is_returned_as_it_is() -> None:
    assert unescape_mountinfo("/usr/lib") == "/usr/lib"


def test_write_file_names_the_file_and_keeps_the_errno(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    try:
        write_file(missing, "1\n")
    except FileNotFoundError as exc:
        assert exc.errno == 2
    else:
        raise AssertionError("wrote to a file that does not exist")
    directory = str(tmp_path)
    try:
        write_file(directory, "1\n")  # a directory cannot be opened for writing: EISDIR
    except IsADirectoryError as exc:
        assert directory in str(exc)
    else:
        raise AssertionError("wrote to a directory")
