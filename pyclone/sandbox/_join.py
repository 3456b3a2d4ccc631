"""Joining given namespaces (``userns``, ``pidns``) instead of creating them, in the child.

The caller never joins them itself (setns into a user namespace cannot be undone and
needs a single-threaded process): the child is cloned without the namespaces, joins
the user namespace first so that those it then creates belong to it, and enters a
joined (or, under one, a new) pid namespace through a fork, since setns and unshare
of a pid namespace only move the children.  Each process left behind by such a fork
relays: it waits for the one it forked, forwards signals to it and exits with its
status, and the forked one dies with it.
"""

from __future__ import annotations

import os
import signal

from .. import _pyclone
from ..flags import CloneFlag
from ._description import Description
from ._init import fork_init
from ._status import StepReporter


def joins(sb: Description) -> bool:
    """Does the sandbox join a namespace it was given?"""
    return sb.userns is not None or sb.pidns is not None


def clone_flags(sb: Description) -> CloneFlag:
    """The namespaces the clone itself creates; the child makes the others after joining."""
    if sb.userns is not None:
        return CloneFlag(0)
    if sb.pidns is not None:
        return sb._flags & ~CloneFlag.NEWPID
    return sb._flags


def join_namespaces(reporter: StepReporter, sb: Description, cap_last: int) -> None:
    """In the child, first: join the given namespaces and make those ``clone_flags`` left."""
    if sb.userns is not None:
        with reporter.step("userns"):
            _pyclone.setns(sb.userns, CloneFlag.NEWUSER)
        rest = sb._flags & ~CloneFlag.NEWPID
        if rest:
            with reporter.step("unshare"):
                _pyclone.unshare(rest)
    if sb.pidns is not None:
        with reporter.step("pidns"):
            _pyclone.setns(sb.pidns, CloneFlag.NEWPID)
        _relay(reporter, sb, cap_last)
    if sb._flags & CloneFlag.NEWPID:
        with reporter.step("unshare pid"):
            _pyclone.unshare(CloneFlag.NEWPID)
        _relay(reporter, sb, cap_last)  # the forked one is pid 1 of the new namespace


def switch_userns(reporter: StepReporter, sb: Description) -> None:
    """After the mounts: move into ``userns2``, as bwrap's --userns2 (the setup is done)."""
    if sb.userns2 is not None:
        with reporter.step("userns2"):
            _pyclone.setns(sb.userns2, CloneFlag.NEWUSER)


def _relay(reporter: StepReporter, sb: Description, cap_last: int) -> None:
    """Fork; this process relays for the child, which continues the setup."""
    if sb.die_with_parent:
        with reporter.step("die_with_parent"):
            _pyclone.prctl(_pyclone.PR_SET_PDEATHSIG, signal.SIGKILL)
    fork_init(reporter, cap_last, {0, 1, 2})
    with reporter.step("relay"):
        relay = os.getppid()
        _pyclone.prctl(_pyclone.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != relay:  # it died before the prctl took effect
            os._exit(128 + signal.SIGKILL)
