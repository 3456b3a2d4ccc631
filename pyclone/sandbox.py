"""Sandboxes built from namespaces: :class:`Sandbox`, :class:`SandboxError`, ``pyclone run``.

A :class:`Sandbox` is a declarative description (a frozen dataclass: reusable,
hashable, picklable).  :meth:`Sandbox.spawn` creates a fork-like task with the
namespaces it names; the parent writes the uid/gid maps while the child waits
on a gate, then the child runs the setup steps in plain Python over thin
syscalls (mount, pivot_root, prctl, capset) and finally executes the command
or runs the Python callable.  A failing step is sent back over a close-on-exec
status pipe and raised in the parent as :class:`SandboxError` before
:meth:`~Sandbox.spawn` returns; the half-built task is killed and reaped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno as errno_mod
import inspect
import itertools
import os
import pickle
import resource
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from . import _pyclone
from . import task as task_mod
from .errors import TimeoutExpired
from .flags import CloneFlag
from .spec import NAMESPACES
from .task import Task

__all__ = ["Sandbox", "SandboxError", "add_parser", "main"]

# -- errors ------------------------------------------------------------------


class SandboxError(OSError):
    """A sandbox setup step failed; raised in the parent before ``spawn`` returns.

    ``step`` names the step (``"uid_map"``, ``"mount /proc"``, ``"bind /usr"``,
    ``"pivot_root"``, ``"exec"``, ...); ``errno``, ``strerror``, ``filename``
    and ``filename2`` are those of the failing system call (``errno`` is None
    when the step failed without one).  An :class:`OSError`, so code that
    handles the kernel's refusals catches it; picklable.
    """

    step: str

    def __init__(
        self,
        step: str,
        errno: int | None,
        strerror: str,
        filename: str | None = None,
        filename2: str | None = None,
    ) -> None:
        super().__init__(errno, strerror, filename, None, filename2)
        self.step = step

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            SandboxError,
            (self.step, self.errno, self.strerror, self.filename, self.filename2),
        )

    def __str__(self) -> str:
        text = f"sandbox setup failed at {self.step!r}: "
        if self.errno is not None:
            text += f"[Errno {self.errno}] "
        text += str(self.strerror)
        if self.filename is not None:
            text += f": {self.filename!r}"
        if self.filename2 is not None:
            text += f" -> {self.filename2!r}"
        return text


# -- the description -----------------------------------------------------------

#: What ``new="all"`` and the default give: bwrap's --unshare-all plus a mount namespace.
DEFAULT_NEW = frozenset({"user", "pid", "mnt", "net", "uts", "ipc", "cgroup"})

#: Capability names (without ``CAP_``), in kernel order (include/uapi/linux/capability.h).
CAPABILITIES = (
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
)

_RLIMITS = {
    name[len("RLIMIT_") :].lower(): getattr(resource, name)
    for name in dir(resource)
    if name.startswith("RLIMIT_")
}

IdMap = tuple[tuple[int, int, int], ...]
PathPairs = tuple[tuple[str, str], ...]
StrPath = str | os.PathLike[str]
PathPairsArg = Iterable[tuple[StrPath, StrPath]] | Mapping[StrPath, StrPath]
_MAX_ID = (1 << 32) - 1


def _path(value: Any, what: str, *, absolute: bool = True) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike), not {value!r}")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str path, not {text!r}")
    if not text or "\0" in text:
        raise ValueError(f"{what} must be a non-empty path without NUL bytes, not {text!r}")
    if absolute:
        if not text.startswith("/"):
            raise ValueError(f"{what} must be an absolute path inside the sandbox, not {text!r}")
        text = os.path.normpath(text)
        if text.startswith("//"):
            text = "/" + text.lstrip("/")
    return text


def _pairs(value: Any, what: str, *, src_absolute: bool) -> PathPairs:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        value = list(value.items())
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of (source, destination) pairs, not {value!r}")
    out = []
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"{what} entries must be (source, destination) pairs, not {item!r}")
        src = _path(item[0], f"{what} source", absolute=src_absolute)
        dest = _path(item[1], f"{what} destination")
        out.append((src, dest))
    return tuple(out)


def _paths(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a path or a list of paths, not {value!r}")
    return tuple(_path(v, what) for v in value)


def _id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    if not 0 <= value < _MAX_ID:
        raise ValueError(f"{what} must be between 0 and {_MAX_ID - 1}, not {value}")
    return value


def _idmap(value: Any, what: str) -> IdMap | None:
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, int) for v in value):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of (inside, outside, count) triples")
    lines = []
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise TypeError(
                f"{what} entries must be (inside, outside, count) triples, not {item!r}"
            )
        inside = _id(item[0], f"{what} inside id")
        outside = _id(item[1], f"{what} outside id")
        count = _id(item[2], f"{what} count")
        if count == 0:
            raise ValueError(f"{what} count must be positive, not 0 in {item!r}")
        if inside + count > _MAX_ID or outside + count > _MAX_ID:
            raise ValueError(f"{what} range {item!r} runs past id {_MAX_ID - 1}")
        lines.append((inside, outside, count))
    if not lines:
        raise ValueError(f"{what} must have at least one (inside, outside, count) range")
    if len(lines) > 340:
        raise ValueError(f"{what} has {len(lines)} ranges; the kernel allows at most 340")
    for kind, index in (("inside", 0), ("outside", 1)):
        spans = sorted((line[index], line[index] + line[2]) for line in lines)
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(f"{what} has overlapping {kind} ranges; the kernel refuses that")
    return tuple(lines)


@dataclass(frozen=True, repr=False, init=False)
class Sandbox:
    """A reusable description of a sandbox: namespaces, filesystem view and limits.

    Every option is checked when the object is built (``TypeError`` for a
    wrong type, ``ValueError`` for a wrong value); lists are stored as
    tuples, so a Sandbox is hashable and picklable.  What each option does,
    in kernel terms:

    ``new``
        namespaces created with clone3 (``user``, ``pid``, ``mnt``, ``net``,
        ``uts``, ``ipc``, ``cgroup``, ``time``; ``"all"`` for every one).
        The default is bwrap's ``--unshare-all`` set plus ``mnt``.
    ``uid``, ``gid``
        the ids inside.  With a user namespace and no explicit maps the
        caller's euid/egid are mapped to them (default 0, like ``unshare -r``);
        with explicit maps the task switches to them (default 0) with
        setresgid/setresuid before any other step.
        Without a user namespace (root only) the task switches to them with
        setresgid/setresuid after setup, dropping supplementary groups.
    ``uid_map``, ``gid_map``
        explicit ``(inside, outside, count)`` ranges written to
        ``/proc/PID/uid_map`` and ``gid_map`` by the parent before the child
        runs (several ranges need CAP_SETUID/CAP_SETGID over the parent user
        namespace).  ``/proc/PID/setgroups`` is always set to ``deny`` first,
        as the kernel requires of unprivileged gid maps.
    ``init``
        with a pid namespace: a minimal init is pid 1; it forks the target,
        reaps orphans, forwards HUP, INT, QUIT, TERM, USR1, USR2, WINCH,
        CONT and ALRM to it, and exits with its status (``128 + N`` when
        signal N killed it).  ``init=False`` makes the target itself pid 1.
    ``hostname``, ``domainname``
        sethostname(2)/setdomainname(2) in the new uts namespace.
    mounts
        the mount namespace is first made private (``MS_REC|MS_PRIVATE`` on
        ``/``).  With ``bind``, ``ro_bind``, ``symlink`` or ``dev`` (or
        ``new_root=True``) a new root is assembled in an empty tmpfs and
        entered with pivot_root(2), the old root detached (``MNT_DETACH``);
        otherwise ``proc``, ``tmpfs`` and binds are mounted over the existing
        tree (whose mount points must exist).  ``proc``: a new procfs (of the
        sandbox's pid namespace); ``dev``: a tmpfs with null, zero, full,
        random, urandom and tty bind-mounted from the host, a new devpts
        instance at ``pts`` with ``ptmx``, and a tmpfs at ``shm``;
        ``tmpfs``: empty tmpfs (mode 0755); ``bind``/``ro_bind``: recursive
        bind mounts of host paths, read-only ones remounted with
        ``MS_BIND|MS_REMOUNT|MS_RDONLY`` (submounts too) keeping the
        nosuid/nodev/noexec flags the kernel locks; ``symlink``:
        ``(target, link)``.  Operations run parents first (by depth of the
        destination), mount points are created in the new root as needed.
    ``net``
        a new network namespace holds only ``lo``, which is brought up
        (SIOCSIFFLAGS).
    ``die_with_parent``
        PR_SET_PDEATHSIG(SIGKILL), then a check that the creator is still
        alive (it may have died before the prctl).  The signal comes when
        the creating *thread* ends.
    ``no_new_privs``
        PR_SET_NO_NEW_PRIVS: execve never grants privileges (setuid bits and
        file capabilities are ignored).  On by default, as in bwrap.
    ``cap_drop``
        ``"ALL"`` or capability names: dropped from the bounding set
        (PR_CAPBSET_DROP), the ambient set cleared, then removed from the
        effective, permitted and inheritable sets (capset).
    ``rlimits``
        ``{"nofile": (soft, hard), "core": 0, ...}`` set with setrlimit.
    ``new_session``
        setsid(2), so the sandbox cannot reach the caller's terminal through
        TIOCSTI.
    ``clearenv``, ``setenv``, ``unsetenv``
        the environment of the command (or ``os.environ`` of the callable).
    ``close_fds``, ``pass_fds``
        close every inherited descriptor but 0, 1, 2 and ``pass_fds`` (for a
        callable also its result pipe and the descriptors behind
        ``sys.stdin``/``stdout``/``stderr``).
    ``chdir``
        working directory inside (default ``/`` after a new root).
    ``memory_max``, ``pids_max``, ``cpu_max``
        limits applied with :class:`pyclone.Cgroup` (needs ``pyclone.cgroup``):
        bytes, tasks, and CPUs (a number, or a ``(quota_us, period_us)``
        pair).  The sandbox starts inside a new child cgroup of the caller's,
        removed when :meth:`run` returns (after :meth:`spawn`: when the Task
        is garbage-collected).
    ``seccomp_deny``, ``seccomp_errno``
        a seccomp filter, built with libseccomp through the ``pyseccomp``
        package (extra ``pyclone[seccomp]``), that makes the named system
        calls fail with ``seccomp_errno`` (default EPERM).
    """

    new: frozenset[str] = DEFAULT_NEW
    uid: int | None = None
    gid: int | None = None
    uid_map: IdMap | None = None
    gid_map: IdMap | None = None
    init: bool = True
    hostname: str | None = None
    domainname: str | None = None
    proc: str | None = None
    dev: str | None = None
    tmpfs: tuple[str, ...] = ()
    bind: PathPairs = ()
    ro_bind: PathPairs = ()
    symlink: PathPairs = ()
    new_root: bool | None = None
    chdir: str | None = None
    die_with_parent: bool = False
    no_new_privs: bool = True
    cap_drop: frozenset[str] = frozenset()
    rlimits: tuple[tuple[str, int, int], ...] = ()
    new_session: bool = False
    clearenv: bool = False
    setenv: tuple[tuple[str, str], ...] = ()
    unsetenv: tuple[str, ...] = ()
    close_fds: bool = True
    pass_fds: tuple[int, ...] = ()
    memory_max: int | None = None
    pids_max: int | None = None
    cpu_max: float | tuple[int, int] | None = None
    seccomp_deny: tuple[str, ...] = ()
    seccomp_errno: int = errno_mod.EPERM
    _flags: CloneFlag = field(default=CloneFlag(0), init=False, compare=False)

    def __init__(
        self,
        *,
        new: str | Iterable[str] = DEFAULT_NEW,
        uid: int | None = None,
        gid: int | None = None,
        uid_map: Iterable[tuple[int, int, int]] | None = None,
        gid_map: Iterable[tuple[int, int, int]] | None = None,
        init: bool = True,
        hostname: str | None = None,
        domainname: str | None = None,
        proc: StrPath | None = None,
        dev: StrPath | None = None,
        tmpfs: StrPath | Iterable[StrPath] = (),
        bind: PathPairsArg = (),
        ro_bind: PathPairsArg = (),
        symlink: PathPairsArg = (),
        new_root: bool | None = None,
        chdir: StrPath | None = None,
        die_with_parent: bool = False,
        no_new_privs: bool = True,
        cap_drop: str | Iterable[str] = (),
        rlimits: Mapping[str, int | tuple[int, int]] | Iterable[tuple[Any, ...]] = (),
        new_session: bool = False,
        clearenv: bool = False,
        setenv: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        unsetenv: str | Iterable[str] = (),
        close_fds: bool = True,
        pass_fds: Iterable[int] = (),
        memory_max: int | None = None,
        pids_max: int | None = None,
        cpu_max: float | tuple[int, int] | None = None,
        seccomp_deny: str | Iterable[str] = (),
        seccomp_errno: int = errno_mod.EPERM,
    ) -> None:
        given = {
            "new": new,
            "uid": uid,
            "gid": gid,
            "uid_map": uid_map,
            "gid_map": gid_map,
            "init": init,
            "hostname": hostname,
            "domainname": domainname,
            "proc": proc,
            "dev": dev,
            "tmpfs": tmpfs,
            "bind": bind,
            "ro_bind": ro_bind,
            "symlink": symlink,
            "new_root": new_root,
            "chdir": chdir,
            "die_with_parent": die_with_parent,
            "no_new_privs": no_new_privs,
            "cap_drop": cap_drop,
            "rlimits": rlimits,
            "new_session": new_session,
            "clearenv": clearenv,
            "setenv": setenv,
            "unsetenv": unsetenv,
            "close_fds": close_fds,
            "pass_fds": pass_fds,
            "memory_max": memory_max,
            "pids_max": pids_max,
            "cpu_max": cpu_max,
            "seccomp_deny": seccomp_deny,
            "seccomp_errno": seccomp_errno,
        }
        for name, value in given.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        """Check every option and store it in its normal form (tuples, frozensets)."""
        put = object.__setattr__
        put(self, "new", _check_new(self.new))
        for name in ("uid", "gid"):
            value = getattr(self, name)
            if value is not None:
                _id(value, name)
        put(self, "uid_map", _idmap(self.uid_map, "uid_map"))
        put(self, "gid_map", _idmap(self.gid_map, "gid_map"))
        user = "user" in self.new
        if (self.uid_map or self.gid_map) and not user:
            raise ValueError("uid_map/gid_map need a user namespace: add 'user' to new")
        for name in ("init", "die_with_parent", "no_new_privs", "new_session"):
            _bool(getattr(self, name), name)
        _bool(self.clearenv, "clearenv")
        _bool(self.close_fds, "close_fds")
        if self.new_root is not None:
            _bool(self.new_root, "new_root")
        for name in ("hostname", "domainname"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {value!r}")
            if not 0 < len(value.encode()) <= 64 or "\0" in value:
                raise ValueError(f"{name} must be 1 to 64 bytes without NUL, not {value!r}")
            if "uts" not in self.new:
                raise ValueError(f"{name} needs a uts namespace: add 'uts' to new")
        put(self, "proc", None if self.proc is None else _path(self.proc, "proc"))
        put(self, "dev", None if self.dev is None else _path(self.dev, "dev"))
        put(self, "tmpfs", _paths(self.tmpfs, "tmpfs"))
        put(self, "bind", _pairs(self.bind, "bind", src_absolute=False))
        put(self, "ro_bind", _pairs(self.ro_bind, "ro_bind", src_absolute=False))
        put(self, "symlink", _pairs(self.symlink, "symlink", src_absolute=False))
        if self.chdir is not None:
            put(self, "chdir", _path(self.chdir, "chdir"))
        mounts = self.proc or self.dev or self.tmpfs or self.bind or self.ro_bind or self.symlink
        if (mounts or self.new_root) and "mnt" not in self.new:
            raise ValueError("mount options need a mount namespace: add 'mnt' to new")
        if self.new_root is False and (self.dev or self.symlink):
            raise ValueError(
                "dev and symlink need a new root (they would write to the host's "
                "tree): leave new_root unset or True"
            )
        dests = [d for d in (self.proc, self.dev) if d] + list(self.tmpfs)
        dests += [d for _, d in self.bind + self.ro_bind + self.symlink]
        seen = set()
        for dest in dests:
            if dest in seen:
                raise ValueError(f"two mounts or links have the same destination {dest!r}")
            seen.add(dest)
        for dest in [d for d in (self.proc, self.dev) if d] + [d for _, d in self.symlink]:
            if dest == "/":
                raise ValueError("'/' can be the destination of a bind, ro_bind or tmpfs only")
        put(self, "cap_drop", _check_caps(self.cap_drop))
        put(self, "rlimits", _check_rlimits(self.rlimits))
        put(self, "setenv", _check_setenv(self.setenv))
        put(self, "unsetenv", _check_names(self.unsetenv, "unsetenv"))
        both = sorted(set(self.unsetenv) & {name for name, _ in self.setenv})
        if both:
            raise ValueError(f"{', '.join(both)} both in setenv and unsetenv: choose one")
        put(self, "pass_fds", _check_fds(self.pass_fds))
        for name in ("memory_max", "pids_max"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"{name} must be an int, not {value!r}")
                if value <= 0:
                    raise ValueError(f"{name} must be positive, not {value}")
        if self.cpu_max is not None:
            cpu = self.cpu_max
            if isinstance(cpu, (int, float)) and not isinstance(cpu, bool):
                if not cpu > 0:
                    raise ValueError(f"cpu_max must be a positive number of CPUs, not {cpu!r}")
            elif (
                not isinstance(cpu, (tuple, list))
                or len(cpu) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in cpu)
            ):
                raise ValueError(
                    "cpu_max must be a number of CPUs or a (quota_us, period_us) pair of "
                    f"positive ints, not {cpu!r}"
                )
            else:
                put(self, "cpu_max", (cpu[0], cpu[1]))
        if self.memory_max or self.pids_max or self.cpu_max:
            _cgroup_module()
        put(self, "seccomp_deny", _check_names(self.seccomp_deny, "seccomp_deny"))
        if isinstance(self.seccomp_errno, bool) or not isinstance(self.seccomp_errno, int):
            raise TypeError(f"seccomp_errno must be an int, not {self.seccomp_errno!r}")
        if not 0 < self.seccomp_errno < 4096:
            raise ValueError("seccomp_errno must be an errno between 1 and 4095")
        flags = CloneFlag(0)
        for name in self.new:
            flags |= NAMESPACES[name]
        put(self, "_flags", flags)

    # -- presentation ------------------------------------------------------

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if isinstance(value, frozenset):
                value = sorted(value)
            parts.append(f"{f.name}={value!r}")
        return f"Sandbox({', '.join(parts)})"

    def _root_mode(self) -> bool:
        if self.new_root is not None:
            return self.new_root
        return bool(self.bind or self.ro_bind or self.symlink or self.dev)

    # -- running -----------------------------------------------------------

    def spawn(
        self,
        target: Callable[..., Any] | Sequence[str],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        allow_threads: bool = False,
    ) -> Task:
        """Start ``target`` in the sandbox and return its :class:`Task`.

        ``target`` is a command line (a sequence of strings, searched in the
        sandbox's ``PATH``) or a Python callable run as
        ``target(*args, **kwargs)`` whose value comes back through
        :meth:`Task.result`.  ``stdin``/``stdout``/``stderr`` are descriptors
        (or objects with ``fileno()``) for the sandbox's 0, 1 and 2.

        Returns once every setup step succeeded and the command has been
        executed (or the callable is about to run).  ``allow_threads``
        is :func:`pyclone.spawn_task`'s opt-in for a multi-threaded caller.
        Raises
        :class:`SandboxError` naming the failed step otherwise, after
        killing and reaping what had been started.
        """
        command = _check_target(target)
        args = tuple(args)
        stdio = tuple(
            _fileno(s, n) for s, n in ((stdin, "stdin"), (stdout, "stdout"), (stderr, "stderr"))
        )
        for fd in self.pass_fds:
            os.fstat(fd)  # an EBADF here beats a puzzling one in the child
        seccomp_filter = self._seccomp_filter() if self.seccomp_deny else None
        cgroup = self._open_cgroup()
        status_r, status_w = os.pipe()
        life_r, life_w = os.pipe() if self.die_with_parent else (-1, -1)
        plan = _Plan(
            sandbox=self,
            command=command,
            target=None if command is not None else target,  # type: ignore[arg-type]
            args=args,
            kwargs=dict(kwargs or {}),
            stdio=stdio,
            status_fd=status_w,
            status_r=status_r,
            life_r=life_r,
            life_w=life_w,
            cwd=os.getcwd(),
            cap_last=_cap_last(),
            seccomp=seccomp_filter,
        )
        kwargs_spawn: dict[str, Any] = {}
        if cgroup is not None and "cgroup" in inspect.signature(task_mod._spawn).parameters:
            kwargs_spawn["cgroup"] = cgroup
            place = None
        else:
            place = cgroup

        def before_start(task: Task) -> None:
            if self._flags & CloneFlag.NEWUSER:
                self._write_maps(task.pid)
            if place is not None:
                _place(place, task.pid)

        try:
            try:
                task = task_mod._spawn(
                    plan.child,
                    (),
                    None,
                    self._flags,
                    exit_signal=signal.SIGCHLD,
                    before_start=before_start,
                    allow_threads=allow_threads,
                    **kwargs_spawn,
                )
            finally:
                os.close(status_w)
                if life_r >= 0:
                    os.close(life_r)
            try:
                _await_status(status_r, task)
            except BaseException:
                task.kill()
                task.wait()
                task.close()
                raise
        except BaseException:
            if cgroup is not None:
                cgroup.__exit__(None, None, None)
            raise
        finally:
            os.close(status_r)
            if life_w >= 0:
                os.close(life_w)
        if cgroup is not None:
            # Removed once the task object goes away (run() removes it at once).
            weakref.finalize(task, _close_cgroup, cgroup)
            task.cgroup = cgroup  # type: ignore[attr-defined]
        return task

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        capture_output: bool = False,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        check: bool = False,
        allow_threads: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command in the sandbox and wait for it, like :func:`subprocess.run`.

        Returns a :class:`subprocess.CompletedProcess` (``returncode``
        negative when a signal killed the sandbox's pid 1, ``128 + N`` when
        it killed the target under the default init).  With
        ``capture_output`` its ``stdout`` and ``stderr`` are bytes.  On
        ``timeout`` the sandbox is killed and :class:`pyclone.TimeoutExpired`
        raised; with ``check`` a non-zero status raises
        :class:`subprocess.CalledProcessError`.
        """
        if _check_target(argv) is None:
            raise TypeError("run() takes a command line; use spawn() for a callable")
        deadline = None if timeout is None else time.monotonic() + timeout
        pipes: list[tuple[int, int]] = []
        if capture_output:
            if stdout is not None or stderr is not None:
                raise ValueError("stdout and stderr cannot be given with capture_output")
            pipes = [os.pipe(), os.pipe()]
            stdout, stderr = pipes[0][1], pipes[1][1]
        try:
            task = self.spawn(
                argv, stdin=stdin, stdout=stdout, stderr=stderr, allow_threads=allow_threads
            )
        except BaseException:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            raise
        out = b""
        err = b""
        with task:
            try:
                if pipes:
                    for _, w in pipes:
                        os.close(w)
                    out, err = _collect(pipes[0][0], pipes[1][0], deadline, task.pid, timeout)
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                task.wait(remaining)
            except BaseException:
                task.kill()
                raise
            finally:
                for r, _ in pipes:
                    os.close(r)
            cgroup = getattr(task, "cgroup", None)
            if cgroup is not None:
                _close_cgroup(cgroup)
        code = task.returncode
        assert code is not None
        done = subprocess.CompletedProcess(
            list(argv), code, out if capture_output else None, err if capture_output else None
        )
        if check:
            done.check_returncode()
        return done

    # -- parent-side steps ---------------------------------------------------

    def _write_maps(self, pid: int) -> None:
        uid_map = self.uid_map or ((self.uid or 0, os.geteuid(), 1),)
        gid_map = self.gid_map or ((self.gid or 0, os.getegid(), 1),)
        _write_proc(pid, "uid_map", uid_map)
        with _parent_step("setgroups"):
            _write_file(f"/proc/{pid}/setgroups", b"deny")
        _write_proc(pid, "gid_map", gid_map)

    def _seccomp_filter(self) -> Any:
        try:
            import pyseccomp  # type: ignore[import-untyped,unused-ignore]
        except ImportError as exc:
            raise ImportError(
                "Sandbox(seccomp_deny=...) needs the pyseccomp package "
                "(pip install 'pyclone[seccomp]') and the libseccomp library"
            ) from exc
        flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        for name in self.seccomp_deny:
            try:
                flt.add_rule(pyseccomp.ERRNO(self.seccomp_errno), name)
            except Exception as exc:
                raise ValueError(f"seccomp_deny: libseccomp does not know {name!r}: {exc}") from exc
        return flt

    def _open_cgroup(self) -> Any:
        if not (self.memory_max or self.pids_max or self.cpu_max):
            return None
        cgroup_cls = _cgroup_module().Cgroup
        cg = cgroup_cls(memory_max=self.memory_max, pids_max=self.pids_max, cpu_max=self.cpu_max)
        cg.__enter__()
        return cg


def _bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")


def _check_new(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"new must be a namespace name or an iterable of names, not {value!r}")
    names = set()
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"new names must be strings, not {name!r}")
        if name == "all":
            names |= set(DEFAULT_NEW) | {"time"}
        elif name == "mount":
            names.add("mnt")
        elif name in NAMESPACES:
            names.add(name)
        else:
            valid = ", ".join(sorted(n for n in NAMESPACES if n != "mount"))
            raise ValueError(f"unknown namespace name {name!r}: valid names are {valid}, or 'all'")
    return frozenset(names)


def _check_caps(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"cap_drop must be 'ALL' or capability names, not {value!r}")
    out = set()
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"cap_drop names must be strings, not {name!r}")
        key = name.lower().removeprefix("cap_")
        if key == "all":
            out.add("ALL")
        elif key in CAPABILITIES:
            out.add(key)
        else:
            raise ValueError(f"unknown capability {name!r}: use 'ALL' or names like CAP_NET_RAW")
    return frozenset({"ALL"}) if "ALL" in out else frozenset(out)


