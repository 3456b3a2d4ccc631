"""The mount plan: which mounts and links a sandbox makes, in what order, and making them.

Runs in the child, inside its new mount namespace.  With a new root the tree
is assembled under a staging tmpfs entered with pivot_root(2); the host's
root stays reachable under ``/oldroot`` until it is detached.  Every bind
(and each of its submounts) is nosuid, and nodev unless it is a dev_bind, as
bwrap's are.  Bind sources are the host's paths: each is resolved (symlinks
followed, as realpath(3)) before the first operation, as bwrap resolves them.
"""

from __future__ import annotations

import errno
import os
import stat

from .. import _pyclone
from .._procfs import unescape_mountinfo
from ._description import Description
from ._fsops import (
    ALL_BIND_KINDS,
    BIND_KINDS,
    DEFAULT_MODES,
    NO_CREATE_KINDS,
    OVERLAY_KINDS,
    TRY_KINDS,
    FsOp,
    bind_flags,
    overlay_options,
    parent_mode,
    resolved,
)
from ._hold import held_fds, read_to_end
from ._status import StepReporter

_OLD = "/oldroot"
_NEW = "/newroot"
_STAGE = "/tmp"
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
#: the parts of procfs a sandbox may not write to (bwrap covers the same ones)
_PROC_COVERED = ("sys", "sysrq-trigger", "irq", "bus")
_ST_TO_MS = (
    (os.ST_RDONLY, _pyclone.MS_RDONLY),
    (os.ST_NOSUID, _pyclone.MS_NOSUID),
    (os.ST_NODEV, _pyclone.MS_NODEV),
    (os.ST_NOEXEC, _pyclone.MS_NOEXEC),
    (os.ST_NOATIME, _pyclone.MS_NOATIME),
    (os.ST_NODIRATIME, _pyclone.MS_NODIRATIME),
    (os.ST_RELATIME, _pyclone.MS_RELATIME),
)


def setup_mounts(reporter: StepReporter, sb: Description, planned: list[FsOp]) -> None:
    """Make ``/`` private, then apply the plan: over the tree, or in a new root.

    ``planned`` is :func:`operations`'s list, made by the parent (pure
    computation, which costs a fresh child a page fault for each object
    it touches).  The umask is 0 meanwhile, as in bwrap, so that what is
    created gets exactly the mode asked for; the caller's comes back for
    the command.
    """
    m = _pyclone
    with reporter.step("make / private"):
        m.mount(None, "/", None, m.MS_REC | m.MS_PRIVATE)
    ops = _find_sources(reporter, planned)
    umask = os.umask(0)
    if not sb._root_mode():
        for op in ops:
            _apply(reporter, sb, op, op.dest)
        _close_bound_fds(sb, ops)
        os.umask(umask)
        return
    reporter.prefixes = (_OLD, _NEW)
    with reporter.step("pivot_root"):
        m.mount("tmpfs", _STAGE, "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=0755")
        os.mkdir(_STAGE + _NEW)
        m.mount("tmpfs", _STAGE + _NEW, "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=0755")
        os.mkdir(_STAGE + _OLD)
        m.pivot_root(_STAGE, _STAGE + _OLD)
        os.chdir("/")
    tmp_overlays = 0
    for op in ops:
        if op.source is not None and op.kind not in ("symlink", *OVERLAY_KINDS):
            op = op._replace(source=_OLD + op.source)
        _apply(reporter, sb, op, _NEW + op.dest if op.dest != "/" else _NEW, tmp_overlays)
        tmp_overlays += op.kind == "tmp_overlay"
    _close_bound_fds(sb, ops)
    with reporter.step("pivot_root"):
        m.umount2(_OLD, m.MNT_DETACH)
        os.chdir(_NEW)
        m.pivot_root(".", ".")
        m.umount2(".", m.MNT_DETACH)
        os.chdir("/")
    reporter.prefixes = ()
    os.umask(umask)


