"""pyclone.Sandbox, SandboxError and ``python -m pyclone run``, against the real kernel.

Isolation checks run as root and, where the kernel allows it, as uid 65534
(a forked child that drops its ids and reports back through a pipe).
"""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401  (uid 65534 cannot import from /root's stdlib later)
import errno
import os
import pickle
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pyclone
from pyclone import Sandbox, SandboxError
from tests.conftest import WAIT, Health, require_root

NOBODY = 65534
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PYTHON = "/usr/bin/python3.11"
PR_SET_DUMPABLE = 4

#: the bwrap line of the issue, as one expression
BWRAP_LIKE = dict(
    new="all",
    ro_bind=[("/usr", "/usr")],
    symlink=[("usr/bin", "/bin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64")],
    proc="/proc",
    dev="/dev",
    tmpfs=["/tmp"],
)
BWRAP_ARGS = [
    "--unshare-all",
    "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/bin", "/bin",
    "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64",
    "--proc", "/proc",
    "--dev", "/dev",
    "--tmpfs", "/tmp",
]  # fmt: skip


# -- running a check as an unprivileged user ------------------------------------


def _read_all(fd: int, deadline: float) -> bytes:
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no answer from the unprivileged child in time")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(data)
        data += chunk


def _reap(pid: int, deadline: float) -> int:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not end in time")
        time.sleep(0.01)


def as_nobody(fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a forked child running as uid/gid 65534; return its value."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            # A process that changed ids is not dumpable, so its children's
            # /proc/PID/uid_map would stay root's; a real login of 65534 is.
            pyclone._pyclone.prctl(PR_SET_DUMPABLE, 1)
            outcome: tuple[Any, ...] = ("ok", fn(*args))
        except BaseException as exc:
            outcome = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        try:
            data = pickle.dumps(outcome)
        except Exception as exc:
            data = pickle.dumps(("error", f"unpicklable: {exc}", ""))
        with contextlib.suppress(OSError):
            os.write(w, data)
        os._exit(0)
    os.close(w)
    deadline = time.monotonic() + WAIT
    try:
        data = _read_all(r, deadline)
    finally:
        os.close(r)
        _reap(pid, deadline)
    outcome = pickle.loads(data)
    if outcome[0] == "error":
        raise AssertionError(f"as uid {NOBODY}: {outcome[1]}\n{outcome[2]}")
    return outcome[1]


def _userns_probe() -> bool:
    try:
        return Sandbox(new="user", no_new_privs=False).spawn(lambda: 0).result(WAIT) == 0
    except OSError:
        return False


_NOBODY_USERNS: bool | None = None


def require_nobody_userns() -> None:
    """Skip unless uid 65534 can create user namespaces here."""
    global _NOBODY_USERNS
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to uid 65534 for the unprivileged run")
    if _NOBODY_USERNS is None:
        _NOBODY_USERNS = bool(as_nobody(_userns_probe))
    if not _NOBODY_USERNS:
        pytest.skip("unprivileged user namespaces are disabled on this kernel")


def run_as(who: str, fn: Callable[..., Any], *args: Any) -> Any:
    if who == "root":
        require_root()
        return fn(*args)
    require_nobody_userns()
    return as_nobody(fn, *args)


WHO = pytest.mark.parametrize("who", ["root", "nobody"])


@contextlib.contextmanager
def shared_dir(owner: int = NOBODY, mode: int = 0o755) -> Iterator[str]:
    """A temporary directory owned by ``owner`` (so uid 65534 can use it)."""
    path = tempfile.mkdtemp(prefix="pyclone-sandbox-")
    try:
        os.chown(path, owner, owner)
        os.chmod(path, mode)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- construction ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"new": "bogus"}, ValueError),
        ({"new": 3}, TypeError),
        ({"uid": -1}, ValueError),
        ({"uid": "0"}, TypeError),
        ({"uid_map": [(0, 1000)]}, TypeError),
        ({"uid_map": [(0, 1000, 0)]}, ValueError),
        ({"uid_map": [(0, 1000, 10), (5, 2000, 10)]}, ValueError),
        ({"uid_map": [(0, 0, 1)], "new": "pid"}, ValueError),
        ({"hostname": "x" * 65}, ValueError),
        ({"hostname": "box", "new": "user"}, ValueError),
        ({"hostname": 5}, TypeError),
        ({"tmpfs": ["relative"]}, ValueError),
        ({"tmpfs": [3]}, TypeError),
        ({"bind": [("/a",)]}, TypeError),
        ({"bind": "/a"}, TypeError),
        ({"ro_bind": [("/usr", "usr")]}, ValueError),
        ({"proc": "/proc", "new": "pid"}, ValueError),
        ({"dev": "/dev", "new_root": False}, ValueError),
        ({"tmpfs": ["/tmp"], "proc": "/tmp"}, ValueError),
        ({"proc": "/"}, ValueError),
        ({"cap_drop": ["CAP_FLY"]}, ValueError),
        ({"rlimits": {"bogus": 1}}, ValueError),
        ({"rlimits": {"nofile": (10, 5)}}, ValueError),
        ({"rlimits": {"nofile": "10"}}, TypeError),
        ({"setenv": {"A=B": "x"}}, ValueError),
        ({"setenv": {"A": 1}}, TypeError),
        ({"setenv": {"A": "1"}, "unsetenv": ["A"]}, ValueError),
        ({"unsetenv": [""]}, ValueError),
        ({"pass_fds": [-1]}, ValueError),
        ({"pass_fds": ["1"]}, TypeError),
        ({"init": 1}, TypeError),
        ({"memory_max": 0}, ValueError),
        ({"pids_max": "5"}, TypeError),
        ({"cpu_max": (0, 100000)}, ValueError),
        ({"cpu_max": -1.5}, ValueError),
        ({"seccomp_errno": 0}, ValueError),
        ({"seccomp_deny": [1]}, TypeError),
    ],
)
def test_bad_options_are_refused_at_construction(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        Sandbox(**kwargs)


def test_description_is_frozen_hashable_picklable_and_reads_well() -> None:
    sb = Sandbox(**BWRAP_LIKE, hostname="box", rlimits={"nofile": 64}, setenv={"A": "1"})
    assert pickle.loads(pickle.dumps(sb)) == sb
    assert hash(sb) == hash(
        Sandbox(**BWRAP_LIKE, hostname="box", rlimits={"NOFILE": 64}, setenv={"A": "1"})
    )
    with pytest.raises(AttributeError):
        sb.hostname = "other"  # type: ignore[misc]
    text = repr(sb)
    assert text.startswith(
        "Sandbox(new=['cgroup', 'ipc', 'mnt', 'net', 'pid', 'time', 'user', 'uts']"
    )
    assert "ro_bind=(('/usr', '/usr'),)" in text and "hostname='box'" in text
    assert "no_new_privs" not in text  # defaults are left out
    assert repr(Sandbox()) == "Sandbox()"
    assert sb.rlimits == (("nofile", 64, 64),)


def test_sandbox_error_is_a_picklable_oserror() -> None:
    exc = SandboxError("mount /proc", errno.EPERM, "Operation not permitted", "/proc")
    assert isinstance(exc, OSError)
    back = pickle.loads(pickle.dumps(exc))
    assert (back.step, back.errno, back.strerror, back.filename) == (
        "mount /proc",
        errno.EPERM,
        "Operation not permitted",
        "/proc",
    )
    assert str(back) == (
        "sandbox setup failed at 'mount /proc': [Errno 1] Operation not permitted: '/proc'"
    )


def test_limits_need_pyclone_cgroup() -> None:
    try:
        import pyclone.cgroup  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pyclone\.cgroup"):
            Sandbox(pids_max=5)
    else:
        assert Sandbox(pids_max=5).pids_max == 5


# -- isolation ----------------------------------------------------------------------


def _id_and_owner(outside_uid: int, **kwargs: Any) -> tuple[str, int, str]:
    with shared_dir(outside_uid if outside_uid else os.geteuid(), 0o777) as data:
        sb = Sandbox(**BWRAP_LIKE, bind=[(data, "/data")], **kwargs)
        done = sb.run(
            ["sh", "-c", "id -u; touch /data/f; cat /proc/self/uid_map"],
            capture_output=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.decode().splitlines()
        return lines[0], os.stat(os.path.join(data, "f")).st_uid, " ".join(lines[1].split())


def test_uid_0_inside_is_the_unprivileged_uid_outside() -> None:
    inside, owner, uid_map = run_as("nobody", _id_and_owner, NOBODY)
    assert inside == "0"
    assert owner == NOBODY
    assert uid_map == f"0 {NOBODY} 1"


def test_explicit_multi_range_maps_as_root(healthy: Health) -> None:
    require_root()
    maps = [(0, 100000, 1000), (1000, 1000, 1)]
    inside, owner, uid_map = _id_and_owner(100000, uid_map=maps, gid_map=maps)
    assert inside == "0"
    assert owner == 100000
    assert uid_map == "0 100000 1000"


def _processes() -> tuple[list[int], list[int]]:
    def inside() -> tuple[list[int], int]:
        return sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), os.getpid()

    with_init = Sandbox(new={"user", "pid", "mnt"}, proc="/proc").spawn(inside).result(WAIT)
    as_pid_1 = Sandbox(new={"user", "pid", "mnt"}, proc="/proc", init=False)
    alone = as_pid_1.spawn(inside).result(WAIT)
    assert with_init[1] == 2 and alone[1] == 1
    return with_init[0], alone[0]


@WHO
def test_only_the_sandbox_processes_are_visible(who: str) -> None:
    with_init, alone = run_as(who, _processes)
    assert with_init == [1, 2]  # the init and the target
    assert alone == [1]


def _orphans() -> tuple[int, bool]:
    def target() -> tuple[int, bool]:
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:
            orphan = os.fork()
            if orphan == 0:
                os.close(r)
                time.sleep(0.2)  # outlive the middle process, then exit
                os._exit(0)
            os.write(w, str(orphan).encode())
            os._exit(0)
        os.close(w)
        orphan = int(os.read(r, 32))
        os.waitpid(middle, 0)
        with open(f"/proc/{orphan}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{orphan}") and time.monotonic() < deadline:
            time.sleep(0.02)
        return ppid, not os.path.exists(f"/proc/{orphan}")

    with Sandbox(new={"user", "pid", "mnt"}, proc="/proc").spawn(target) as task:
        result: tuple[int, bool] = task.result(WAIT)
        return result


@WHO
def test_pid_1_reaps_orphans(who: str) -> None:
    ppid, reaped = run_as(who, _orphans)
    assert ppid == 1  # the orphan was reparented to the sandbox's init
    assert reaped  # and the init reaped it (no zombie left in /proc)


def test_init_forwards_signals_to_the_target(healthy: Health) -> None:
    r, w = os.pipe()

    def target() -> None:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(42))
        os.write(w, b"r")
        while True:
            signal.pause()

    try:
        with Sandbox(new={"user", "pid"}, pass_fds=[w]).spawn(target) as task:
            assert select.select([r], [], [], WAIT)[0], "target never became ready"
            assert os.read(r, 1) == b"r"
            task.terminate()
            assert task.wait(WAIT) == 42  # the init forwarded SIGTERM and passed 42 on
    finally:
        os.close(r)
        os.close(w)


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


