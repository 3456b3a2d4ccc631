"""The kernel's files: writing control files (/proc, /sys/fs/cgroup) with errors that
name them, and reading mountinfo's escaped fields."""

from __future__ import annotations

import os


def write_file(path: str, text: str) -> None:
    """Write ``text`` to an existing control file in one write(2).

    An OSError keeps the kernel's errno and says what was written where.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    except OSError as exc:
        raise OSError(exc.errno, f"writing {text.strip()!r} to {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def unescape_mountinfo(field: str) -> str:
    """Undo the octal escapes of a /proc/PID/mountinfo field (``\\040`` for a space)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode()