def _check_rlimits(value: Any) -> tuple[tuple[str, int, int], ...]:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        items = []
        for item in value:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError(f"rlimits entries must be (name, soft, hard), not {item!r}")
            items.append((item[0], tuple(item[1:]) if len(item) == 3 else item[1]))
    else:
        raise TypeError(f"rlimits must be a mapping of name to limit, not {value!r}")
    out = []
    for name, limit in items:
        if not isinstance(name, str):
            raise TypeError(f"rlimit names must be strings, not {name!r}")
        key = name.lower().removeprefix("rlimit_")
        if key not in _RLIMITS:
            raise ValueError(
                f"unknown rlimit {name!r}: valid names are {', '.join(sorted(_RLIMITS))}"
            )
        pair = limit if isinstance(limit, (tuple, list)) else (limit, limit)
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise TypeError(f"rlimit {name!r} must be an int or a (soft, hard) pair, not {limit!r}")
        soft, hard = (resource.RLIM_INFINITY if v == -1 else v for v in pair)
        if soft < 0 or hard < 0:
            raise ValueError(f"rlimit {name!r} values must be non-negative (or -1: unlimited)")
        if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
            raise ValueError(f"rlimit {name!r}: soft limit {soft} exceeds hard limit {hard}")
        out.append((key, soft, hard))
    return tuple(sorted(out))