def _find_sources(reporter: StepReporter, ops: list[FsOp]) -> list[FsOp]:
    """``ops`` with their host paths resolved in the host's tree (realpath), as bwrap does.

    Done before any operation, so that what an operation mounts never changes
    what a source names, and before the staging root hides the host's /tmp
    (overlayfs would also resolve an absolute link in its directories
    against the staging root, and its error would not say which is missing).
    A ``*_try`` bind whose source is missing (ENOENT) is left out; any other
    failure is the operation's, under the path's name.
    """
    out = []
    for op in ops:
        if op.kind in ALL_BIND_KINDS:
            assert op.source is not None
            with reporter.step(f"{op.kind} {op.dest}"):
                try:
                    op = op._replace(source=_real(op.source))
                except OSError as exc:
                    if op.kind in TRY_KINDS and exc.errno == errno.ENOENT:
                        continue
                    raise
        elif op.kind in OVERLAY_KINDS:
            with reporter.step(f"{op.kind} {op.dest}"):
                op = op._replace(
                    source=None if op.source is None else _real(op.source),
                    lower=tuple(_real(path) for path in op.lower or ()),
                    workdir=None if op.workdir is None else _real(op.workdir),
                )
        out.append(op)
    return out


def _real(path: str) -> str:
    try:
        return os.path.realpath(path, strict=True)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None


def _close_bound_fds(sb: Description, ops: list[FsOp]) -> None:
    """Close the descriptors binds were made from, as bwrap does: the command does not get them.

    0-2 stay open (closing one would hand its number to the next file opened)
    and so do those the sandbox was given or holds for the caller.
    """
    keep = {0, 1, 2, *sb.pass_fds, *held_fds(sb)}
    for fd in {op.fd for op in ops if op.fd is not None} - keep:
        os.close(fd)


def _apply(
    reporter: StepReporter, sb: Description, op: FsOp, where: str, tmp_overlays: int = 0
) -> None:
    """One operation of the plan, at ``where`` (``op.dest`` as the sandbox will see it).

    ``tmp_overlays`` is the number of tmp_overlay operations before this one.
    """
    root_mode = sb._root_mode()
    mountinfo = (_OLD if root_mode else "") + "/proc/self/mountinfo"
    kind, dest = op.kind, op.dest
    label = {"tmpfs": "mount tmpfs", "proc": "mount", "dev": "mount"}.get(kind, kind)
    with reporter.step(f"{label} {dest}"):
        is_dir = False
        if kind in ALL_BIND_KINDS:
            assert op.source is not None
            try:
                is_dir = stat.S_ISDIR(os.stat(op.source).st_mode)
            except FileNotFoundError:
                if kind in TRY_KINDS:
                    return  # gone since it was found: skipped, as bwrap skips it
                raise
        if root_mode and kind not in NO_CREATE_KINDS:
            _make_parents(where, parent_mode(op.mode))
        if kind in ALL_BIND_KINDS:
            assert op.source is not None
            if root_mode:
                _make_point(where, is_dir)
            readonly, devices = bind_flags(kind)
            _bind(op.source, where, mountinfo, readonly=readonly, devices=devices)
            if op.fd is not None:
                _check_bound_fd(op.fd, where)
        elif kind == "mqueue":
            if root_mode:
                _make_point(where, True)
            # no file there can be a device or setuid: the flags only say so
            flags = _pyclone.MS_NOSUID | _pyclone.MS_NODEV | _pyclone.MS_NOEXEC
            _pyclone.mount("mqueue", where, "mqueue", flags)
        elif kind == "tmpfs":
            if root_mode:
                _make_point(where, True)
            options = f"mode={op.mode or 0:o}" + (f",size={op.size}" if op.size else "")
            _pyclone.mount("tmpfs", where, "tmpfs", _pyclone.MS_NOSUID | _pyclone.MS_NODEV, options)
        elif kind == "proc":
            if root_mode:
                _make_point(where, True)
            _mount_proc(where, (_OLD if root_mode else "") + "/proc", mountinfo)
        elif kind == "dev":
            _make_dev(where, _OLD + "/dev", mountinfo)
        elif kind in OVERLAY_KINDS:
            _make_point(where, True)
            if kind == "tmp_overlay":
                for part in ("upper", "work"):
                    os.mkdir(f"/tmp-overlay-{part}-{tmp_overlays}", 0o755)
            options = overlay_options(op, tmp_overlays, _OLD)
            _pyclone.mount("overlay", where, "overlay", 0, options)
        elif kind == "symlink":
            assert op.source is not None
            try:
                os.symlink(op.source, where)
            except FileExistsError:
                if not os.path.islink(where) or os.readlink(where) != op.source:
                    raise  # bwrap accepts only the same link already there
        else:
            _make(op, where, mountinfo)


