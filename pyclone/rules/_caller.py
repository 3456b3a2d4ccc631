"""The caller's privilege state, as far as the kernel's clone checks read it.

:class:`CallerState` is a snapshot (or an assumed state); :class:`_LiveCaller`
reads the calling thread's state from /proc lazily, one property at a time,
so a request that the flags alone decide costs no /proc reads.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

_CAP_SYS_ADMIN = 21
_CAP_SYS_RESOURCE = 24


@dataclass(frozen=True)
class CallerState:
    """What the kernel's checks read about the calling thread besides the flags.

    ``sys_admin``: CAP_SYS_ADMIN in its own user namespace.  ``real_root``:
    real uid 0 of the initial user namespace (the kernel's INIT_USER, exempt
    from RLIMIT_NPROC).  ``sys_resource``: CAP_SYS_RESOURCE.
    ``pid_ns_init``: pid 1 of its pid namespace (init may not use
    CLONE_PARENT).  ``pid_ns_for_children_differs``: after
    ``unshare(CLONE_NEWPID)`` or ``setns()`` to a pid namespace its children
    go elsewhere (no CLONE_THREAD then).  ``chrooted``: its root is not its
    mount namespace's root (no CLONE_NEWUSER); read from mountinfo, where a
    chroot into a directory hides the namespace's root mount, and from
    init's root where that is readable.  ``ids_mapped``: its
    effective uid and gid are mapped in its user namespace (needed to
    create a user namespace).
    """

    sys_admin: bool
    real_root: bool
    sys_resource: bool
    pid_ns_init: bool = False
    pid_ns_for_children_differs: bool = False
    chrooted: bool = False
    ids_mapped: bool = True

    @classmethod
    def privileged(cls) -> CallerState:
        """A root caller with every capability, in an ordinary state."""
        return cls(sys_admin=True, real_root=True, sys_resource=True)

    @classmethod
    def unprivileged(cls) -> CallerState:
        """A non-root caller without capabilities, in an ordinary state."""
        return cls(sys_admin=False, real_root=False, sys_resource=False)

    @classmethod
    def current(cls) -> CallerState:
        """Read the calling thread's state from /proc.

        Where something cannot be read (no /proc, /proc/1 hidden from an
        unprivileged caller) the ordinary state is assumed: capabilities
        absent, not chrooted, ids mapped.
        """
        caps = _read_capeff()
        return cls(
            sys_admin=bool(caps >> _CAP_SYS_ADMIN & 1),
            real_root=os.getuid() == 0 and _initial_user_ns(),
            sys_resource=bool(caps >> _CAP_SYS_RESOURCE & 1),
            pid_ns_init=os.getpid() == 1,
            pid_ns_for_children_differs=_pid_ns_for_children_differs(),
            chrooted=_chrooted(),
            ids_mapped=_ids_mapped(),
        )

    def describe(self) -> str:
        """A short account, e.g. ``"CAP_SYS_ADMIN, real root"``."""
        parts = ["CAP_SYS_ADMIN" if self.sys_admin else "no CAP_SYS_ADMIN"]
        if self.real_root:
            parts.append("real root")
        if self.pid_ns_init:
            parts.append("init of its pid namespace")
        if self.pid_ns_for_children_differs:
            parts.append("children go to another pid namespace")
        if self.chrooted:
            parts.append("chrooted")
        if not self.ids_mapped:
            parts.append("ids unmapped in its user namespace")
        return ", ".join(parts)


class _LiveCaller:
    """The calling thread's state, read from /proc only as far as a rule asks.

    Most requests are decided by the flags alone; reading the whole
    :class:`CallerState` costs a few /proc reads each time.
    """

    @functools.cached_property
    def sys_admin(self) -> bool:
        return bool(_read_capeff() >> _CAP_SYS_ADMIN & 1)

    @functools.cached_property
    def pid_ns_init(self) -> bool:
        return os.getpid() == 1

    @functools.cached_property
    def pid_ns_for_children_differs(self) -> bool:
        return _pid_ns_for_children_differs()

    @functools.cached_property
    def chrooted(self) -> bool:
        return _chrooted()

    @functools.cached_property
    def ids_mapped(self) -> bool:
        return _ids_mapped()

    def describe(self) -> str:
        return CallerState.current().describe()


def _read_capeff() -> int:
    try:
        with open("/proc/thread-self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _read_map(path: str) -> list[tuple[int, int, int]]:
    try:
        with open(path) as f:
            return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in f)]
    except (OSError, ValueError):
        return []


def _initial_user_ns() -> bool:
    return _read_map("/proc/thread-self/uid_map") == [(0, 0, 4294967295)]


def _ids_mapped() -> bool:
    uid_map = _read_map("/proc/thread-self/uid_map")
    gid_map = _read_map("/proc/thread-self/gid_map")
    if not uid_map and not gid_map and not os.path.exists("/proc/thread-self/uid_map"):
        return True  # no /proc: assume the ordinary case
    euid, egid = os.geteuid(), os.getegid()
    return any(lo <= euid < lo + n for lo, _, n in uid_map) and any(
        lo <= egid < lo + n for lo, _, n in gid_map
    )


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _pid_ns_for_children_differs() -> bool:
    active = _ns_id("/proc/thread-self/ns/pid")
    if active is None:
        return False  # no /proc: assume the ordinary case
    # The link cannot be opened while the new namespace has no init yet.
    return _ns_id("/proc/thread-self/ns/pid_for_children") != active


def _chrooted() -> bool:
    # The kernel asks whether the root is its mount namespace's root.  A
    # chroot into a directory hides that mount from mountinfo (its mount
    # point lies outside the new root): no mount is shown at "/".
    try:
        with open("/proc/thread-self/mountinfo") as f:
            points = [line.split()[4] for line in f if len(line.split()) > 4]
    except OSError:
        return False  # no /proc: assume the ordinary case
    if "/" not in points:
        return True
    # Otherwise compare with init's root, when init shares our mount
    # namespace and its root is readable (not for an unprivileged caller).
    mnt = _ns_id("/proc/thread-self/ns/mnt")
    if mnt is None or _ns_id("/proc/1/ns/mnt") != mnt:
        return False
    init_root = _ns_id("/proc/1/root")
    return init_root is not None and _ns_id("/") != init_root