def _check_setenv(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        value = list(value.items())
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"setenv must be a mapping of names to values, not {value!r}")
    out = {}
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"setenv entries must be (name, value) pairs, not {item!r}")
        name, val = item
        _check_names([name], "setenv")
        if not isinstance(val, str) or "\0" in val:
            raise TypeError(f"setenv value for {name!r} must be a str without NUL, not {val!r}")
        out[name] = val
    return tuple(sorted(out.items()))


def _check_names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of names, not {value!r}")
    out = []
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"{what} names must be strings, not {name!r}")
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"{what} name {name!r} must be non-empty, without '=' or NUL")
        out.append(name)
    return tuple(dict.fromkeys(out))


def _check_fds(value: Any) -> tuple[int, ...]:
    if not isinstance(value, Iterable):
        raise TypeError(f"pass_fds must be a list of descriptors, not {value!r}")
    out = []
    for fd in value:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"pass_fds entries must be ints, not {fd!r}")
        if fd < 0:
            raise ValueError(f"pass_fds entries must be non-negative, not {fd}")
        out.append(fd)
    return tuple(sorted(set(out)))


def _check_target(target: Any) -> tuple[str, ...] | None:
    """The command line, or None for a callable; TypeError otherwise."""
    if callable(target):
        return None
    if isinstance(target, (str, bytes)):
        raise TypeError("give the command as a list of arguments, e.g. ['sh', '-c', 'true']")
    if not isinstance(target, Sequence) or not target:
        raise TypeError(f"target must be a callable or a non-empty command line, not {target!r}")
    argv = tuple(os.fspath(a) for a in target)
    if not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise TypeError(f"command line arguments must be str without NUL, not {target!r}")
    return argv