def _make(op: FsOp, where: str, mountinfo: str) -> None:
    """The operations that make or change one thing: dir, file, *bind_data, chmod, remount_ro."""
    mode = op.mode or 0
    if op.kind == "dir":
        _make_point(where, True, mode)
    elif op.kind == "chmod":
        os.chmod(where, mode)
    elif op.kind == "remount_ro":
        flags = _mount_flags(where) | _pyclone.MS_RDONLY
        _pyclone.mount(None, where, None, flags | _pyclone.MS_BIND | _pyclone.MS_REMOUNT)
    elif op.kind == "file":
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        _write_all(fd, op.data or b"")
    else:
        # The data lives in a file of the staging root, outside the new root,
        # unlinked once bound: the sandbox reaches it only through the bind.
        # Each one is unlinked before the next is made, so the name is always free.
        path = "/bindfile"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, mode)  # all the bits (open would not set some of them)
            _write_all(fd, op.data or b"")
            _make_point(where, False)
            _bind(path, where, mountinfo, readonly=op.kind == "ro_bind_data", devices=False)
        finally:
            os.unlink(path)


def _check_bound_fd(fd: int, where: str) -> None:
    """The mount at ``where`` is the descriptor's file (bwrap's check, and its refusal).

    The bind was made from the path the descriptor's file had (a mount
    cannot be made from a descriptor of another mount namespace), so that
    path may have been replaced meanwhile; a symlink at the destination,
    not followed here, fails the check too, as in bwrap.
    """
    held, mounted = os.fstat(fd), os.lstat(where)
    if (held.st_dev, held.st_ino) != (mounted.st_dev, mounted.st_ino):
        raise OSError(
            errno.EINVAL,
            f"what was bound is not the file of descriptor {fd} (replaced, or a symlink there)",
        )


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _bind(src: str, where: str, mountinfo: str, *, readonly: bool, devices: bool) -> None:
    """A recursive bind of ``src`` on ``where`` (a symlink there followed), then restricted.

    The submounts restricted are found from the mount on top at ``where``,
    so they are those of this bind wherever a symlink made it land.
    """
    _pyclone.mount(src, where, None, _pyclone.MS_BIND | _pyclone.MS_REC)
    _restrict(where, mountinfo, readonly=readonly, devices=devices)


def operations(sb: Description, cwd: str) -> list[FsOp]:
    """The operations in the order they are applied: the keyword ones parents first
    (by depth of the destination), then ``ops`` in their own order.

    Bind sources are made absolute against the caller's directory ``cwd``.
    """
    keyword: list[FsOp] = []
    for kind in BIND_KINDS:
        keyword += [FsOp(kind, dest, src) for src, dest in getattr(sb, kind)]
    keyword += [FsOp("tmpfs", path, mode=DEFAULT_MODES["tmpfs"]) for path in sb.tmpfs]
    if sb.proc:
        keyword.append(FsOp("proc", sb.proc))
    if sb.dev:
        keyword.append(FsOp("dev", sb.dev))
    keyword += [FsOp("symlink", link, target) for target, link in sb.symlink]
    keyword.sort(key=lambda op: op.dest.rstrip("/").count("/"))  # stable: kinds as above
    return [resolved(op, cwd) for op in (*keyword, *sb.ops)]


def _make_parents(path: str, mode: int) -> None:
    """Create the missing parents of ``path`` with ``mode`` (existing ones keep theirs)."""
    parent = os.path.dirname(path)
    if parent == path or os.path.isdir(parent):
        return
    _make_parents(parent, mode)
    _make_point(parent, True, mode)


def _make_point(path: str, is_dir: bool, mode: int = 0o755) -> None:
    """Create a mount point: a directory (``mode``), or a read-only (0444) file.

    An existing directory (or symlink to one) is kept as it is, as bwrap
    keeps it; an existing non-directory where a directory is wanted is an
    error (ENOTDIR), and any existing file will do for a file.
    """
    if is_dir:
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
        return
    if not os.path.exists(path) or os.path.isdir(path):
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))


def _mount_flags(path: str) -> int:
    """The MS_* flags of the mount at ``path``: a remount must repeat those the kernel locks."""
    flags = os.statvfs(path).f_flag
    out = 0
    for st, ms in _ST_TO_MS:
        if flags & st:
            out |= ms
    return out


