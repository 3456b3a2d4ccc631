"""The child's setup steps: network, uts, no_new_privs, die_with_parent, caps, seccomp, session, and
where the command starts."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import select
import signal
import socket
import termios
import time
import tty
from typing import Any

import pytest

import pyclone
from pyclone import Sandbox

from conftest import WAIT, Health, require_root
from sandbox_helpers import (
    NOBODY,
    WHO,
    as_nobody,
    in_fork,
    require_nobody_userns,
    run_as,
    setuid_root_copy,
    shared_dir,
)


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
        copy = setuid_root_copy("/usr/bin/id", bindir)

        def euid(no_new_privs: bool) -> str:
            sb = Sandbox(
                new={"pid", "mnt"},
                uid=NOBODY,
                gid=NOBODY,
                no_new_privs=no_new_privs,
                new_root=False,  # the host's tree: a bind of ours would be nosuid
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
    result = in_fork(both)
    return result


@WHO
def test_killing_the_parent_kills_the_sandbox(who: str) -> None:
    assert _die_with_parent_check(who) == (True, True)


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


def _legacy_tiocsti() -> bool:
    try:
        with open("/proc/sys/dev/tty/legacy_tiocsti") as f:
            return f.read().strip() == "1"
    except FileNotFoundError:
        return True  # kernels before 6.2 always allow it


def _tiocsti(new_session: bool | None) -> tuple[str, bytes]:
    """In a session whose controlling terminal is a new pty: TIOCSTI from the sandbox."""
    master, slave_fd = os.openpty()
    os.setsid()  # a session of our own (in_fork's child), then the pty as its terminal
    fcntl.ioctl(slave_fd, termios.TIOCSCTTY, 0)
    # raw: TIOCSTI fills the input queue within the ioctl, and a read takes
    # a byte without waiting for a newline
    tty.setraw(slave_fd)

    def inside() -> str:
        try:
            fcntl.ioctl(0, termios.TIOCSTI, b"X")
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc))
        return "injected"

    options: dict[str, Any] = {} if new_session is None else {"new_session": new_session}
    sb = Sandbox(new={"user", "pid"}, **options)
    outcome: str = sb.spawn(inside, stdin=slave_fd).result(WAIT)
    os.set_blocking(slave_fd, False)
    seen = b""
    with contextlib.suppress(BlockingIOError):
        seen = os.read(slave_fd, 64)  # what the terminal received as input
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # closing the master hangs up our session
    os.close(master)
    os.close(slave_fd)
    return outcome, seen


@WHO
def test_no_terminal_injection_by_default(who: str) -> None:
    if who == "nobody":
        require_nobody_userns()
        run = as_nobody
    else:
        require_root()
        run = in_fork
    assert run(_tiocsti, None) == ("EPERM", b"")  # a new session: not its terminal
    assert run(_tiocsti, True) == ("EPERM", b"")
    if _legacy_tiocsti():
        # bwrap's default (and new_session=False): the sandbox types into the terminal
        assert run(_tiocsti, False) == ("injected", b"X")
    else:
        assert run(_tiocsti, False)[0] == "EIO"  # this kernel refuses TIOCSTI to everyone


def _start(options: dict[str, Any]) -> tuple[str, str | None]:
    def inside() -> tuple[str, str | None]:
        return os.getcwd(), os.environ.get("PWD")

    sb = Sandbox(new={"user", "mnt"}, ro_bind=[("/usr", "/usr")], clearenv=True, **options)
    result: tuple[str, str | None] = sb.spawn(inside).result(WAIT)
    return result


@WHO
def test_start_dirs_are_tried_in_turn_and_pwd_says_where(who: str) -> None:
    tried = {"start_dirs": ["/no/such", "/usr/bin", "/usr"], "export_pwd": True}
    assert run_as(who, _start, tried) == ("/usr/bin", "/usr/bin")
    none_there = {"start_dirs": ["/no/such"], "export_pwd": True}
    assert run_as(who, _start, none_there) == ("/", "/")  # the new root's default
    chosen = {"chdir": "/usr", "start_dirs": ["/usr/bin"], "export_pwd": True}
    assert run_as(who, _start, chosen) == ("/usr", "/usr")  # chdir wins
    assert run_as(who, _start, {}) == ("/", None)  # the API's default: /, PWD left alone


def test_start_dirs_are_checked() -> None:
    with pytest.raises(ValueError, match="start_dirs must be an absolute path"):
        Sandbox(start_dirs=["relative"])
    with pytest.raises(TypeError, match="export_pwd"):
        Sandbox(export_pwd="yes")  # type: ignore[arg-type]


def _start_as_nobody(private: str) -> str:
    def inside() -> str:
        return os.getcwd()

    sb = Sandbox(new={"mnt"}, uid=65534, gid=65534, start_dirs=[private, "/"])
    result: str = sb.spawn(inside).result(WAIT)
    return result


def test_start_dir_is_entered_with_the_sandboxs_own_rights() -> None:
    """Root running the sandbox as 65534: a 0700 directory of root's is not one to start in.

    The directory is entered once the ids and capabilities are the
    sandbox's (as bwrap does), not with the caller's DAC override.
    """
    require_root()
    with shared_dir(owner=0) as top:
        private = os.path.join(top, "private")
        os.mkdir(private, 0o700)
        assert _start_as_nobody(private) == "/"
        os.chmod(private, 0o755)
        assert _start_as_nobody(private) == private  # the same, once 65534 may enter