def _fileno(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        fd = value
    elif hasattr(value, "fileno"):
        fd = int(value.fileno())
    else:
        raise TypeError(f"{name} must be a descriptor or a file object, not {value!r}")
    os.fstat(fd)
    return fd


def _cap_last() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


def _cgroup_module() -> Any:
    try:
        from . import cgroup  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "Sandbox(memory_max=, pids_max=, cpu_max=) needs pyclone.cgroup (the "
            "pyclone.Cgroup class), which this pyclone lacks; drop the limits or "
            "use a pyclone that has pyclone.Cgroup"
        ) from exc
    return cgroup


def _place(cgroup: Any, pid: int) -> None:
    for name in ("add", "attach", "add_pid", "place"):
        method = getattr(cgroup, name, None)
        if callable(method):
            with _parent_step("cgroup"):
                method(pid)
            return
    raise SandboxError("cgroup", None, f"{cgroup!r} offers no way to place task {pid}")


def _close_cgroup(cgroup: Any) -> None:
    with contextlib.suppress(Exception):
        cgroup.__exit__(None, None, None)


@contextlib.contextmanager
def _parent_step(step: str) -> Iterator[None]:
    try:
        yield
    except SandboxError:
        raise
    except OSError as exc:
        raise SandboxError(
            step, exc.errno, exc.strerror or str(exc), exc.filename, exc.filename2
        ) from exc


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
    with _parent_step(name):
        _write_file(f"/proc/{pid}/{name}", text.encode())


