"""The options of a sandbox: a frozen, hashable value whose options are checked when it is built.

:class:`~pyclone.Sandbox` (in :mod:`._spec`) adds starting it; the launch
and the child's setup read a description through this base class, so they
never import what starts them.
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from ..flags import CloneFlag
from ..spec import NAMESPACES
from ._checks import (
    IdMap,
    PathPairs,
    PathPairsArg,
    StrPath,
    check_bool,
    check_caps,
    check_fds,
    check_id,
    check_idmap,
    check_names,
    check_new,
    check_pairs,
    check_path,
    check_paths,
    check_rlimits,
    check_setenv,
)
from ._fsops import MOUNT_ONLY_KINDS, OVER_TREE_KINDS, FsOp, check_ops
from ._labels import check_label
from ._names import DEFAULT_NEW
from ._seccomp import Program, check_programs


class Description:
    """The options of a :class:`Sandbox`, checked when built (the class adds starting it).

    A plain class rather than a dataclass: ``dataclasses`` loads ``inspect``
    and ``ast``, about a tenth of what ``pyclone run`` costs before its
    sandbox starts.  The class attributes below are the options' defaults
    (in their stored form); :data:`FIELDS` names them in order.
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
    dev_bind: PathPairs = ()
    symlink: PathPairs = ()
    ops: tuple[FsOp, ...] = ()
    new_root: bool | None = None
    chdir: str | None = None
    start_dirs: tuple[str, ...] = ()
    export_pwd: bool = False
    die_with_parent: bool = False
    no_new_privs: bool = True
    cap_drop: frozenset[str] = frozenset()
    cap_add: frozenset[str] = frozenset()
    rlimits: tuple[tuple[str, int, int], ...] = ()
    new_session: bool = True
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
    seccomp_programs: tuple[bytes, ...] = ()
    lock_file: tuple[str, ...] = ()
    sync_fd: int | None = None
    block_fd: int | None = None
    userns: int | None = None
    pidns: int | None = None
    userns2: int | None = None
    argv0: str | None = None
    forward_signals: bool = False
    disable_userns: bool = False
    assert_userns_disabled: bool = False
    userns_block_fd: int | None = None
    exec_label: str | None = None
    file_label: str | None = None
    #: the namespaces as clone flags (derived from ``new``: not compared)
    _flags: CloneFlag = CloneFlag(0)

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
        dev_bind: PathPairsArg = (),
        symlink: PathPairsArg = (),
        ops: Iterable[tuple[Any, ...]] = (),
        new_root: bool | None = None,
        chdir: StrPath | None = None,
        start_dirs: StrPath | Iterable[StrPath] = (),
        export_pwd: bool = False,
        die_with_parent: bool = False,
        no_new_privs: bool = True,
        cap_drop: str | Iterable[str] = (),
        cap_add: str | Iterable[str] = (),
        rlimits: Mapping[str, int | tuple[int, int]] | Iterable[tuple[Any, ...]] = (),
        new_session: bool = True,
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
        seccomp_programs: Program | Iterable[Program] = (),
        lock_file: StrPath | Iterable[StrPath] = (),
        sync_fd: int | None = None,
        block_fd: int | None = None,
        userns: int | None = None,
        pidns: int | None = None,
        userns2: int | None = None,
        argv0: str | None = None,
        forward_signals: bool = False,
        disable_userns: bool = False,
        assert_userns_disabled: bool = False,
        userns_block_fd: int | None = None,
        exec_label: str | None = None,
        file_label: str | None = None,
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
            "dev_bind": dev_bind,
            "symlink": symlink,
            "ops": ops,
            "new_root": new_root,
            "chdir": chdir,
            "start_dirs": start_dirs,
            "export_pwd": export_pwd,
            "die_with_parent": die_with_parent,
            "no_new_privs": no_new_privs,
            "cap_drop": cap_drop,
            "cap_add": cap_add,
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
            "seccomp_programs": seccomp_programs,
            "lock_file": lock_file,
            "sync_fd": sync_fd,
            "block_fd": block_fd,
            "userns": userns,
            "pidns": pidns,
            "userns2": userns2,
            "argv0": argv0,
            "forward_signals": forward_signals,
            "disable_userns": disable_userns,
            "assert_userns_disabled": assert_userns_disabled,
            "userns_block_fd": userns_block_fd,
            "exec_label": exec_label,
            "file_label": file_label,
        }
        for name, value in given.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        """Check every option and store it in its normal form (tuples, frozensets)."""
        self._validate_ids()
        self._validate_switches()
        self._validate_uts()
        self._validate_mounts()
        self._validate_process()
        self._validate_limits()
        self._validate_seccomp()
        self._validate_held()
        self._validate_nesting()
        flags = CloneFlag(0)
        for name in self.new:
            flags |= NAMESPACES[name]
        object.__setattr__(self, "_flags", flags)

    def _validate_ids(self) -> None:
        put = object.__setattr__
        put(self, "new", check_new(self.new))
        for name in ("uid", "gid"):
            value = getattr(self, name)
            if value is not None:
                check_id(value, name)
        put(self, "uid_map", check_idmap(self.uid_map, "uid_map"))
        put(self, "gid_map", check_idmap(self.gid_map, "gid_map"))
        user = "user" in self.new
        if (self.uid_map or self.gid_map) and not user:
            raise ValueError("uid_map/gid_map need a user namespace: add 'user' to new")

    def _validate_switches(self) -> None:
        for name in ("init", "die_with_parent", "no_new_privs", "new_session", "export_pwd"):
            check_bool(getattr(self, name), name)
        check_bool(self.forward_signals, "forward_signals")
        check_bool(self.clearenv, "clearenv")
        check_bool(self.close_fds, "close_fds")
        if self.new_root is not None:
            check_bool(self.new_root, "new_root")

    def _validate_uts(self) -> None:
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

    def _validate_mounts(self) -> None:
        put = object.__setattr__
        put(self, "proc", None if self.proc is None else check_path(self.proc, "proc"))
        put(self, "dev", None if self.dev is None else check_path(self.dev, "dev"))
        put(self, "tmpfs", check_paths(self.tmpfs, "tmpfs"))
        put(self, "bind", check_pairs(self.bind, "bind", src_absolute=False))
        put(self, "ro_bind", check_pairs(self.ro_bind, "ro_bind", src_absolute=False))
        put(self, "dev_bind", check_pairs(self.dev_bind, "dev_bind", src_absolute=False))
        put(self, "symlink", check_pairs(self.symlink, "symlink", src_absolute=False))
        put(self, "ops", check_ops(self.ops))
        if self.chdir is not None:
            put(self, "chdir", check_path(self.chdir, "chdir"))
        put(self, "start_dirs", check_paths(self.start_dirs, "start_dirs"))
        binds = self.bind + self.ro_bind + self.dev_bind
        mounts = self.proc or self.dev or self.tmpfs or binds or self.symlink or self.ops
        if (mounts or self.new_root) and "mnt" not in self.new:
            raise ValueError("mount options need a mount namespace: add 'mnt' to new")
        writers = {op.kind for op in self.ops if op.kind not in OVER_TREE_KINDS}
        if self.new_root is False and (self.dev or self.symlink or writers):
            raise ValueError(
                "dev, symlink, dir, file, bind_data, ro_bind_data, chmod and the overlays "
                "need a new root (they would write to the host's tree, or need the "
                "staging root): leave new_root unset or True"
            )
        dests = [d for d in (self.proc, self.dev) if d] + list(self.tmpfs)
        dests += [d for _, d in binds + self.symlink]
        seen = set()
        for dest in dests:
            if dest in seen:
                raise ValueError(f"two mounts or links have the same destination {dest!r}")
            seen.add(dest)
        for dest in [d for d in (self.proc, self.dev) if d] + [d for _, d in self.symlink]:
            if dest == "/":
                raise ValueError(
                    "'/' can be the destination of a bind, ro_bind, dev_bind or tmpfs only"
                )

    def _validate_process(self) -> None:
        put = object.__setattr__
        put(self, "cap_drop", check_caps(self.cap_drop))
        put(self, "cap_add", check_caps(self.cap_add, "cap_add"))
        both = sorted(self.cap_drop & self.cap_add)
        if both:
            raise ValueError(f"{', '.join(both)} both in cap_drop and cap_add: choose one")
        put(self, "rlimits", check_rlimits(self.rlimits))
        put(self, "setenv", check_setenv(self.setenv))
        put(self, "unsetenv", check_names(self.unsetenv, "unsetenv"))
        both = sorted(set(self.unsetenv) & {name for name, _ in self.setenv})
        if both:
            raise ValueError(f"{', '.join(both)} both in setenv and unsetenv: choose one")
        put(self, "pass_fds", check_fds(self.pass_fds))
        if self.argv0 is not None:
            if not isinstance(self.argv0, str):
                raise TypeError(f"argv0 must be a str, not {self.argv0!r}")
            if "\0" in self.argv0:
                raise ValueError(f"argv0 must not contain NUL, not {self.argv0!r}")

    def _validate_limits(self) -> None:
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
                object.__setattr__(self, "cpu_max", (cpu[0], cpu[1]))

    def _validate_seccomp(self) -> None:
        object.__setattr__(self, "seccomp_deny", check_names(self.seccomp_deny, "seccomp_deny"))
        if isinstance(self.seccomp_errno, bool) or not isinstance(self.seccomp_errno, int):
            raise TypeError(f"seccomp_errno must be an int, not {self.seccomp_errno!r}")
        if not 0 < self.seccomp_errno < 4096:
            raise ValueError("seccomp_errno must be an errno between 1 and 4095")
        programs = check_programs(self.seccomp_programs, "seccomp_programs")
        object.__setattr__(self, "seccomp_programs", programs)

    def _validate_held(self) -> None:
        object.__setattr__(self, "lock_file", check_paths(self.lock_file, "lock_file"))
        for name in ("sync_fd", "block_fd", "userns", "pidns", "userns2"):
            value = getattr(self, name)
            if value is not None:
                check_fds([value], name)
        if self.lock_file and not self.init:
            # the init holds the locks: the command's exec would drop them
            raise ValueError("lock_file needs the sandbox's init: leave init=True")
        if self.userns is not None and "user" in self.new:
            raise ValueError("userns joins a user namespace: remove 'user' from new")

    def _validate_nesting(self) -> None:
        """The options about user namespaces inside the sandbox (bwrap's rules), and labels."""
        check_bool(self.disable_userns, "disable_userns")
        check_bool(self.assert_userns_disabled, "assert_userns_disabled")
        user = "user" in self.new
        if self.disable_userns:
            if not user:
                raise ValueError(
                    "disable_userns needs the sandbox's own user namespace: add 'user' to new"
                )
            for name in ("uid_map", "gid_map"):
                ranges = getattr(self, name) or ()
                if sum(count for _, _, count in ranges) > 1:
                    # the nested namespace maps its own ids from inside, which the kernel
                    # allows for one id only
                    raise ValueError(
                        f"disable_userns maps only the sandbox's own uid and gid into its "
                        f"nested user namespace: {name} must map one id"
                    )
        if self.userns_block_fd is not None:
            check_fds([self.userns_block_fd], "userns_block_fd")
            if not user:
                raise ValueError(
                    "userns_block_fd waits for a new user namespace: add 'user' to new"
                )
            if self.uid_map or self.gid_map:
                raise ValueError(
                    "userns_block_fd leaves the id maps to whoever writes to it: "
                    "give no uid_map/gid_map"
                )
            if self.disable_userns:
                raise ValueError("disable_userns is not compatible with userns_block_fd")
        check_label(self.exec_label, "exec_label")
        check_label(self.file_label, "file_label")

    # -- a frozen value ----------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"a Sandbox is frozen: cannot set {name!r} (replace() makes a copy)")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"a Sandbox is frozen: cannot delete {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Description)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    # -- presentation ------------------------------------------------------

    def __repr__(self) -> str:
        parts = []
        for name in FIELDS:
            value = getattr(self, name)
            if value == getattr(Description, name):
                continue
            if isinstance(value, frozenset):
                value = sorted(value)
            parts.append(f"{name}={value!r}")
        return f"Sandbox({', '.join(parts)})"

    def _root_mode(self) -> bool:
        if self.new_root is not None:
            return self.new_root
        if any(op.kind not in MOUNT_ONLY_KINDS for op in self.ops):
            return True
        return bool(self.bind or self.ro_bind or self.dev_bind or self.symlink or self.dev)


#: The options, in the order of the keyword arguments (a repr lists them so).
FIELDS: tuple[str, ...] = tuple(vars(Description)["__init__"].__kwdefaults__)
