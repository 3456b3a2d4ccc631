"""The mount plan: read-only binds, the bwrap-like new root, the old root detached, hardening."""

from __future__ import annotations

import errno
import os
import shutil
from typing import Any

import pytest

import pyclone
from pyclone import Sandbox
from pyclone.sandbox import FsOp

from conftest import WAIT, Health, become_nobody, require_root
from sandbox_helpers import (
    BWRAP_ARGS,
    BWRAP_LIKE,
    NOBODY,
    WHO,
    in_fork,
    run_as,
    run_tool,
    setuid_root_copy,
    shared_dir,
)


def _ro_write(data: str) -> tuple[int | None, int | None]:
    def inside() -> tuple[int | None, int | None]:
        codes = []
        for path in ("/ro/new-file", "/usr/new-file"):
            try:
                open(path, "w").close()
                codes.append(None)
            except OSError as exc:
                codes.append(exc.errno)
        return codes[0], codes[1]

    sb = Sandbox(new={"user", "mnt"}, ro_bind=[(data, "/ro"), ("/usr", "/usr")])
    result: tuple[int | None, int | None] = sb.spawn(inside).result(WAIT)
    return result


@WHO
def test_writing_to_a_ro_bind_fails_with_erofs(who: str) -> None:
    with shared_dir(mode=0o777) as data:
        assert run_as(who, _ro_write, data) == (errno.EROFS, errno.EROFS)
        assert os.listdir(data) == []


# -- the bwrap-equivalent line, as an expression and as a command -----------------------


def _bwrap_expression() -> tuple[int, str]:
    sb = Sandbox(**BWRAP_LIKE, hostname="box")
    done = sb.run(
        ["sh", "-c", "id -u; hostname; ls /; echo /proc/[0-9]*; touch /tmp/ok; exit 3"],
        capture_output=True,
        timeout=WAIT,
    )
    return done.returncode, done.stdout.decode()


@WHO
def test_bwrap_equivalent_expression(who: str) -> None:
    code, out = run_as(who, _bwrap_expression)
    assert code == 3
    uid, host, *listing, init, sh = out.split()
    assert (uid, host) == ("0" if who == "root" else str(NOBODY), "box")  # the caller's uid
    assert listing == ["bin", "dev", "lib", "lib64", "proc", "tmp", "usr"]
    assert (init, sh) == ("/proc/1", "/proc/2")  # only the sandbox's init and its shell


def _mount_points() -> list[str]:
    def inside() -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return sorted(line.split()[4] for line in f)

    result: list[str] = Sandbox(**BWRAP_LIKE).spawn(inside).result(WAIT)
    return result


@WHO
def test_old_root_is_detached(who: str) -> None:
    devs = [f"/dev/{n}" for n in ("full", "null", "pts", "random", "shm", "tty", "urandom", "zero")]
    # the parts of /proc bound read-only over themselves (those this kernel has)
    covered = [f"/proc/{n}" for n in ("sys", "sysrq-trigger", "irq", "bus")]
    covered = [p for p in covered if os.path.lexists(p)]
    expected = ["/", "/dev", *devs, "/proc", *covered, "/tmp", "/usr"]
    assert run_as(who, _mount_points) == sorted(expected)


# -- hardening: the flags of every mount, against bwrap's -------------------------------

_FLAGS = {"ro", "rw", "nosuid", "nodev", "noexec"}


def _mount_table(who: str, tool: str, line: list[str]) -> dict[str, set[str]]:
    done = run_tool(who, tool, *line, "cat", "/proc/self/mountinfo")
    assert done.returncode == 0, (tool, done.stderr)
    table = {}
    for row in done.stdout.splitlines():
        fields = row.split()
        table[fields[4]] = set(fields[5].split(",")) & _FLAGS
    return table


_LINE_FLAGS = {"/rw": {"rw", "nosuid", "nodev"}, "/ro": {"ro", "nosuid", "nodev"}}
_LINE_FLAGS |= {"/devnull": {"rw", "nosuid"}, "/dev/null": {"rw", "nosuid"}}
_LINE_FLAGS |= {"/dev": {"rw", "nosuid", "nodev", "noexec"}, "/usr": {"ro", "nosuid", "nodev"}}