def _collect(
    out_fd: int, err_fd: int, deadline: float | None, pid: int, timeout: float | None
) -> tuple[bytes, bytes]:
    """Read the captured stdout and stderr until both end (or the deadline passes)."""
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    open_fds = {out_fd, err_fd}
    while open_fds:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutExpired(pid, timeout or 0.0)
        ready, _, _ = select.select(list(open_fds), [], [], remaining)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.discard(fd)
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd])


# -- the status pipe -------------------------------------------------------------

_RECORD = struct.Struct("<I")


def _await_status(fd: int, task: Task) -> None:
    """Read the child's status records until EOF; raise the error it reported."""
    data = bytearray()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    records = []
    view = bytes(data)
    while len(view) >= _RECORD.size:
        (size,) = _RECORD.unpack_from(view)
        body = view[_RECORD.size : _RECORD.size + size]
        if len(body) < size:
            break
        records.append(pickle.loads(body))
        view = view[_RECORD.size + size :]
    errors = [r for r in records if r[0] == "error"]
    if errors:
        _, step, err, strerror, filename, filename2 = errors[0]
        raise SandboxError(step, err, str(strerror), filename, filename2)
    if not records:
        code = task.wait()
        raise SandboxError(
            "setup", None, f"the sandbox ended during setup without a report ({_describe(code)})"
        )


def _describe(code: int | None) -> str:
    if code is None:  # Task.wait() cannot always know (see pyclone.Task)
        return "status unknown"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit status {code}"


def _report(fd: int, record: tuple[Any, ...]) -> None:
    body = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(fd, _RECORD.pack(len(body)) + body)  # small: one atomic write


class _StepFailed(Exception):
    """Raised in the child after the error record has been sent."""


# -- the child side -------------------------------------------------------------

_OLD = "/oldroot"
_NEW = "/newroot"
_STAGE = "/tmp"
_FORWARDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGALRM,
)
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_ST_TO_MS = (
    (os.ST_RDONLY, _pyclone.MS_RDONLY),
    (os.ST_NOSUID, _pyclone.MS_NOSUID),
    (os.ST_NODEV, _pyclone.MS_NODEV),
    (os.ST_NOEXEC, _pyclone.MS_NOEXEC),
    (os.ST_NOATIME, _pyclone.MS_NOATIME),
    (os.ST_NODIRATIME, _pyclone.MS_NODIRATIME),
    (os.ST_RELATIME, _pyclone.MS_RELATIME),
)


