"""The capabilities a sandbox keeps: bwrap's rule, computed in the parent, applied in the child.

An unprivileged caller keeps none (only those ``cap_add`` names); a root
caller keeps its effective set (less ``cap_drop``, plus ``cap_add``).  Either
way nothing outside the caller's bounding set survives: a new user namespace
hands its creator every capability, including those the host had taken away.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from .. import _pyclone
from ..flags import CloneFlag
from ._description import Description
from ._names import CAPABILITIES

# PR_CAP_AMBIENT's RAISE operation (include/uapi/linux/prctl.h); the C module
# exports the other ambient operations but not this one.
_PR_CAP_AMBIENT_RAISE = 2
_CAP_SETPCAP = CAPABILITIES.index("setpcap")


def host_bounding_set() -> int:
    """The calling thread's bounding set (its ``CapBnd``), read in the parent.

    /proc/thread-self: the bounding set is per thread, and capget(2) in
    :func:`kept_caps` reads this thread's too.
    """
    with open("/proc/thread-self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    raise OSError(errno.ENOENT, "no CapBnd line", "/proc/thread-self/status")


def _mask(names: Iterable[str], last: int) -> int:
    if "ALL" in names:
        return (1 << (last + 1)) - 1
    mask = 0
    for name in names:
        number = CAPABILITIES.index(name)
        if number <= last:
            mask |= 1 << number
    return mask


def kept_caps(sb: Description, last: int) -> int:
    """The capability mask the sandboxed program holds (computed in the parent, before clone).

    A root caller starts from its effective set (unless it switches to
    another uid without a user namespace), anyone else from nothing;
    ``cap_drop`` is taken away, then ``cap_add`` given.  The result never
    holds what the caller's bounding set lacks, except for an unprivileged
    caller's new user namespace, whose capabilities the kernel gives it anyway.
    """
    base = _pyclone.capget()[0] if os.geteuid() == 0 else 0
    if not sb._flags & CloneFlag.NEWUSER and sb.uid not in (None, 0):
        base = 0  # leaving uid 0 in the caller's namespace clears them (setresuid(2))
    kept = base & ~_mask(sb.cap_drop, last)
    kept |= _mask(sb.cap_add, last)
    every = (1 << (last + 1)) - 1
    if os.geteuid() != 0 and sb._flags & CloneFlag.NEWUSER:
        # The kernel gives whoever creates a user namespace every capability
        # in it, whatever its own bounding set (unshare -r does as much), and
        # they act only on what that namespace owns: cutting them to the
        # caller's bounding set takes nothing from it, only breaks nesting.
        return kept & every
    return kept & host_bounding_set() & every


def sets_inheritable(sb: Description) -> bool:
    """Do the inheritable and ambient sets carry the kept ones (so they survive execve)?

    As in bwrap: always for an unprivileged caller, whose program usually
    runs as a non-zero uid (whose execve keeps only ambient capabilities);
    for root only when ``cap_add``/``cap_drop`` was given.
    """
    return os.geteuid() != 0 or bool(sb.cap_add or sb.cap_drop)


def bound_caps(kept: int, last: int) -> None:
    """In the child, before the ids change: cut the bounding set to ``kept``.

    It must go first: PR_CAPBSET_DROP needs CAP_SETPCAP, which leaving uid 0
    (and the capset of :func:`set_caps`) takes away, and a bounding set left
    full would let a setuid-root program regain everything.
    """
    p = _pyclone
    can_bound = bool(p.capget()[0] & (1 << _CAP_SETPCAP))
    for cap in range(last + 1):
        if kept & (1 << cap):
            continue
        try:
            p.prctl(p.PR_CAPBSET_DROP, cap)
        except OSError as exc:
            # Without CAP_SETPCAP (a caller with no capabilities and no user
            # namespace) the bounding set cannot shrink; it then holds no
            # more than the caller's own.
            if exc.errno != errno.EPERM or can_bound:
                raise


def set_caps(kept: int, inheritable: bool, last: int) -> None:
    """In the child, the last privileged step: every other capability set to ``kept``.

    The ambient set is cleared, effective and permitted (and inheritable)
    become ``kept`` (capset), then the kept ones are raised in the ambient
    set when ``inheritable``, so that they survive execve.
    """
    p = _pyclone
    p.prctl(p.PR_CAP_AMBIENT, p.PR_CAP_AMBIENT_CLEAR_ALL)
    p.capset(kept, kept, kept if inheritable else 0)
    if inheritable:
        for cap in range(last + 1):
            if kept & (1 << cap):
                p.prctl(p.PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, cap)


def drop_all(last: int) -> None:
    """Empty every capability set (the sandbox's init: it needs none to reap and forward)."""
    bound_caps(0, last)
    set_caps(0, False, last)