@WHO
def test_mount_flags(who: str) -> None:
    """nosuid, nodev and ro where bwrap has them (compared with bwrap's where installed)."""
    with shared_dir(mode=0o755) as data:
        line = [
            *BWRAP_ARGS,
            "--bind", data, "/rw",
            "--ro-bind", data, "/ro",
            "--dev-bind", "/dev/null", "/devnull",
        ]  # fmt: skip
        ours = _mount_table(who, "pyclone", line)
        theirs = _mount_table(who, "bwrap", line) if shutil.which("bwrap") else {}
    for point, flags in _LINE_FLAGS.items():
        assert ours[point] == flags, point
    for point in ("/proc/sys", "/proc/irq", "/proc/bus"):
        if os.path.lexists(point):
            assert {"ro", "nosuid", "nodev"} <= ours[point], point
    for point, flags in theirs.items():
        assert point in ours, point
        # the same, but that pyclone's /dev tmpfs is also noexec
        assert ours[point] - flags <= {"noexec"} and flags <= ours[point], point
    # pyclone covers /proc/sys, sysrq-trigger, irq and bus always; bwrap only
    # those access(W_OK) calls writable (not /proc/sys, whose top directory
    # answers EACCES, nor, for 65534, irq and bus); /dev/shm is a tmpfs of its own
    covered = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")
    for point in set(ours) - set(theirs) if theirs else ():
        assert point in (*covered, "/dev/shm"), point
        assert {"nosuid", "nodev"} <= ours[point]
        assert point == "/dev/shm" or "ro" in ours[point]


def test_file_mount_points_are_read_only_like_bwraps(healthy: Health) -> None:
    require_root()
    with shared_dir(owner=0) as data:
        path = os.path.join(data, "f")
        open(path, "w").close()
        line = [*BWRAP_ARGS, "--bind", path, "/x/f"]
        modes = [
            run_tool("root", tool, *line, "sh", "-c", "umount /x/f && stat -c %a /x/f").stdout
            for tool in ("bwrap", "pyclone")
        ]
    assert modes == ["444\n", "444\n"]


def test_setuid_bit_is_ignored_in_every_bind(healthy: Health) -> None:
    require_root("needs root to create a setuid-root binary and switch to uid 65534")
    with shared_dir(owner=0) as bindir:
        copy = setuid_root_copy("/usr/bin/id", bindir)
        for kind in ("bind", "ro_bind", "dev_bind"):
            sb = Sandbox(
                new={"pid", "mnt"},
                uid=NOBODY,
                gid=NOBODY,
                no_new_privs=False,  # only the mount's nosuid stands in the way
                **{kind: [("/", "/")]},
            )
            done = sb.run([copy, "-u"], capture_output=True, timeout=WAIT)
            assert done.returncode == 0, done.stderr
            assert done.stdout.decode().strip() == str(NOBODY), kind


def _proc_without_pid_namespace(host_pid: int) -> dict[str, Any]:
    def inside() -> dict[str, Any]:
        out: dict[str, Any] = {"host process": os.path.exists(f"/proc/{host_pid}/status")}
        for path in ("/proc/sys/kernel/hostname", "/proc/irq/default_smp_affinity"):
            try:
                with open(path, "w") as f:
                    f.write("x")
                out[path] = "written"
            except OSError as exc:
                out[path] = errno.errorcode.get(exc.errno or 0, str(exc))
        return out

    # no pid namespace: an unprivileged sandbox may not mount a new procfs
    sb = Sandbox(new={"user", "mnt", "uts"}, new_root=True, proc="/proc")
    got: dict[str, Any] = sb.spawn(inside).result(WAIT)
    return got


@WHO
def test_proc_falls_back_to_the_hosts_and_its_knobs_are_read_only(who: str) -> None:
    got = run_as(who, _proc_without_pid_namespace, os.getpid())
    assert got["host process"]  # the host's /proc (it shares the pid namespace anyway)
    assert got["/proc/sys/kernel/hostname"] == "EROFS"
    if os.path.exists("/proc/irq/default_smp_affinity"):
        assert got["/proc/irq/default_smp_affinity"] == "EROFS"