@dataclass
class _Plan:
    """Everything the child needs, captured in the parent before the clone."""

    sandbox: Sandbox
    command: tuple[str, ...] | None
    target: Callable[..., Any] | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    stdio: tuple[int | None, ...]
    status_fd: int
    status_r: int
    life_r: int
    life_w: int
    cwd: str
    cap_last: int
    seccomp: Any
    prefixes: tuple[str, ...] = ()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run one setup step; on failure send the error record and stop."""
        try:
            yield
        except _StepFailed:
            raise
        except OSError as exc:
            self.fail(name, exc.errno, exc.strerror or str(exc), exc.filename, exc.filename2)
        except Exception as exc:
            self.fail(name, None, f"{type(exc).__name__}: {exc}", None, None)

    def fail(
        self, step: str, err: int | None, strerror: str, filename: Any, filename2: Any
    ) -> NoReturn:
        record = ("error", step, err, strerror, self._host(filename), self._host(filename2))
        with contextlib.suppress(OSError):
            _report(self.status_fd, record)
        raise _StepFailed(step)

    def _host(self, name: Any) -> str | None:
        """A path as the user wrote it: staging prefixes removed."""
        if name is None:
            return None
        text = os.fsdecode(name) if isinstance(name, (str, bytes)) else str(name)
        for prefix in self.prefixes:
            if text == prefix:
                return "/"
            if text.startswith(prefix + "/"):
                return text[len(prefix) :]
        return text

    # -- entry point ---------------------------------------------------------

    def child(self) -> Any:
        """Runs in the new task (after the parent wrote the maps)."""
        try:
            os.close(self.status_r)
            if self.life_w >= 0:
                os.close(self.life_w)
            self.namespace_setup()
            sb = self.sandbox
            if sb._flags & CloneFlag.NEWPID and sb.init:
                self.fork_init()
            self.process_setup()
        except _StepFailed:
            os._exit(127)
        if self.target is not None:
            os.close(self.status_fd)
            return self.target(*self.args, **self.kwargs)
        self.execute()

    def namespace_setup(self) -> None:
        sb = self.sandbox
        if sb.gid_map:
            with self.step("setresgid"):
                gid = 0 if sb.gid is None else sb.gid
                os.setresgid(gid, gid, gid)
        if sb.uid_map:
            with self.step("setresuid"):
                uid = 0 if sb.uid is None else sb.uid
                os.setresuid(uid, uid, uid)
        if sb.die_with_parent:
            with self.step("die_with_parent"):
                _pyclone.prctl(_pyclone.PR_SET_PDEATHSIG, signal.SIGKILL)
                if select.select([self.life_r], [], [], 0)[0]:
                    os._exit(128 + signal.SIGKILL)  # the creator is already gone
                os.close(self.life_r)
        if sb._flags & CloneFlag.NEWNET:
            with self.step("loopback"):
                _loopback_up()
        if sb.hostname is not None:
            with self.step("hostname"):
                socket.sethostname(sb.hostname)
        if sb.domainname is not None:
            with self.step("domainname"):
                _pyclone.setdomainname(sb.domainname)
        if sb._flags & CloneFlag.NEWNS:
            self.mount_setup()

    # -- mounts ----------------------------------------------------------------

    def mount_setup(self) -> None:
        sb = self.sandbox
        m = _pyclone
        with self.step("make / private"):
            m.mount(None, "/", None, m.MS_REC | m.MS_PRIVATE)
        ops = _operations(sb, self.cwd)
        if not sb._root_mode():
            for _, kind, dest, src in ops:
                self.apply(kind, dest, dest, src)
            return
        self.prefixes = (_OLD, _NEW)
        with self.step("pivot_root"):
            m.mount("tmpfs", _STAGE, "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=0755")
            os.mkdir(_STAGE + _NEW)
            m.mount("tmpfs", _STAGE + _NEW, "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=0755")
            os.mkdir(_STAGE + _OLD)
            m.pivot_root(_STAGE, _STAGE + _OLD)
            os.chdir("/")
        for _, kind, dest, src in ops:
            if src is not None and kind != "symlink":
                src = _OLD + src
            self.apply(kind, dest, _NEW + dest if dest != "/" else _NEW, src)
        with self.step("pivot_root"):
            m.umount2(_OLD, m.MNT_DETACH)
            os.chdir(_NEW)
            m.pivot_root(".", ".")
            m.umount2(".", m.MNT_DETACH)
            os.chdir("/")
        self.prefixes = ()

    def apply(self, kind: str, dest: str, where: str, src: str | None) -> None:
        m = _pyclone
        root_mode = self.sandbox._root_mode()
        if kind in ("bind", "ro_bind"):
            assert src is not None
            with self.step(f"{kind} {dest}"):
                is_dir = stat.S_ISDIR(os.stat(src).st_mode)
                if root_mode:
                    _make_point(where, is_dir)
                m.mount(src, where, None, m.MS_BIND | m.MS_REC)
                if kind == "ro_bind":
                    _remount_ro(where, (_OLD if root_mode else "") + "/proc/self/mountinfo")
        elif kind == "tmpfs":
            with self.step(f"mount tmpfs {dest}"):
                if root_mode:
                    _make_point(where, True)
                m.mount("tmpfs", where, "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=0755")
        elif kind == "proc":
            with self.step(f"mount {dest}"):
                if root_mode:
                    _make_point(where, True)
                m.mount("proc", where, "proc", m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC)
        elif kind == "dev":
            with self.step(f"mount {dest}"):
                _make_dev(where, _OLD + "/dev")
        elif kind == "symlink":
            assert src is not None
            with self.step(f"symlink {dest}"):
                os.makedirs(os.path.dirname(where), mode=0o755, exist_ok=True)
                os.symlink(src, where)

    # -- per-process steps ------------------------------------------------------

    def fork_init(self) -> None:
        """Become the pid namespace's init; the target continues in a child."""
        # Block the forwarded signals across the fork: pid 1 ignores a signal it
        # has no handler for, so one arriving before _init_loop installs its
        # handlers would be lost.  They stay pending until then.
        with self.step("fork init"):
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
            pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return
        os.close(self.status_fd)
        result_fd = task_mod._child_result_fd
        if result_fd is not None:
            os.close(result_fd)
        _init_loop(pid, mask)

    def process_setup(self) -> None:
        sb = self.sandbox
        if sb.new_session:
            with self.step("setsid"):
                os.setsid()
        for name, soft, hard in sb.rlimits:
            with self.step(f"rlimit {name}"):
                resource.setrlimit(_RLIMITS[name], (soft, hard))
        for fd, target in zip(self.stdio, (0, 1, 2), strict=True):
            if fd is not None and fd != target:
                with self.step("stdio"):
                    os.dup2(fd, target)
        chdir = sb.chdir or ("/" if sb._root_mode() else None)
        if chdir is not None:
            with self.step("chdir"):
                os.chdir(chdir)
        if not sb._flags & CloneFlag.NEWUSER and (sb.uid is not None or sb.gid is not None):
            with self.step("setgroups"):
                os.setgroups([])
        if sb.gid is not None and not sb._flags & CloneFlag.NEWUSER:
            with self.step("setresgid"):
                os.setresgid(sb.gid, sb.gid, sb.gid)
        if sb.uid is not None and not sb._flags & CloneFlag.NEWUSER:
            with self.step("setresuid"):
                os.setresuid(sb.uid, sb.uid, sb.uid)
        if sb.cap_drop:
            with self.step("cap_drop"):
                self.drop_caps()
        if sb.no_new_privs:
            with self.step("no_new_privs"):
                _pyclone.prctl(_pyclone.PR_SET_NO_NEW_PRIVS, 1)
        with self.step("environment"):
            self.environment()
        if sb.close_fds:
            with self.step("close_fds"):
                keep = {0, 1, 2, self.status_fd, *sb.pass_fds}
                if self.target is not None:
                    # the callable's result channel, and what sys.std* write to
                    if task_mod._child_result_fd is not None:
                        keep.add(task_mod._child_result_fd)
                    keep |= _std_fds()
                _close_except(keep)
        for fd in sb.pass_fds:
            with self.step("pass_fds"):
                os.set_inheritable(fd, True)
        if self.seccomp is not None:
            with self.step("seccomp"):
                self.seccomp.load()
        with self.step("report"):
            _report(self.status_fd, ("ok",))

    def drop_caps(self) -> None:
        names = self.sandbox.cap_drop
        if "ALL" in names:
            numbers = list(range(self.cap_last + 1))
        else:
            numbers = [
                CAPABILITIES.index(n) for n in names if CAPABILITIES.index(n) <= self.cap_last
            ]
        for cap in numbers:
            _pyclone.prctl(_pyclone.PR_CAPBSET_DROP, cap)
        _pyclone.prctl(_pyclone.PR_CAP_AMBIENT, _pyclone.PR_CAP_AMBIENT_CLEAR_ALL)
        mask = 0
        for cap in numbers:
            mask |= 1 << cap
        eff, perm, inh = _pyclone.capget()
        _pyclone.capset(eff & ~mask, perm & ~mask, inh & ~mask)

    def environment(self) -> None:
        sb = self.sandbox
        if sb.clearenv:
            os.environ.clear()
        for name in sb.unsetenv:
            os.environ.pop(name, None)
        for name, value in sb.setenv:
            os.environ[name] = value

    def execute(self) -> NoReturn:
        assert self.command is not None
        try:
            os.execvpe(self.command[0], list(self.command), dict(os.environ))
        except OSError as exc:
            with contextlib.suppress(_StepFailed):
                self.fail("exec", exc.errno, exc.strerror or str(exc), self.command[0], None)
        os._exit(127)