def _net(port: int) -> tuple[str, bytes]:
    def inside() -> tuple[str, bytes]:
        try:
            with socket.socket() as probe:
                probe.settimeout(5)
                probe.connect(("127.0.0.1", port))
            outcome = "connected"
        except OSError as exc:
            outcome = errno.errorcode.get(exc.errno or 0, str(exc))
        # loopback is up inside: a listener of the sandbox's own is reachable
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen()
            with socket.socket() as c:
                c.settimeout(5)
                c.connect(srv.getsockname())
                c.sendall(b"hi")
                conn, _ = srv.accept()
                with conn:
                    return outcome, conn.recv(2)

    result: tuple[str, bytes] = Sandbox(new={"user", "net"}).spawn(inside).result(WAIT)
    return result


@WHO
def test_host_loopback_is_unreachable(who: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert run_as(who, _net, port) == ("ECONNREFUSED", b"hi")


def _names() -> tuple[str, str]:
    def inside() -> tuple[str, str]:
        with open("/proc/sys/kernel/domainname") as f:
            return socket.gethostname(), f.read().strip()

    sb = Sandbox(new={"user", "uts"}, hostname="box", domainname="example")
    result: tuple[str, str] = sb.spawn(inside).result(WAIT)
    return result


@WHO
def test_hostname_set_inside_is_not_seen_outside(who: str) -> None:
    before = socket.gethostname()
    assert run_as(who, _names) == ("box", "example")
    assert socket.gethostname() == before != "box"


def test_setuid_binary_gains_nothing_under_no_new_privs(healthy: Health) -> None:
    require_root("needs root to create a setuid-root binary and switch to uid 65534")
    with shared_dir(owner=0) as bindir:
        copy = os.path.join(bindir, "id")
        shutil.copy("/usr/bin/id", copy)
        os.chown(copy, 0, 0)
        os.chmod(copy, 0o4755)

        def euid(no_new_privs: bool) -> str:
            sb = Sandbox(
                new={"pid", "mnt"},
                uid=NOBODY,
                gid=NOBODY,
                no_new_privs=no_new_privs,
                ro_bind=[("/", "/")],
                proc="/proc",
            )
            done = sb.run([copy, "-u"], capture_output=True, timeout=WAIT)
            assert done.returncode == 0, done.stderr
            return done.stdout.decode().strip()

        assert euid(no_new_privs=False) == "0"  # the setuid bit works here...
        assert euid(no_new_privs=True) == str(NOBODY)  # ...and gives nothing under NNP


def _die_with_parent(sandbox: Sandbox) -> bool:
    """A middle process spawns the sandbox and is killed; does the sandbox end too?"""
    _pyclone = pyclone._pyclone
    _pyclone.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans come back to us
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:  # pragma: no cover - child
        os.close(r)
        task = sandbox.spawn(["sleep", "60"])
        os.write(w, str(task.pid).encode())
        time.sleep(60)
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], WAIT)
    assert ready
    victim = int(os.read(r, 32))
    os.close(r)
    pidfd = os.pidfd_open(victim)
    try:
        os.kill(middle, signal.SIGKILL)
        os.waitpid(middle, 0)
        died = bool(select.select([pidfd], [], [], WAIT)[0])
    finally:
        os.close(pidfd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while True:
                os.waitpid(-1, 0)
    return died


def _die_with_parent_check(who: str) -> tuple[bool, bool]:
    """Run in a forked helper (it becomes a subreaper; the test process stays clean)."""

    def both() -> tuple[bool, bool]:
        return (
            _die_with_parent(Sandbox(new={"user", "pid"}, die_with_parent=True)),
            _die_with_parent(Sandbox(new={"user"}, die_with_parent=True)),
        )

    if who == "nobody":
        require_nobody_userns()
        result: tuple[bool, bool] = as_nobody(both)
        return result
    require_root()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.write(w, pickle.dumps(both()))
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + WAIT
    try:
        data = _read_all(r, deadline)
    finally:
        os.close(r)
        _reap(pid, deadline)
    result = pickle.loads(data)
    return result


@WHO
def test_killing_the_parent_kills_the_sandbox(who: str) -> None:
    assert _die_with_parent_check(who) == (True, True)


def _fork_bomb() -> tuple[int, int | None]:
    """Fork until the kernel refuses; return (children made, errno of the refusal)."""
    r, w = os.pipe()
    made, refused = 0, None
    for _ in range(64):
        try:
            pid = os.fork()
        except OSError as exc:
            refused = exc.errno
            break
        if pid == 0:  # pragma: no cover - child: wait until the bomb is over
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        made += 1
    os.close(w)
    for _ in range(made):
        os.wait()
    return made, refused


def _allocate() -> int:
    return len(b"x" * (512 << 20))  # touches every page


def _require_cgroup() -> None:
    try:
        import pyclone.cgroup  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pytest.skip("pyclone.cgroup (pyclone.Cgroup, the clone3 work) is not in this build")


def test_fork_bomb_stops_at_pids_max() -> None:
    _require_cgroup()
    require_root()
    with Sandbox(new={"user", "pid"}, pids_max=8).spawn(_fork_bomb) as task:
        made, refused = task.result(WAIT)
    assert refused == errno.EAGAIN
    assert made <= 6  # 8 tasks: the init, the target and at most 6 children


def test_allocation_beyond_memory_max_kills_only_the_sandbox() -> None:
    _require_cgroup()
    require_root()
    with Sandbox(new={"user", "pid"}, memory_max=64 << 20).spawn(_allocate) as task:
        code = task.wait(WAIT)
    # the OOM killer took the allocating target; its init survived to report it
    assert code == 128 + signal.SIGKILL


def test_capabilities_dropped_and_process_options(healthy: Health) -> None:
    r, w = os.pipe()
    stray_r, stray_w = os.pipe()
    os.set_inheritable(stray_w, True)

    def inside() -> dict[str, Any]:
        with open("/proc/self/status") as f:
            status = dict(line.split(":\t", 1) for line in f if ":\t" in line)
        return {
            "caps": {k: int(status[k], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")},
            "nnp": int(status["NoNewPrivs"]),
            "session": os.getsid(0) == os.getpid(),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "env": (os.environ.get("A"), "HOME" in os.environ, "PATH" in os.environ),
            "cwd": os.getcwd(),
            "fds": (_open(w), _open(stray_w)),
        }

    sb = Sandbox(
        new={"user", "pid", "mnt"},
        init=False,
        cap_drop="ALL",
        new_session=True,
        rlimits={"nofile": (64, 128)},
        clearenv=True,
        setenv={"A": "1"},
        unsetenv=["HOME"],
        chdir="/tmp",
        pass_fds=[w],
    )
    try:
        got = sb.spawn(inside).result(WAIT)
    finally:
        for fd in (r, w, stray_r, stray_w):
            os.close(fd)
    assert got["caps"] == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0}
    assert got["nnp"] == 1
    assert got["session"]
    assert got["nofile"] == (64, 128)
    assert got["env"] == ("1", False, False)
    assert got["cwd"] == "/tmp"
    assert got["fds"] == (True, False)  # pass_fds kept, other inherited fds closed


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_seccomp_deny_list(healthy: Health) -> None:
    pytest.importorskip("pyseccomp", reason="pyseccomp (extra pyclone[seccomp]) is not installed")

    def inside() -> int | None:
        try:
            os.getcwd()
        except OSError as exc:
            return exc.errno
        return None

    sb = Sandbox(new="user", seccomp_deny=["getcwd"], seccomp_errno=errno.EACCES)
    assert sb.spawn(inside).result(WAIT) == errno.EACCES
    with pytest.raises(ValueError, match="no_such_call"):
        Sandbox(new="user", seccomp_deny=["no_such_call"]).spawn(inside)


def test_time_and_ipc_and_cgroup_namespaces(healthy: Health) -> None:
    def inside() -> dict[str, str]:
        return {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("time", "ipc", "cgroup")}

    got = Sandbox(new={"user", "time", "ipc", "cgroup"}).spawn(inside).result(WAIT)
    for ns, link in got.items():
        assert link != os.readlink(f"/proc/self/ns/{ns}"), ns


# -- setup failures ---------------------------------------------------------------------


def _failures() -> list[tuple[str, int | None, str | None]]:
    out = []
    for sb, target in (
        (Sandbox(new={"user", "mnt"}, bind=[("/no/such/dir", "/x")]), ["true"]),
        (Sandbox(new={"user", "mnt"}, tmpfs=["/no/such/mount/point"]), ["true"]),
        (Sandbox(new={"user", "mnt"}, ro_bind=[("/usr", "/usr")], symlink=[("usr/bin", "/bin")]),
         ["no-such-program"]),
        (Sandbox(new={"user", "mnt"}, ro_bind=[("/usr", "/usr")]), ["/usr"]),
    ):  # fmt: skip
        try:
            sb.spawn(target).wait(WAIT)
            out.append(("no error", None, None))
        except SandboxError as exc:
            out.append((exc.step, exc.errno, exc.filename))
    return out


@WHO
def test_setup_failures_name_their_step(who: str) -> None:
    before = Health.take() if who == "root" else None
    assert run_as(who, _failures) == [
        ("bind /x", errno.ENOENT, "/no/such/dir"),
        ("mount tmpfs /no/such/mount/point", errno.ENOENT, "/no/such/mount/point"),
        ("exec", errno.ENOENT, "no-such-program"),
        ("exec", errno.EACCES, "/usr"),
    ]
    if before is not None:
        from tests.conftest import check_health

        check_health(before)  # nothing half-started left: no zombie, no fd


def _bad_map() -> tuple[str, int | None, str | None]:
    try:
        Sandbox(new="user", uid_map=[(0, 0, 1)]).spawn(lambda: 0).wait(WAIT)
    except SandboxError as exc:
        return exc.step, exc.errno, exc.filename
    return ("no error", None, None)


def test_bad_uid_map_is_reported_as_uid_map() -> None:
    step, err, filename = run_as("nobody", _bad_map)  # mapping outside uid 0 needs privilege
    assert (step, err) == ("uid_map", errno.EPERM)
    assert filename is not None and filename.endswith("/uid_map")


def test_callable_failure_is_still_a_child_error(healthy: Health) -> None:
    def boom() -> None:
        raise KeyError("inside")

    task = Sandbox(new="user").spawn(boom)
    with pytest.raises(pyclone.ChildError) as info:
        task.result(WAIT)
    assert isinstance(info.value.exception, KeyError)


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
    assert (uid, host) == ("0", "box")
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
    assert run_as(who, _mount_points) == sorted(["/", "/dev", *devs, "/proc", "/tmp", "/usr"])


@pytest.fixture(scope="module")
def readable_tree() -> Iterator[str]:
    """A copy of the built package that uid 65534 can read (for the system python)."""
    path = tempfile.mkdtemp(prefix="pyclone-tree-")
    try:
        shutil.copytree(os.path.join(ROOT_DIR, "pyclone"), os.path.join(path, "pyclone"))
        for dirpath, _dirnames, filenames in os.walk(path):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _cli(who: str, tree: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=tree if who == "nobody" else ROOT_DIR)
    if who == "nobody":
        require_nobody_userns()
        if not os.access(SYSTEM_PYTHON, os.X_OK):
            pytest.skip(f"{SYSTEM_PYTHON} (a python uid 65534 can run) is missing")
        python = SYSTEM_PYTHON
        extra: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    else:
        require_root()
        python = sys.executable
        extra = {}
    return subprocess.run(
        [python, "-m", "pyclone", "run", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
        cwd="/",
        check=False,
        **extra,
    )


@WHO
def test_cli_passes_the_exit_status_through(who: str, readable_tree: str) -> None:
    done = _cli(who, readable_tree, *BWRAP_ARGS, "--", "sh", "-c", "id -u; ls /; exit 7")
    assert done.returncode == 7, done.stderr
    assert done.stdout.split() == ["0", "bin", "dev", "lib", "lib64", "proc", "tmp", "usr"]


@WHO
def test_cli_reports_setup_failures(who: str, readable_tree: str) -> None:
    missing = _cli(who, readable_tree, "--ro-bind", "/usr", "/usr", "--", "no-such-program")
    assert missing.returncode == 127
    assert "'exec'" in missing.stderr and "no-such-program" in missing.stderr
    bad = _cli(who, readable_tree, "--bind", "/no/such", "/x", "--", "true")
    assert bad.returncode == 125
    assert "'bind /x'" in bad.stderr


def test_cli_help_speaks_bwrap() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyclone", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=dict(os.environ, PYTHONPATH=ROOT_DIR),
        check=True,
    )
    for option in (
        "--unshare-all", "--unshare-net", "--ro-bind SRC DEST", "--bind SRC DEST",
        "--symlink SRC DEST", "--tmpfs DEST", "--proc DEST", "--dev DEST", "--hostname",
        "--uid", "--gid", "--chdir", "--die-with-parent", "--new-session", "--cap-drop",
        "--setenv VAR VALUE", "--unsetenv", "--clearenv", "--memory-max", "--pids-max",
    ):  # fmt: skip
        assert option in done.stdout, option


def test_cli_builds_the_same_sandbox_as_the_expression() -> None:
    from pyclone.cli import build_parser
    from pyclone.sandbox import sandbox_from_args

    args = build_parser().parse_args(["run", *BWRAP_ARGS, "--", "sh"])
    expected = Sandbox(
        **{**BWRAP_LIKE, "new": {"user", "pid", "mnt", "net", "uts", "ipc", "cgroup"}}
    )
    assert sandbox_from_args(args) == expected
    assert stat.S_ISDIR(os.stat("/usr").st_mode)


def test_run_timeout_kills_and_reaps_the_sandbox(healthy: Health) -> None:
    sb = Sandbox(new={"user", "pid"})
    with pytest.raises(pyclone.TimeoutExpired):
        sb.run(["sleep", "60"], timeout=0.2, capture_output=True)
    with pytest.raises(pyclone.TimeoutExpired):
        sb.run(["sleep", "60"], timeout=0.2)
    done = sb.run(
        ["sh", "-c", "echo out; echo err >&2; kill -9 $$"], capture_output=True, timeout=WAIT
    )
    assert (done.stdout, done.stderr, done.returncode) == (b"out\n", b"err\n", 128 + signal.SIGKILL)
