"""User namespaces inside the sandbox: ``disable_userns`` and ``assert_userns_disabled``.

As bwrap does, in the child once its mounts are made: ``user.max_user_namespaces``
of the sandbox's user namespace is set to 1, then the sandbox moves into a nested
user namespace, the one the limit allows, mapping its own uid and gid to
themselves.  From there it cannot raise the limit back (the setting belongs to the
namespace above, where it holds no capability), and every further user namespace
fails with ENOSPC.  The check tries to create one and fails the setup if that works.

The host's ``/proc`` is opened before the mounts: the sandbox's own may not be
mounted, or may be another pid namespace's.
"""

from __future__ import annotations

import os

from .. import _pyclone
from ..flags import CloneFlag
from ._description import Description
from ._status import StepReporter

#: bwrap's message when a user namespace could still be created.
NOT_DISABLED = "creation of new user namespaces was not disabled as requested"


def open_proc(reporter: StepReporter, sb: Description) -> int | None:
    """The host's ``/proc`` (an ``O_PATH`` descriptor) when it will be needed after the mounts."""
    if not sb.disable_userns:
        return None
    with reporter.step("open /proc"):
        return os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def restrict_userns(reporter: StepReporter, sb: Description, proc_fd: int | None) -> None:
    """After the mounts: disable further user namespaces and/or check that they are."""
    if sb.disable_userns:
        assert proc_fd is not None
        _disable(reporter, proc_fd)
    if sb.disable_userns or sb.assert_userns_disabled:
        try:
            _pyclone.unshare(CloneFlag.NEWUSER)
        except OSError:
            return  # refused, whatever the reason: as bwrap, that is what was asked for
        reporter.fail("assert_userns_disabled", None, NOT_DISABLED, None, None)


def _disable(reporter: StepReporter, proc_fd: int) -> None:
    try:
        with reporter.step("open max_user_namespaces"):
            fd = os.open("sys/user/max_user_namespaces", os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc_fd)
        try:
            with reporter.step("max_user_namespaces"):
                os.write(fd, b"1")
        finally:
            os.close(fd)
        uid, gid = os.geteuid(), os.getegid()
        with reporter.step("unshare user ns"):
            _pyclone.unshare(CloneFlag.NEWUSER)
        # setgroups is "deny" already: a nested namespace inherits it
        _write(reporter, proc_fd, "uid_map", f"{uid} {uid} 1\n")
        _write(reporter, proc_fd, "gid_map", f"{gid} {gid} 1\n")
    finally:
        os.close(proc_fd)


def _write(reporter: StepReporter, proc_fd: int, name: str, text: str) -> None:
    with reporter.step(name):
        fd = os.open(f"self/{name}", os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc_fd)
        try:
            os.write(fd, text.encode())  # one write(2) of the whole map, as the kernel takes it
        finally:
            os.close(fd)