def _operations(sb: Sandbox, cwd: str) -> list[tuple[int, str, str, str | None]]:
    """(depth, kind, destination, source) in the order they are applied: parents first."""
    ops: list[tuple[int, str, str, str | None]] = []

    def add(kind: str, dest: str, src: str | None) -> None:
        ops.append((dest.rstrip("/").count("/"), kind, dest, src))

    for src, dest in sb.bind:
        add("bind", dest, os.path.normpath(os.path.join(cwd, src)))
    for src, dest in sb.ro_bind:
        add("ro_bind", dest, os.path.normpath(os.path.join(cwd, src)))
    for path in sb.tmpfs:
        add("tmpfs", path, None)
    if sb.proc:
        add("proc", sb.proc, None)
    if sb.dev:
        add("dev", sb.dev, None)
    for target, link in sb.symlink:
        add("symlink", link, target)
    ops.sort(key=lambda op: op[0])  # stable: same depth keeps the order above
    return ops


def _make_point(path: str, is_dir: bool) -> None:
    """Create a mount point (and its parents) in the new root."""
    if is_dir:
        os.makedirs(path, mode=0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _mount_flags(path: str) -> int:
    flags = os.statvfs(path).f_flag
    out = 0
    for st, ms in _ST_TO_MS:
        if flags & st:
            out |= ms
    return out


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (space, tab, newline, backslash)."""
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _remount_ro(where: str, mountinfo: str) -> None:
    """Make a bind mount and its submounts read-only, keeping their locked flags."""
    m = _pyclone
    points = [where]
    with open(mountinfo) as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point.startswith(where.rstrip("/") + "/"):
                points.append(point)
    for point in points:
        flags = _mount_flags(point) | m.MS_BIND | m.MS_REMOUNT | m.MS_RDONLY
        m.mount(None, point, None, flags)


def _make_dev(where: str, host_dev: str) -> None:
    m = _pyclone
    os.makedirs(where, mode=0o755, exist_ok=True)
    m.mount("tmpfs", where, "tmpfs", m.MS_NOSUID | m.MS_NOEXEC, "mode=0755")
    for name in _DEV_NODES:
        node = os.path.join(where, name)
        os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
        m.mount(os.path.join(host_dev, name), node, None, m.MS_BIND)
    for name, target in (
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("fd", "/proc/self/fd"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ):
        os.symlink(target, os.path.join(where, name))
    pts = os.path.join(where, "pts")
    os.mkdir(pts, 0o755)
    m.mount(
        "devpts", pts, "devpts", m.MS_NOSUID | m.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"
    )
    shm = os.path.join(where, "shm")
    os.mkdir(shm, 0o1777)
    m.mount("tmpfs", shm, "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=1777")


def _loopback_up() -> None:
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = bytearray(struct.pack("16sH22x", b"lo", 0))
        fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, ifreq, True)
        (flags,) = struct.unpack_from("H", ifreq, 16)
        struct.pack_into("H", ifreq, 16, flags | _IFF_UP)
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, ifreq, True)


def _std_fds() -> set[int]:
    fds = set()
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            fds.add(stream.fileno())
    return fds


def _close_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, os.sysconf("SC_OPEN_MAX") if low < 65536 else low)


def _init_loop(target: int, mask: Iterable[int]) -> NoReturn:
    """pid 1 of the sandbox: forward signals to the target, reap everyone, exit with it.

    ``mask`` is the signal mask to restore once the handlers are in place.
    """

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signum)

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    code = 1
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == target:
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                code = 128 - code
            break
    os._exit(code)  # ending pid 1 kills what is left in the namespace


# -- command line -----------------------------------------------------------------

_HELP = """\
Run COMMAND in a sandbox built from Linux namespaces, like bubblewrap (bwrap).
Options use bwrap's spelling; they can be given in any order (mounts are
applied parents first).  Differences from bwrap: with --unshare-user the id
inside is 0 by default (like `unshare -r`; use --uid/--gid for others), a
mount namespace is always created, capabilities inside the user namespace are
kept unless --cap-drop ALL is given, and --memory-max/--pids-max/--seccomp-deny
are pyclone's own.  The exit status is COMMAND's (128+N if signal N killed
it); 125 when setup failed, 126 when COMMAND could not be executed, 127 when
it was not found.