@WHO
def test_command_line_root_holds_only_what_the_options_put_there(who: str) -> None:
    usr = [
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
    ]  # fmt: skip
    done = run_tool(who, "pyclone", "--unshare-all", *usr, "sh", "-c", "ls -A /")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["bin", "lib", "lib64", "usr"]
    # nothing at all: not even a program to run (bwrap says the same)
    bare = run_tool(who, "pyclone", "--unshare-all", "/usr/bin/true")
    assert bare.returncode == 1, bare.stderr
    assert "No such file or directory" in bare.stderr


def _ro_bind_over_a_locked_submount(base: str) -> tuple[int | None, bool]:
    m = pyclone._pyclone
    m.unshare(pyclone.CLONE_NEWNS)
    m.mount(None, "/", None, m.MS_REC | m.MS_PRIVATE)
    locked = os.path.join(base, "locked")
    os.mkdir(locked, 0o700)  # root's: uid 65534 cannot search it
    os.mkdir(os.path.join(locked, "sub"))
    m.mount("tmpfs", os.path.join(locked, "sub"), "tmpfs", 0)
    become_nobody()

    def inside() -> tuple[int | None, bool]:
        try:
            open("/ro/new-file", "w").close()
            code = None
        except OSError as exc:
            code = exc.errno
        return code, os.access("/ro/locked", os.X_OK)

    got: tuple[int | None, bool] = (
        Sandbox(new={"user", "mnt"}, ro_bind=[(base, "/ro")]).spawn(inside).result(WAIT)
    )
    return got


def test_a_submount_the_caller_cannot_reach_does_not_stop_a_ro_bind() -> None:
    """A submount under a directory uid 65534 cannot search is left as it is, as bwrap does.

    The bind itself is still read-only, and the submount stays out of reach.
    """
    require_root()
    with shared_dir(mode=0o755) as base:
        assert in_fork(_ro_bind_over_a_locked_submount, base) == (errno.EROFS, False)


def _bind_over_a_submount(base: str, other: str) -> bool:
    m = pyclone._pyclone
    m.unshare(pyclone.CLONE_NEWNS)
    m.mount(None, "/", None, m.MS_REC | m.MS_PRIVATE)
    os.makedirs(os.path.join(base, "d", "sub"))
    m.mount("tmpfs", os.path.join(base, "d", "sub"), "tmpfs", 0)
    open(os.path.join(other, "mark"), "w").close()

    def inside() -> bool:
        return os.path.exists("/a/d/mark") and not os.path.exists("/a/d/sub")

    sb = Sandbox(new={"user", "mnt"}, bind=[(base, "/a"), (other, "/a/d")])
    got: bool = sb.spawn(inside).result(WAIT)
    return got


def test_a_bind_may_cover_a_submount_of_an_earlier_bind() -> None:
    """The covered submount was restricted with the first bind; the second bind hides it."""
    require_root()
    with shared_dir(mode=0o755) as base, shared_dir(mode=0o755) as other:
        assert in_fork(_bind_over_a_submount, base, other) is True


# -- ordered operations (ops=, the command line's order) -------------------------------------


def _ordered_ops_inside() -> dict[str, Any]:
    def mode(path: str) -> int:
        return os.stat(path).st_mode & 0o7777

    def ro_write(path: str) -> int | None:
        try:
            with open(path, "w") as f:
                f.write("x")
        except OSError as exc:
            return exc.errno
        return None

    size = os.statvfs("/s")
    with open("/t/f") as f, open("/t/bd") as bd, open("/t/ro") as ro:
        data = (f.read(), bd.read(), ro.read())
    umask = os.umask(0)
    return {
        "covered": os.path.exists("/t/gone"),
        "modes": [mode(p) for p in ("/s", "/t", "/t/a", "/t/a/b", "/t/a/c", "/t/f", "/t/bd")],
        "size": size.f_blocks * size.f_frsize,
        "data": data,
        "writes": (ro_write("/t/bd"), ro_write("/t/ro")),
        "umask": umask,
        "nosuid": bool(os.statvfs("/t/ro").f_flag & os.ST_NOSUID),
    }


