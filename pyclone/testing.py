"""Safety for tests that create tasks with any flags: a subreaper, blocked signals, a health check.

A property test over clone flag combinations creates children with random
exit signals, new pid namespaces whose orphans need a reaper, and flags that
can change the creator's signal handlers, descriptors or working directory.
:func:`guard` protects the test process for the duration of a block and
checks afterwards that the process is as it was; the pytest fixture
``clone_guard`` (from the ``pyclone`` pytest plugin) wraps a test in it.
pyclone itself never imports this module, and it needs no test framework.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from . import _pyclone

__all__ = ["Guard", "Health", "HealthError", "children", "guard", "reap_children"]

# prctl(2) options: _pyclone exports only the ones the sandbox uses.
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

#: glibc's internal signals 32 and 33 (SIGCANCEL, SIGSETXID): glibc installs
#: handlers for them when the process starts its first thread, so a mask or
#: disposition that differs only there is no change the test made.
_GLIBC_INTERNAL = (1 << 31) | (1 << 32)

#: How long the checks wait for joined threads to leave and killed strays to die.
SETTLE = 5.0


def _signal_fields() -> tuple[tuple[str, str], ...]:
    """SigBlk, SigIgn and SigCgt of the calling thread, as hex masks."""
    found = {}
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("SigBlk", "SigIgn", "SigCgt"):
                found[key] = f"{int(value, 16) & ~_GLIBC_INTERNAL:016x}"
    return tuple(sorted(found.items()))


def children() -> frozenset[int]:
    """The pids of this process's children (of every thread), from ``/proc``."""
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.update(int(pid) for pid in f.read().split())
        except OSError:
            continue  # the thread has just ended
    return frozenset(pids)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] == "Z"