example (bwrap --unshare-all --ro-bind /usr /usr ... sh):
  python -m pyclone run --unshare-all --ro-bind /usr /usr \\
      --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \\
      --proc /proc --dev /dev --tmpfs /tmp -- sh -c 'id -u; hostname'
"""


def add_parser(subparsers: Any) -> None:
    """Add ``run`` to ``python -m pyclone``."""
    p = subparsers.add_parser(
        "run",
        help="run a command in a sandbox (bubblewrap-style options)",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python -m pyclone run [OPTIONS...] [--] COMMAND [ARGS...]",
    )
    ns = p.add_argument_group("namespaces")
    ns.add_argument(
        "--unshare-all", action="store_true", help="unshare user, ipc, pid, net, uts, cgroup"
    )
    ns.add_argument(
        "--share-net", action="store_true", help="keep the host network (with --unshare-all)"
    )
    for name in ("user", "ipc", "pid", "net", "uts", "cgroup", "time"):
        ns.add_argument(
            f"--unshare-{name}", action="store_true", help=f"create a new {name} namespace"
        )
    ns.add_argument(
        "--uid", type=int, metavar="UID", help="uid inside (default 0 with a user namespace)"
    )
    ns.add_argument(
        "--gid", type=int, metavar="GID", help="gid inside (default 0 with a user namespace)"
    )
    ns.add_argument("--hostname", metavar="NAME", help="hostname inside (needs --unshare-uts)")
    ns.add_argument("--as-pid-1", action="store_true", help="COMMAND is pid 1 (no init process)")
    fs = p.add_argument_group("filesystem (a new root is built when any of these is given)")
    fs.add_argument(
        "--bind",
        nargs=2,
        action="append",
        default=[],
        metavar=("SRC", "DEST"),
        help="bind mount host SRC on DEST",
    )
    fs.add_argument(
        "--ro-bind",
        nargs=2,
        action="append",
        default=[],
        metavar=("SRC", "DEST"),
        help="bind mount host SRC read-only on DEST",
    )
    fs.add_argument(
        "--symlink",
        nargs=2,
        action="append",
        default=[],
        metavar=("SRC", "DEST"),
        help="create a symlink at DEST pointing to SRC",
    )
    fs.add_argument(
        "--tmpfs", action="append", default=[], metavar="DEST", help="mount an empty tmpfs on DEST"
    )
    fs.add_argument("--proc", metavar="DEST", help="mount a new procfs on DEST")
    fs.add_argument("--dev", metavar="DEST", help="mount a minimal /dev on DEST")
    fs.add_argument("--chdir", metavar="DIR", help="change directory to DIR")
    pr = p.add_argument_group("process")
    pr.add_argument(
        "--die-with-parent", action="store_true", help="kill the sandbox when this process dies"
    )
    pr.add_argument(
        "--new-session", action="store_true", help="create a new terminal session (setsid)"
    )
    pr.add_argument(
        "--cap-drop",
        action="append",
        default=[],
        metavar="CAP",
        help="drop capability CAP (or ALL)",
    )
    pr.add_argument(
        "--setenv",
        nargs=2,
        action="append",
        default=[],
        metavar=("VAR", "VALUE"),
        help="set VAR to VALUE",
    )
    pr.add_argument("--unsetenv", action="append", default=[], metavar="VAR", help="unset VAR")
    pr.add_argument("--clearenv", action="store_true", help="start from an empty environment")
    lim = p.add_argument_group("limits (pyclone)")
    lim.add_argument(
        "--memory-max", type=_size, metavar="BYTES", help="memory limit (K, M, G suffixes)"
    )
    lim.add_argument("--pids-max", type=int, metavar="N", help="limit on tasks in the sandbox")
    lim.add_argument(
        "--seccomp-deny",
        action="append",
        default=[],
        metavar="SYSCALL",
        help="make SYSCALL fail with EPERM",
    )
    p.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="COMMAND", help="command and arguments"
    )
    p.set_defaults(func=main)


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(digits) * scale


def sandbox_from_args(args: argparse.Namespace) -> Sandbox:
    """The :class:`Sandbox` a ``pyclone run`` command line describes."""
    new = {"mnt"}
    if os.geteuid() != 0:
        new.add("user")  # as bwrap does for unprivileged callers
    if args.unshare_all:
        new |= DEFAULT_NEW
        if args.share_net:
            new.discard("net")
    for name in ("user", "ipc", "pid", "net", "uts", "cgroup", "time"):
        if getattr(args, f"unshare_{name}"):
            new.add(name)
    return Sandbox(
        new=new,
        uid=args.uid,
        gid=args.gid,
        hostname=args.hostname,
        init=not args.as_pid_1,
        bind=[tuple(p) for p in args.bind],
        ro_bind=[tuple(p) for p in args.ro_bind],
        symlink=[tuple(p) for p in args.symlink],
        tmpfs=args.tmpfs,
        proc=args.proc,
        dev=args.dev,
        chdir=args.chdir,
        die_with_parent=args.die_with_parent,
        new_session=args.new_session,
        cap_drop=args.cap_drop,
        setenv=[tuple(p) for p in args.setenv],
        unsetenv=args.unsetenv,
        clearenv=args.clearenv,
        memory_max=args.memory_max,
        pids_max=args.pids_max,
        seccomp_deny=args.seccomp_deny,
    )


def main(args: argparse.Namespace) -> int:
    """``python -m pyclone run``: build the sandbox, run the command, return its status."""
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    prog = "python -m pyclone run"
    if not command:
        print(f"{prog}: no COMMAND given (see --help)", file=sys.stderr)
        return 2
    try:
        sandbox = sandbox_from_args(args)
    except (TypeError, ValueError, ImportError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        done = sandbox.run(command)
    except SandboxError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        if exc.step == "exec":
            return 127 if exc.errno == errno_mod.ENOENT else 126
        return 125
    except (OSError, RuntimeError, ValueError, ImportError) as exc:
        # e.g. pyclone.CgroupUnavailable (a RuntimeError) for --memory-max
        print(f"{prog}: {exc}", file=sys.stderr)
        return 125
    code = done.returncode
    return 128 - code if code < 0 else code