def _ordered_ops() -> dict[str, Any]:
    os.umask(0o027)  # the command gets it back; the operations are not masked by it
    sb = Sandbox(
        ops=[
            ("tmpfs", "/t"),
            ("file", "/t/gone", None, None, b"x"),
            ("tmpfs", "/t"),  # covers the first one and what was made in it
            ("tmpfs", "/s", None, 0o1777, None, 1 << 20),
            ("dir", "/t/a/b", None, 0o700),  # its parent /t/a: 0700 too
            ("symlink", "/t/link", "a"),
            ("dir", "/t/link/c"),  # through the symlink: /t/a/c
            ("chmod", "/t/a/b", None, 0o1711),
            ("file", "/t/f", None, 0o640, b"file"),
            ("bind_data", "/t/bd", None, None, b"rw"),
            ("ro_bind_data", "/t/ro", None, None, b"ro"),
        ]
    )
    got: dict[str, Any] = sb.spawn(_ordered_ops_inside).result(WAIT)
    return got


@WHO
def test_ops_apply_in_order_with_bwraps_modes(who: str) -> None:
    got = run_as(who, in_fork, _ordered_ops)
    assert got["covered"] is False
    assert got["modes"] == [0o1777, 0o755, 0o700, 0o1711, 0o755, 0o640, 0o600]
    assert got["size"] == 1 << 20
    assert got["data"] == ("file", "rw", "ro")
    assert got["writes"] == (None, errno.EROFS)  # ro_bind_data stays read-only
    assert got["umask"] == 0o027 and got["nosuid"]


def _bind_through_a_symlink() -> list[bool]:
    def inside() -> list[bool]:
        points = [p for p in ("/t/real/dev", "/t/real/proc", "/t/real/sys") if os.path.ismount(p)]
        assert points, "the host's root has no submount to check"
        want = os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV
        return [os.statvfs(p).f_flag & want == want for p in ["/t/real", *points]]

    sb = Sandbox(
        ops=[
            ("tmpfs", "/t"),
            ("dir", "/t/real"),
            ("symlink", "/t/link", "real"),
            ("ro_bind", "/t/link", "/"),  # mounted where the link leads: its submounts too
        ]
    )
    got: list[bool] = sb.spawn(inside).result(WAIT)
    return got


@WHO
def test_a_bind_on_a_symlink_restricts_the_submounts_where_it_lands(who: str) -> None:
    assert all(run_as(who, in_fork, _bind_through_a_symlink))


def _failing_op(ops: list[tuple[Any, ...]]) -> tuple[str, int | None]:
    try:
        Sandbox(ops=ops).run(["true"], timeout=WAIT)
    except pyclone.SandboxError as exc:
        return exc.step, exc.errno
    return "ran", None


@pytest.mark.parametrize(
    ("ops", "step", "code"),
    [
        ([("tmpfs", "/t"), ("dir", "/t/d"), ("remount_ro", "/t/d")], "remount_ro /t/d", "EINVAL"),
        ([("file", "/f", None, None, b""), ("dir", "/f")], "dir /f", "ENOTDIR"),
        ([("chmod", "/missing", None, 0o700)], "chmod /missing", "ENOENT"),
        ([("symlink", "/l", "a"), ("symlink", "/l", "b")], "symlink /l", "EEXIST"),
        ([("tmpfs", "/t"), ("remount_ro", "/t"), ("dir", "/t/d")], "dir /t/d", "EROFS"),
    ],
)
def test_a_failing_op_names_its_step(ops: list[tuple[Any, ...]], step: str, code: str) -> None:
    assert run_as("nobody", _failing_op, ops) == (step, getattr(errno, code))