def _restrict(where: str, mountinfo: str | None, *, readonly: bool, devices: bool) -> None:
    """Make a bind mount and its submounts nosuid (nodev, read-only), keeping their locked flags.

    Only flags are added: each remount repeats those the mount already has,
    which the kernel requires of a mount that came from a more privileged
    namespace.  The submounts are found in ``mountinfo``; None when the
    caller knows there are none.
    """
    m = _pyclone
    extra = m.MS_NOSUID | (0 if devices else m.MS_NODEV) | (m.MS_RDONLY if readonly else 0)
    points = [where, *(_submounts(where, mountinfo) if mountinfo is not None else ())]
    for point in points:
        try:
            flags = _mount_flags(point)
            if flags | extra != flags:
                m.mount(None, point, None, flags | extra | m.MS_BIND | m.MS_REMOUNT)
        except OSError as exc:
            # A submount that cannot be reached is left as it is: under a directory
            # this user cannot search (EACCES), which the sandbox, holding no
            # capability over the host's files, cannot search either (bwrap does
            # the same); or one the host covers with another of the tree (ENOENT).
            if point == where or exc.errno not in (errno.EACCES, errno.ENOENT):
                raise


def _submounts(where: str, mountinfo: str) -> list[str]:
    """The mount points of the mounts below the one on top at ``where``, from ``mountinfo``.

    Found by mount id, not by path: earlier mounts under ``where`` that this
    one now covers were restricted when they were made, and are no longer
    reachable by their paths.
    """
    fd = os.open(where, os.O_PATH | os.O_CLOEXEC)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            return []  # a mount on a file has nothing below it: only over it, on top
        info = _read_bytes(os.path.join(os.path.dirname(mountinfo), "fdinfo", str(fd)))
        top = next(line.split()[1] for line in info.splitlines() if line.startswith(b"mnt_id:"))
    finally:
        os.close(fd)
    # Only the ids and mount points are needed: the rest of a line is not split,
    # nor is a point decoded and unescaped unless it is below this mount.  Bytes
    # read with os.read: a text file object costs a fresh child more than the parse.
    children: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for line in _read_bytes(mountinfo).splitlines():
        mount_id, parent, _, _, point, _ = line.split(b" ", 5)
        children.setdefault(parent, []).append((mount_id, point))
    out: list[str] = []
    todo = [top]
    while todo:
        for mount_id, point in children.get(todo.pop(0), []):
            if mount_id != top:
                out.append(unescape_mountinfo(os.fsdecode(point)))
                todo.append(mount_id)
    return out


def _read_bytes(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_to_end(fd)
    finally:
        os.close(fd)


def _mount_proc(where: str, host_proc: str, mountinfo: str) -> None:
    """A new procfs, or (where the kernel refuses one: EPERM) the host's, with its knobs read-only.

    A new procfs needs the caller's pid namespace to be owned by the
    sandbox's user namespace; without a new pid namespace an unprivileged
    sandbox gets EPERM, and binds the host's /proc instead, as bwrap does.
    """
    m = _pyclone
    try:
        m.mount("proc", where, "proc", m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC)
        # a procfs just made has nothing mounted in it: the binds below have
        # no submounts to look for (one mountinfo read and parse each saved)
        below: str | None = None
    except PermissionError:
        m.mount(host_proc, where, None, m.MS_BIND | m.MS_REC)
        _restrict(where, mountinfo, readonly=False, devices=False)
        below = mountinfo  # the host's /proc/sys/fs/binfmt_misc, say
    for name in _PROC_COVERED:
        path = os.path.join(where, name)
        if os.path.lexists(path):
            m.mount(path, path, None, m.MS_BIND | m.MS_REC)
            _restrict(path, below, readonly=True, devices=False)


def _make_dev(where: str, host_dev: str, mountinfo: str) -> None:
    """A minimal /dev: host nodes bound (nosuid) into a tmpfs, a new devpts, a tmpfs shm."""
    m = _pyclone
    os.makedirs(where, mode=0o755, exist_ok=True)
    # nodev: the nodes are bind mounts of their own, which alone allow devices
    m.mount("tmpfs", where, "tmpfs", m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC, "mode=0755")
    for name in _DEV_NODES:
        node = os.path.join(where, name)
        os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
        m.mount(os.path.join(host_dev, name), node, None, m.MS_BIND)
        _restrict(node, mountinfo, readonly=False, devices=True)
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
