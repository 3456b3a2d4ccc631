"""Cgroups for tasks: a child cgroup of the caller's own, with limits, entered before the task runs.

:class:`Cgroup` creates one directory per cgroup hierarchy it needs, each
nested under the caller's own cgroup in that hierarchy (read from
/proc/self/cgroup and /proc/self/mountinfo), so every limit the caller is
under still holds.  cgroup v2 comes first: the task is started inside it
with CLONE_INTO_CGROUP, so it never runs outside.  A limit whose
controller v2 does not delegate to the caller's cgroup (its
``cgroup.subtree_control``) is applied through the cgroup v1 hierarchy of
that controller, if one is mounted; :func:`spawn_task` then writes the
task into that hierarchy's ``cgroup.procs`` from the parent while the task
waits, before it runs any code of its own.  Hybrid layouts (cgroup2 at
/sys/fs/cgroup/unified next to v1 controllers) work this way.

pyclone never writes to a cgroup it did not create: it does not enable
controllers in the caller's cgroup, and it removes only its own
directories.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple, TypeAlias

from . import _pyclone
from ._procfs import unescape_mountinfo, write_file

__all__ = ["Cgroup", "CgroupUnavailable", "Hierarchy", "hierarchies"]

CpuMax: TypeAlias = "float | tuple[int, int]"

#: Which controller serves each limit.
LIMIT_CONTROLLERS = {"memory_max": "memory", "pids_max": "pids", "cpu_max": "cpu"}

#: cpu_max given as a number of CPUs uses this period (the kernel's default).
CPU_PERIOD_US = 100_000

_names = itertools.count()


class CgroupUnavailable(RuntimeError):
    """A cgroup, or the controller a limit needs, cannot be used on this machine.

    ``limit`` names the limit (``"memory_max"``, ...) or is None when no
    cgroup hierarchy is usable at all; ``controller`` names its controller.
    """

    def __init__(self, message: str, *, limit: str | None = None, controller: str | None = None):
        super().__init__(message)
        self.limit = limit
        self.controller = controller


class Hierarchy(NamedTuple):
    """One mounted cgroup hierarchy and the caller's cgroup in it.

    A named tuple rather than a dataclass: dataclasses loads inspect and ast,
    about 9 ms that every ``import pyclone`` would pay.
    """

    #: 1 or 2.
    version: int
    #: Where the hierarchy is mounted.
    mountpoint: str
    #: v1: the controllers bound to it; v2: those the caller's cgroup delegates to children.
    controllers: frozenset[str]
    #: The caller's own cgroup directory (the parent of the ones pyclone creates).
    base: str

    @property
    def writable(self) -> bool:
        """Can this process create a cgroup under :attr:`base`?"""
        return os.access(self.base, os.W_OK | os.X_OK)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def hierarchies(
    mountinfo: str = "/proc/self/mountinfo", cgroup: str = "/proc/self/cgroup"
) -> list[Hierarchy]:
    """The cgroup hierarchies this process can see, with its own cgroup in each.

    Read from /proc/self/cgroup (``id:controllers:path``) and
    /proc/self/mountinfo (the mount of each hierarchy and the part of it
    the mount shows).  Hierarchies that are not mounted, or whose mount
    does not show the caller's cgroup, are left out.
    """
    memberships: list[tuple[frozenset[str], str]] = []
    for line in _read(cgroup).splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            memberships.append((frozenset(filter(None, parts[1].split(","))), parts[2]))
    found: list[Hierarchy] = []
    seen: set[str] = set()
    for line in _read(mountinfo).splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = unescape_mountinfo(fields[3]), unescape_mountinfo(fields[4])
        options = frozenset(tail[2].split(","))
        version = 2 if tail[0] == "cgroup2" else 1
        for ctrls, path in memberships:
            if version == 2 and ctrls:
                continue
            if version == 1 and (not ctrls or not ctrls <= options):
                continue
            if root != "/" and path != root and not path.startswith(root + "/"):
                continue  # the mount does not show our cgroup
            rel = path if root == "/" else path[len(root) :]
            base = os.path.normpath(mountpoint + "/" + rel.lstrip("/"))
            key = f"{version}:{sorted(ctrls)}"
            if key in seen:
                break
            seen.add(key)
            if version == 2:
                try:
                    delegated = frozenset(_read(base + "/cgroup.subtree_control").split())
                except OSError:
                    delegated = frozenset()
                found.append(Hierarchy(2, mountpoint, delegated, base))
            else:
                found.append(Hierarchy(1, mountpoint, ctrls, base))
            break
    return found


_write = write_file


def _read_int(path: str) -> int | None:
    try:
        text = _read(path).strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def _read_keyed(path: str) -> dict[str, int]:
    """A flat keyed file (``key value`` per line) such as cpu.stat or memory.events."""
    try:
        text = _read(path)
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _procs(directory: str) -> set[int]:
    try:
        return {int(p) for p in _read(directory + "/cgroup.procs").split()}
    except (OSError, ValueError):
        return set()


class Cgroup:
    """A child cgroup of the caller's own, with limits, for :func:`spawn_task` (``cgroup=``).

    ``memory_max`` is in bytes, ``pids_max`` the number of tasks, and
    ``cpu_max`` either a number of CPUs (``0.5``: half of one) or a
    ``(quota_us, period_us)`` pair as in cgroup v2's ``cpu.max``.  None
    leaves a limit unset.

    Use it as a context manager: entering creates the cgroup and applies
    the limits, leaving removes it, killing any task still inside first.
    :attr:`path` is its main directory (the cgroup v2 one when there is
    one); :attr:`paths` maps ``"v2"`` and each v1 controller used to its
    directory.  Raises :class:`CgroupUnavailable`, naming the limit, when a
    limit has no usable controller.
    """

    memory_max: int | None
    pids_max: int | None
    cpu_max: tuple[int, int] | None
    path: str | None
    paths: dict[str, str]

    def __init__(
        self,
        memory_max: int | None = None,
        pids_max: int | None = None,
        cpu_max: CpuMax | None = None,
    ) -> None:
        self.memory_max = _positive_int(memory_max, "memory_max", minimum=1)
        self.pids_max = _positive_int(pids_max, "pids_max", minimum=0)
        self.cpu_max = _cpu_max(cpu_max)
        self.path = None
        self.paths = {}
        self._created: list[str] = []
        self._v2_dir: str | None = None
        self._v2_fd: int | None = None
        self._v1_dirs: dict[str, str] = {}  # controller -> directory

    # -- creation ------------------------------------------------------------

    def _limits(self) -> dict[str, object]:
        values = {"memory_max": self.memory_max, "pids_max": self.pids_max, "cpu_max": self.cpu_max}
        return {k: v for k, v in values.items() if v is not None}

    def _plan(self, found: list[Hierarchy]) -> tuple[Hierarchy | None, dict[str, Hierarchy]]:
        """Which hierarchy serves each limit: v2 where delegated, else a v1 one."""
        v2 = next((h for h in found if h.version == 2 and h.writable), None)
        v1_for: dict[str, Hierarchy] = {}
        for limit in self._limits():
            controller = LIMIT_CONTROLLERS[limit]
            if v2 is not None and controller in v2.controllers:
                continue
            v1 = next((h for h in found if h.version == 1 and controller in h.controllers), None)
            if v1 is not None and v1.writable:
                v1_for[controller] = v1
                continue
            raise CgroupUnavailable(
                _unavailable_reason(limit, controller, found, v1),
                limit=limit,
                controller=controller,
            )
        if v2 is None and not v1_for:
            raise CgroupUnavailable(
                "no cgroup hierarchy can be used here: no writable cgroup2 mount shows this "
                "process's cgroup (see /proc/self/cgroup and /proc/self/mountinfo)"
            )
        return v2, v1_for

    def create(self) -> Cgroup:
        """Create the cgroup directories and apply the limits (what entering the context does)."""
        if self._created:
            raise RuntimeError(f"{self!r} is already created")
        v2, v1_for = self._plan(hierarchies())
        name = f"pyclone-{os.getpid()}-{next(_names)}"
        try:
            if v2 is not None:
                self._v2_dir = self._mkdir(v2.base, name)
                self.paths["v2"] = self._v2_dir
            for controller, h in v1_for.items():
                shared = next((d for c, d in self._v1_dirs.items() if v1_for[c] is h), None)
                self._v1_dirs[controller] = shared or self._mkdir(h.base, name)
                self.paths[controller] = self._v1_dirs[controller]
            self._apply_limits()
            if self._v2_dir is not None:
                self._v2_fd = os.open(self._v2_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            self._rmdirs(deadline=time.monotonic() + 1.0)
            raise
        self.path = self._v2_dir or next(iter(self._v1_dirs.values()))
        return self

    def _mkdir(self, base: str, name: str) -> str:
        path = os.path.join(base, name)
        os.mkdir(path)
        self._created.append(path)
        return path

    def _apply_limits(self) -> None:
        def target(controller: str) -> tuple[str, int]:
            if controller in self._v1_dirs:
                return self._v1_dirs[controller], 1
            assert self._v2_dir is not None
            return self._v2_dir, 2

        if self.memory_max is not None:
            d, v = target("memory")
            _write(
                f"{d}/memory.max" if v == 2 else f"{d}/memory.limit_in_bytes", str(self.memory_max)
            )
        if self.pids_max is not None:
            d, _ = target("pids")
            _write(f"{d}/pids.max", str(self.pids_max))
        if self.cpu_max is not None:
            quota, period = self.cpu_max
            d, v = target("cpu")
            if v == 2:
                _write(f"{d}/cpu.max", f"{quota} {period}")
            else:
                _write(f"{d}/cpu.cfs_period_us", str(period))
                _write(f"{d}/cpu.cfs_quota_us", str(quota))

    def _require_created(self) -> None:
        if not self._created:
            raise ValueError(f"{self!r} is not created: use it in a with block (or call create())")

    def _place(self, pid: int, *, v2: bool) -> None:
        """Write ``pid`` into the v1 directories (and the v2 one when ``v2``): the parent's side."""
        dirs = list(dict.fromkeys(self._v1_dirs.values()))
        if v2 and self._v2_dir is not None:
            dirs.insert(0, self._v2_dir)
        for d in dirs:
            _write(f"{d}/cgroup.procs", str(pid))

    # -- inspection ------------------------------------------------------------

    @property
    def created(self) -> bool:
        """True between :meth:`create` and :meth:`remove`."""
        return bool(self._created)

    def procs(self) -> set[int]:
        """The pids of the processes in the cgroup (in any of its directories)."""
        found: set[int] = set()
        for d in self._created:
            found |= _procs(d)
        return found

    def stats(self) -> dict[str, int]:
        """Counters read from the cgroup's files, under version-neutral names.

        ``memory_current``/``memory_peak`` (bytes), ``memory_oom_kills``,
        ``pids_current``/``pids_peak``, ``pids_max_events`` (forks refused
        by ``pids_max``), ``cpu_usage_usec``, ``cpu_nr_throttled``: each
        where the cgroup has the controller (a key is absent otherwise).
        """
        out: dict[str, int] = {}

        def put(key: str, value: int | None) -> None:
            if value is not None:
                out[key] = value

        v2 = self._v2_dir
        if v2 is not None:
            cpu = _read_keyed(f"{v2}/cpu.stat")
            put("cpu_usage_usec", cpu.get("usage_usec"))
            put("cpu_nr_throttled", cpu.get("nr_throttled"))
        mem, mem_v = self._dir_for("memory")
        if mem is not None:
            if mem_v == 2:
                put("memory_current", _read_int(f"{mem}/memory.current"))
                put("memory_peak", _read_int(f"{mem}/memory.peak"))
                put("memory_oom_kills", _read_keyed(f"{mem}/memory.events").get("oom_kill"))
            else:
                put("memory_current", _read_int(f"{mem}/memory.usage_in_bytes"))
                put("memory_peak", _read_int(f"{mem}/memory.max_usage_in_bytes"))
                put("memory_oom_kills", _read_keyed(f"{mem}/memory.oom_control").get("oom_kill"))
        pids, _ = self._dir_for("pids")
        if pids is not None:
            put("pids_current", _read_int(f"{pids}/pids.current"))
            put("pids_peak", _read_int(f"{pids}/pids.peak"))
            put("pids_max_events", _read_keyed(f"{pids}/pids.events").get("max"))
        cpu_dir, cpu_v = self._dir_for("cpu")
        if cpu_dir is not None and cpu_v == 1:
            put("cpu_nr_throttled", _read_keyed(f"{cpu_dir}/cpu.stat").get("nr_throttled"))
        return out

    def _dir_for(self, controller: str) -> tuple[str | None, int]:
        if controller in self._v1_dirs:
            return self._v1_dirs[controller], 1
        if self._v2_dir is not None and os.path.exists(f"{self._v2_dir}/{controller}.stat"):
            return self._v2_dir, 2
        if self._v2_dir is not None and os.path.exists(f"{self._v2_dir}/{controller}.current"):
            return self._v2_dir, 2
        return None, 0

    # -- teardown ----------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (and only those).

        cgroup v2 ``cgroup.kill`` where present; for the rest, each pid is
        pinned with pidfd_open first, then checked to still be a member,
        then signalled through the pidfd, so a recycled pid is never hit.
        """
        if self._v2_dir is not None and os.path.exists(f"{self._v2_dir}/cgroup.kill"):
            _write(f"{self._v2_dir}/cgroup.kill", "1")
        for d in self._created:
            for pid in _procs(d):
                try:
                    fd = os.pidfd_open(pid)
                except OSError:
                    continue
                try:
                    if pid in _procs(d):
                        _pyclone.pidfd_send_signal(fd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                finally:
                    os.close(fd)

    def remove(self, timeout: float = 10.0) -> None:
        """Kill what is left inside, then remove the directories pyclone created.

        Tasks killed here stay zombies of their parent until waited for
        (a :class:`Task` reaps its own).  Raises ``OSError`` if a directory
        cannot be removed within ``timeout`` seconds (for instance because
        a task created cgroups below it).
        """
        if not self._created:
            return
        deadline = time.monotonic() + timeout
        delay = 0.001
        while self.procs():
            self.kill()
            if time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        self._rmdirs(deadline)

    def _rmdirs(self, deadline: float) -> None:
        if self._v2_fd is not None:
            os.close(self._v2_fd)
            self._v2_fd = None
        failed: list[str] = []
        for path in reversed(self._created):
            delay = 0.001
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        failed.append(path)
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
        self._created = failed
        if not failed:
            self._v2_dir = None
            self._v1_dirs = {}
            self.path = None
            self.paths = {}
        else:
            raise OSError(f"could not remove cgroup directories {failed} (busy)")

    def __enter__(self) -> Cgroup:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_created", None):
            _warn(f"{self!r} was never removed", ResourceWarning, source=self)
            try:
                if not self.procs():
                    self._rmdirs(time.monotonic())
            except Exception:  # pragma: no cover - shutdown
                pass

    def __repr__(self) -> str:
        limits = " ".join(f"{k}={v!r}" for k, v in self._limits().items()) or "no limits"
        where = self.path if self._created else "not created"
        v1 = sorted(self._v1_dirs)
        extra = f" (v1: {', '.join(v1)})" if v1 else ""
        return f"<pyclone.Cgroup {where} {limits}{extra}>"


def _positive_int(value: int | None, name: str, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def _cpu_max(value: CpuMax | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        if len(value) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
        ):
            raise ValueError("cpu_max as a pair must be (quota_us, period_us), positive ints")
        return value[0], value[1]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"cpu_max must be a number of CPUs or a (quota_us, period_us) pair, "
            f"not {type(value).__name__}"
        )
    if value <= 0:
        raise ValueError(f"cpu_max must be positive, not {value}")
    return max(1, round(value * CPU_PERIOD_US)), CPU_PERIOD_US


def _unavailable_reason(
    limit: str, controller: str, found: list[Hierarchy], v1: Hierarchy | None
) -> str:
    v2 = next((h for h in found if h.version == 2), None)
    parts = [f"{limit} needs the {controller!r} cgroup controller, which is not usable here:"]
    if v2 is None:
        parts.append("no cgroup2 hierarchy shows this process's cgroup;")
    elif not v2.writable:
        parts.append(f"cgroup v2 directory {v2.base} is not writable by this process;")
    else:
        delegated = ", ".join(sorted(v2.controllers)) or "none"
        parts.append(
            f"cgroup v2 at {v2.mountpoint} does not delegate it to {v2.base} "
            f"(cgroup.subtree_control there: {delegated}; pyclone does not change it);"
        )
    if v1 is None:
        parts.append(f"and no cgroup v1 {controller!r} hierarchy is mounted")
    else:
        parts.append(f"and cgroup v1 directory {v1.base} is not writable by this process")
    return " ".join(parts)