# -- try binds, descriptor binds, mqueue ------------------------------------------------


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _binds_of_descriptors(directory: str) -> tuple[list[str], bool, bool, bool, list[str]]:
    bound = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    passed = os.open(directory, os.O_PATH | os.O_CLOEXEC)

    def inside() -> tuple[list[str], bool, bool]:
        return os.listdir("/d"), _is_open(bound), _is_open(passed)

    try:
        sb = Sandbox(
            new={"user", "mnt"},
            close_fds=False,  # so that only the bind's own closing can close it
            pass_fds=[passed],
            ops=[FsOp("bind_fd", "/d", fd=bound), FsOp("ro_bind_fd", "/p", fd=passed)],
        )
        listing, bound_inside, passed_inside = sb.spawn(inside).result(WAIT)
        return listing, bound_inside, passed_inside, _is_open(bound), os.listdir(directory)
    finally:
        os.close(bound)
        os.close(passed)


@WHO
def test_a_descriptor_bind_closes_the_sandboxs_copy_only(who: str) -> None:
    with shared_dir() as directory:
        open(os.path.join(directory, "f"), "w").close()
        listing, bound_inside, passed_inside, bound_outside, _ = run_as(
            who, _binds_of_descriptors, directory
        )
    assert listing == ["f"]
    assert not bound_inside  # closed once bound, as bwrap closes it
    assert passed_inside  # given to the sandbox (pass_fds): kept
    assert bound_outside  # the caller's own stays open


def _sources(directory: str) -> tuple[list[str], bool, bool]:
    def inside() -> tuple[list[str], bool, bool]:
        return os.listdir("/x"), os.path.lexists("/y"), os.path.lexists("/w")

    sb = Sandbox(
        new={"user", "mnt"},
        # an absolute symlink in a source is the host's: resolved before the new root
        ro_bind=[(os.path.join(directory, "link"), "/x")],
        ops=[
            ("bind_try", "/y/z", "/nonexistent-pyclone"),
            ("dev_bind_try", "/w", os.path.join(directory, "dangling")),
        ],
    )
    got: tuple[list[str], bool, bool] = sb.spawn(inside).result(WAIT)
    return got


@WHO
def test_sources_are_the_hosts_and_a_missing_try_source_is_skipped(who: str) -> None:
    with shared_dir() as directory:
        os.mkdir(os.path.join(directory, "dir"))
        open(os.path.join(directory, "dir", "f"), "w").close()
        os.symlink(os.path.join(directory, "dir"), os.path.join(directory, "link"))
        os.symlink("/nowhere-pyclone-test", os.path.join(directory, "dangling"))
        assert run_as(who, _sources, directory) == (["f"], False, False)


def _failing_source(ops: list[FsOp]) -> tuple[str, int | None, str | None]:
    try:
        Sandbox(new={"user", "mnt"}, ops=ops).spawn(lambda: 0).result(WAIT)
    except pyclone.SandboxError as exc:
        return exc.step, exc.errno, exc.filename
    return "ran", None, None


@WHO
def test_a_source_that_cannot_be_found_fails_its_bind(who: str) -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        cases = [
            (FsOp("bind_try", "/x", "/etc/passwd/x"), errno.ENOTDIR, "/etc/passwd/x"),
            (FsOp("ro_bind_fd", "/x", fd=read_end), errno.ENOENT, f"/proc/self/fd/{read_end}"),
        ]
        for op, code, name in cases:
            assert run_as(who, _failing_source, [op]) == (f"{op.kind} /x", code, name)
    finally:
        os.close(read_end)


def _mqueue() -> tuple[str, bool]:
    def inside() -> tuple[str, bool]:
        with open("/mq/q", "w"):  # open(O_CREAT) on an mqueue makes a queue
            pass
        with open("/mq/q") as f:
            status = f.read().split()[0]
        hardened = os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC
        return status, os.statvfs("/mq").f_flag & hardened == hardened

    sb = Sandbox(new={"user", "mnt", "ipc"}, ops=[("mqueue", "/mq")], new_root=True)
    got: tuple[str, bool] = sb.spawn(inside).result(WAIT)
    return got


@WHO
def test_mqueue_is_the_new_ipc_namespaces_and_hardened(who: str) -> None:
    assert run_as(who, _mqueue) == ("QSIZE:0", True)