def _open_fds() -> frozenset[int]:
    """This process's open descriptors, without the one that listed them."""
    names = os.listdir("/proc/self/fd")
    # the listing's own descriptor is closed by now: its link no longer resolves
    return frozenset(int(n) for n in names if os.path.lexists(f"/proc/self/fd/{n}"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _subreaper() -> bool:
    out = ctypes.c_int(0)
    _pyclone.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.addressof(out))
    return bool(out.value)


@dataclass(frozen=True)
class Health:
    """What creating and reaping tasks must leave unchanged in the creating process."""

    fds: frozenset[int]
    threads: int
    python_threads: int
    zombies: frozenset[int]
    signals: tuple[tuple[str, str], ...]
    cwd: str
    umask: int
    tstate: int

    @classmethod
    def take(cls) -> Health:
        """Snapshot this process (and the calling thread's signal state)."""
        kids = children()
        return cls(
            fds=_open_fds(),
            threads=len(os.listdir("/proc/self/task")),
            python_threads=threading.active_count(),
            zombies=frozenset(pid for pid in kids if _is_zombie(pid)),
            signals=_signal_fields(),
            cwd=os.getcwd(),
            umask=_umask(),
            tstate=_pyclone._tstate_id(),
        )

    def diff(self, after: Health) -> list[str]:
        """One readable line per difference from ``after`` (empty when healthy).

        Fewer threads than before is fine (one of an earlier test was still
        leaving); so are zombies that were there before.
        """
        lines = []
        if after.fds != self.fds:
            leaked, closed = sorted(after.fds - self.fds), sorted(self.fds - after.fds)
            lines.append(f"fds: leaked {leaked or 'none'}, closed {closed or 'none'}")
        if after.threads > self.threads:
            lines.append(f"threads: {self.threads} -> {after.threads} (left running)")
        if after.python_threads != self.python_threads:
            lines.append(f"python threads: {self.python_threads} -> {after.python_threads}")
        if after.zombies - self.zombies:
            lines.append(f"zombie children left behind: {sorted(after.zombies - self.zombies)}")
        for (key, old), (_, new) in zip(self.signals, after.signals, strict=True):
            if old != new:
                lines.append(f"{key}: {old} -> {new} ({_names(int(old, 16) ^ int(new, 16))})")
        for name in ("cwd", "umask", "tstate"):
            old_v, new_v = getattr(self, name), getattr(after, name)
            if old_v != new_v:
                shown = (oct(old_v), oct(new_v)) if name == "umask" else (old_v, new_v)
                lines.append(f"{name}: {shown[0]!r} -> {shown[1]!r}")
        return lines


def _names(mask: int) -> str:
    """The signals of a /proc mask (bit n-1 is signal n), by name."""
    out = []
    for n in range(1, 65):
        if mask >> (n - 1) & 1:
            try:
                out.append(signal.Signals(n).name)
            except ValueError:
                out.append(str(n))
    return ", ".join(out)


class HealthError(AssertionError):
    """The guarded block changed the process: the message lists every difference."""


@dataclass
class Guard:
    """What :func:`guard` saw: the snapshot before, and what it cleaned up after."""

    before: Health
    #: Children alive when the block began: left alone, never reaped.
    kept: frozenset[int]
    #: Signals that arrived (blocked) during the block and were discarded.
    drained: list[int] = field(default_factory=list)
    #: Children (and reparented descendants) the guard reaped after the block.
    strays: list[int] = field(default_factory=list)


def reap_children(keep: frozenset[int] = frozenset(), timeout: float = SETTLE) -> list[int]:
    """Kill (SIGKILL) and reap every child not in ``keep``; return their pids.

    Waits with ``__WALL``, so clone children (exit signal other than
    SIGCHLD) are reaped too; a child that does not die within ``timeout``
    raises :class:`HealthError`.
    """
    reaped: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        strays = children() - keep
        if not strays:
            return reaped
        for pid in strays:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in strays:
            if _wait_one(pid, deadline):
                reaped.append(pid)
        if time.monotonic() > deadline:
            raise HealthError(f"children {sorted(children() - keep)} did not die in {timeout} s")


def _wait_one(pid: int, deadline: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False  # already reaped (by its Task, say)
    try:
        select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        try:
            return os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG | _pyclone.WALL) is not None
        except ChildProcessError:
            return False  # not our child any more, or reaped meanwhile
    finally:
        os.close(fd)


def _drain(pending: set[int]) -> list[int]:
    """Take the blocked signals that are pending off the queue, so restoring the mask is safe."""
    got = []
    for signum in sorted(pending):
        while signal.sigtimedwait([signum], 0) is not None:
            got.append(signum)
            if signum < signal.SIGRTMIN:
                break  # standard signals do not queue: one is all there is
    return got


@contextmanager
def guard(
    *,
    subreaper: bool = True,
    block_signals: bool = True,
    strays: str = "fail",
    check: bool = True,
) -> Iterator[Guard]:
    """Protect the calling process while a block creates tasks; check its health after.

    * ``subreaper``: the process is a child subreaper
      (``PR_SET_CHILD_SUBREAPER``) for the block, so the orphans of the
      tasks it creates (a new pid namespace's descendants, a task's own
      children) are reparented to it and reaped here, not left to init.
    * ``block_signals``: every signal that can be blocked is blocked in the
      calling thread, so a random exit signal (SIGHUP, SIGUSR1, SIGSEGV...)
      sent when a child ends cannot end or interrupt the test; those that
      arrived are discarded (listed in :attr:`Guard.drained`) before the mask
      is restored.  SIGKILL and SIGSTOP cannot be blocked: draw exit signals
      with ``pyclone.strategies.exit_signals(blockable=True)``.  Other
      threads keep their masks.
    * ``strays``: children left when the block ends are killed and reaped
      (:attr:`Guard.strays`); with ``"fail"`` (the default) that is also a
      health failure, with ``"reap"`` it is not (for tests whose tasks leave
      orphans on purpose).
    * ``check``: compare :class:`Health` before and after (descriptors,
      threads, zombies, signal mask and dispositions, cwd, umask, thread
      state) and raise :class:`HealthError` listing each difference.

    CLONE_PARENT tasks created by the guarded process itself are its
    parent's children, out of the guard's reach: create them from a forked
    worker inside the guard.
    """
    if strays not in ("fail", "reap"):
        raise ValueError(f"strays must be 'fail' or 'reap', not {strays!r}")
    before = Health.take()
    state = Guard(before, kept=children())
    was_subreaper = _subreaper()
    if subreaper and not was_subreaper:
        _pyclone.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    old_mask = (
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals()) if block_signals else None
    )
    failed = True
    try:
        yield state
        failed = False
    finally:
        state.strays = reap_children(state.kept)
        if old_mask is not None:
            state.drained = _drain(signal.sigpending() - old_mask)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if subreaper and not was_subreaper:
            _pyclone.prctl(_PR_SET_CHILD_SUBREAPER, 0)
    if check and not failed:
        problems = _settled_diff(before)
        if strays == "fail" and state.strays:
            problems.insert(0, f"children left running or unreaped: {sorted(state.strays)}")
        if problems:
            raise HealthError("the guarded block changed the process:\n  " + "\n  ".join(problems))


def _settled_diff(before: Health) -> list[str]:
    """``before.diff(now)``, after giving joined threads time to leave the kernel's list."""
    deadline = time.monotonic() + SETTLE
    while True:
        after = Health.take()
        if after.threads <= before.threads or time.monotonic() > deadline:
            return before.diff(after)
        time.sleep(0.001)
