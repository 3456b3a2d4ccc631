"""The C module: clone(), clone3() and kcmp() against the real kernel (fork-like children)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import tempfile
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyclone
from pyclone import CloneFlag, UnsupportedFlags, clone, clone3

from conftest import WAIT, Health, check_health, reap, require_root


def exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


# -- copy semantics and sharing --------------------------------------------


def test_child_writes_its_own_copy(healthy: Health) -> None:
    buf = bytearray(b"hello from parent")

    def child() -> int:
        seen = bytes(buf)
        buf[:] = b"hello from child"
        return 0 if seen == b"hello from parent" else 3

    status = reap(clone(child, signal.SIGCHLD))
    assert exit_code(status) == 0
    assert buf == b"hello from parent"


def test_clone_fs_shares_cwd(healthy: Health, tmp_path: os.PathLike[str]) -> None:
    target = os.path.realpath(tmp_path)
    here = os.getcwd()
    try:
        status = reap(clone(lambda: os.chdir(target), CloneFlag.FS | signal.SIGCHLD))
        assert exit_code(status) == 0
        assert os.getcwd() == target
    finally:
        os.chdir(here)


def test_without_clone_fs_cwd_is_private(healthy: Health, tmp_path: os.PathLike[str]) -> None:
    here = os.getcwd()
    status = reap(clone(lambda: os.chdir(tmp_path), signal.SIGCHLD))
    assert exit_code(status) == 0
    assert os.getcwd() == here


def test_clone_files_shares_the_fd_table(healthy: Health) -> None:
    r, w = os.pipe()
    try:
        status = reap(clone(lambda: os.close(w), CloneFlag.FILES | signal.SIGCHLD))
        assert exit_code(status) == 0
        with pytest.raises(OSError) as info:
            os.fstat(w)
        assert info.value.errno == errno.EBADF
    finally:
        os.close(r)


def test_without_clone_files_closes_are_private(healthy: Health) -> None:
    r, w = os.pipe()
    try:
        status = reap(clone(lambda: os.close(w), signal.SIGCHLD))
        assert exit_code(status) == 0
        os.fstat(w)  # still open here
    finally:
        os.close(r)
        os.close(w)


# -- namespaces ----------------------------------------------------------------


def test_newuts_hostname_is_private(healthy: Health) -> None:
    require_root("CLONE_NEWUTS without CLONE_NEWUSER needs CAP_SYS_ADMIN")
    mine = socket.gethostname()

    def child() -> int:
        socket.sethostname("pyclone-box")
        return 0 if socket.gethostname() == "pyclone-box" else 4

    assert exit_code(reap(clone(child, CloneFlag.NEWUTS | signal.SIGCHLD))) == 0
    assert socket.gethostname() == mine


def test_newpid_child_is_pid_1(healthy: Health) -> None:
    require_root("CLONE_NEWPID without CLONE_NEWUSER needs CAP_SYS_ADMIN")
    status = reap(clone(lambda: 0 if os.getpid() == 1 else 5, CloneFlag.NEWPID | signal.SIGCHLD))
    assert exit_code(status) == 0


def _unprivileged(fn: object) -> int:
    """Run fn() in a forked child as uid/gid 65534 with no capabilities; its exit code."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os._exit(fn())  # type: ignore[operator]
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(99)
    return exit_code(reap(pid))


def test_newuser_works_unprivileged() -> None:
    require_root("dropping to uid 65534 needs root first")

    def attempt() -> int:
        flags = CloneFlag.NEWUSER | CloneFlag.NEWUTS | CloneFlag.NEWPID
        try:
            pid = clone(lambda: 0 if os.getpid() == 1 else 6, flags | signal.SIGCHLD)
        except PermissionError:
            return 77
        return exit_code(reap(pid))

    code = _unprivileged(attempt)
    if code == 77:
        pytest.skip("unprivileged user namespaces are disabled on this kernel")
    assert code == 0


def test_unprivileged_newuts_is_refused_with_eperm() -> None:
    require_root("dropping to uid 65534 needs root first")

    def attempt() -> int:
        try:
            clone(lambda: 0, CloneFlag.NEWUTS | signal.SIGCHLD)
        except PermissionError as exc:
            return 0 if exc.errno == errno.EPERM and "CLONE_NEWUTS" in str(exc) else 8
        return 9

    assert _unprivileged(attempt) == 0


# -- exit statuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda: None, 0),
        (lambda: 7, 7),
        (lambda: True, 1),
        (lambda: sys.exit(), 0),
        (lambda: sys.exit(9), 9),
        (lambda: sys.exit("bye"), 1),
        (lambda: 1 / 0, 1),
        (lambda: "not an int", 1),
        (lambda: os._exit(12), 12),
    ],
)
def test_exit_status(fn: object, expected: int, capfd: pytest.CaptureFixture[str]) -> None:
    assert exit_code(reap(clone(fn, signal.SIGCHLD))) == expected


def test_exception_traceback_goes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    def child() -> None:
        raise LookupError("from the child")

    assert exit_code(reap(clone(child, CloneFlag.NEWUTS | signal.SIGCHLD))) == 1
    err = capfd.readouterr().err
    assert "LookupError: from the child" in err
    assert "Traceback" in err


def test_stdout_is_flushed_and_not_duplicated(capfd: pytest.CaptureFixture[str]) -> None:
    sys.stdout.write("parent-before ")  # unflushed: must not be repeated by the child

    def child() -> int:
        sys.stdout.write("child-line")
        return 0

    assert exit_code(reap(clone(child, signal.SIGCHLD))) == 0
    out = capfd.readouterr().out
    assert out.count("parent-before") == 1
    assert "child-line" in out


def test_child_never_returns_into_callers_frames() -> None:
    marker = []
    pid = clone(lambda: 0, signal.SIGCHLD)
    marker.append(os.getpid())  # runs in the parent only
    assert exit_code(reap(pid)) == 0
    assert marker == [os.getpid()]


def test_exit_signal_other_than_sigchld_needs_wall(healthy: Health) -> None:
    received = []
    old = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    try:
        pid = clone(lambda: 3, CloneFlag.NEWUTS | signal.SIGUSR1)
        with pytest.raises(ChildProcessError):
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:  # without __WALL it is not "our" child
                os.waitpid(pid, os.WNOHANG)
                time.sleep(0.01)
        assert exit_code(reap(pid)) == 3
        assert received == [1]
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_exit_signal_zero(healthy: Health) -> None:
    assert exit_code(reap(clone(lambda: 4, 0))) == 4
    pid, pidfd = clone3(lambda: 5, exit_signal=0, pidfd=True)
    assert pidfd is not None
    os.close(pidfd)
    assert exit_code(reap(pid)) == 5


# -- glibc's view of the child ---------------------------------------------------------


@pytest.mark.parametrize("flags", [0, CloneFlag.NEWUTS, CloneFlag.IO | CloneFlag.SYSVSEM])
def test_glibc_thread_id_is_right_in_child(flags: int) -> None:
    require_root()

    def child() -> int:
        clock = time.pthread_getcpuclockid(threading.get_ident())
        time.clock_gettime(clock)
        return 0 if threading.get_native_id() == os.getpid() else 11

    assert exit_code(reap(clone(child, flags | signal.SIGCHLD))) == 0


def test_glibc_thread_id_is_right_in_child_of_a_thread() -> None:
    """A raw clone from a non-main thread: the child's glibc knows its own id, not the thread's."""
    require_root()

    def child() -> int:
        clock = time.pthread_getcpuclockid(threading.get_ident())
        time.clock_gettime(clock)
        signal.pthread_kill(threading.get_ident(), 0)  # tgkill with glibc's cached id
        return 0 if threading.get_native_id() == os.getpid() else 11

    codes: list[int] = []

    def caller() -> None:
        pid = clone(child, CloneFlag.NEWUTS | signal.SIGCHLD, allow_threads=True)
        codes.append(exit_code(reap(pid)))

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join(WAIT)
    assert codes == [0]
    # a joined thread may still be leaving the kernel's task list: let it go, so
    # that the next test's raw clone sees a single-threaded process
    deadline = time.monotonic() + WAIT
    while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
        time.sleep(0.001)


# -- CLONE_VFORK without CLONE_VM ------------------------------------------------------


def test_vfork_without_vm_waits_for_exit(healthy: Health, tmp_path: os.PathLike[str]) -> None:
    marker = os.path.join(tmp_path, "done")

    def child() -> int:
        time.sleep(0.2)
        with open(marker, "w"):
            pass
        return 0

    pid = clone(child, CloneFlag.VFORK | signal.SIGCHLD)
    assert os.path.exists(marker)  # the caller was suspended until the child ended
    assert exit_code(reap(pid)) == 0


def test_vfork_without_vm_lets_other_threads_run(healthy: Health) -> None:
    ticks = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.01)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        pid = clone(lambda: time.sleep(0.3), CloneFlag.VFORK | signal.SIGCHLD, allow_threads=True)
        during = len(ticks)
    finally:
        stop.set()
        thread.join(WAIT)
    assert exit_code(reap(pid)) == 0
    assert during >= 5, "other Python threads were frozen while the vfork child ran"


def test_vfork_ends_at_exec(healthy: Health) -> None:
    pid = clone(lambda: os.execv("/bin/sleep", ["sleep", "0.3"]), CloneFlag.VFORK | signal.SIGCHLD)
    # returned at the exec, while sleep still runs
    assert os.waitpid(pid, os.WNOHANG) == (0, 0)
    assert exit_code(reap(pid)) == 0


# -- the multi-threaded parent policy ----------------------------------------------------


def test_raw_clone_refused_in_multithreaded_process() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with pytest.raises(RuntimeError, match="allow_threads=True"):
            clone(lambda: 0, CloneFlag.NEWUTS | signal.SIGCHLD)
        # plain fork() is still fine: glibc takes its locks
        with pytest.warns(DeprecationWarning) if sys.version_info >= (3, 12) else _nothing():
            pid = clone(lambda: 0, signal.SIGCHLD)
        assert exit_code(reap(pid)) == 0
        if os.geteuid() == 0:
            pid = clone(lambda: 0, CloneFlag.NEWUTS | signal.SIGCHLD, allow_threads=True)
            assert exit_code(reap(pid)) == 0
    finally:
        stop.set()
        thread.join(WAIT)


def test_a_thread_just_joined_does_not_refuse_the_next_clone(healthy: Health) -> None:
    # the kernel releases a joined thread after the join returns; the check
    # waits for that instead of counting it as a live thread
    for _ in range(200):
        thread = threading.Thread(target=int)
        thread.start()
        thread.join(WAIT)
        pid = clone(lambda: 0, CloneFlag.NEWUTS | CloneFlag.NEWUSER | signal.SIGCHLD)
        assert exit_code(reap(pid)) == 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- argument errors ---------------------------------------------------------------------


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        clone(42, signal.SIGCHLD)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        clone(lambda: 0, "17")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        clone(lambda: 0, 1 << 64)
    with pytest.raises(ValueError, match="flags must be a non-negative int"):
        clone(lambda: 0, -1)  # a negative word would read as every flag at once
    with pytest.raises(ValueError, match="stack_size"):
        clone(lambda: 0, signal.SIGCHLD, -1)
    with pytest.raises(ValueError, match="stack_size"):
        clone(lambda: 0, signal.SIGCHLD, 1 << 40)
    with pytest.raises(TypeError):
        clone(lambda: 0, signal.SIGCHLD, bogus=True)  # type: ignore[call-arg]
    with pytest.raises(UnsupportedFlags, match="clone3"):
        clone(lambda: 0, CloneFlag.CLEAR_SIGHAND | signal.SIGCHLD)
    with pytest.raises(ValueError, match="exit_signal"):
        clone3(lambda: 0, exit_signal=65)
    with pytest.raises(ValueError, match="at most 32"):
        clone3(lambda: 0, set_tid=[1] * 33)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (CloneFlag.SETTLS, "CLONE_SETTLS"),
        (CloneFlag.THREAD | CloneFlag.SIGHAND | CloneFlag.VM, "threading.Thread"),
    ],
)
def test_refusals_say_why_and_what_instead(flags: int, needle: str) -> None:
    with pytest.raises(UnsupportedFlags, match=needle) as info:
        clone(lambda: 0, flags | signal.SIGCHLD)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("flags", "api"),
    [
        (CloneFlag.SIGHAND, "clone"),
        (CloneFlag.NEWNS | CloneFlag.FS, "clone"),
        (CloneFlag.NEWUSER | CloneFlag.FS, "clone3"),
        (CloneFlag.PIDFD | CloneFlag.PARENT_SETTID, "clone"),
    ],
)
def test_kernel_rejections_are_oserror_with_errno(healthy: Health, flags: int, api: str) -> None:
    with pytest.raises(OSError) as info:
        if api == "clone":
            clone(lambda: 0, flags | signal.SIGCHLD)
        else:
            clone3(lambda: 0, flags)
    assert info.value.errno == errno.EINVAL
    assert pyclone.flag_names(flags, api="clone3").split("|")[0] in str(info.value)
    assert str(info.value).startswith(f"[Errno {errno.EINVAL}] {api}(")


# -- clone3 and kcmp ---------------------------------------------------------------------


def test_clone3_returns_a_pidfd(healthy: Health) -> None:
    pid, pidfd = clone3(lambda: 6, CloneFlag.NEWUTS if os.geteuid() == 0 else 0, pidfd=True)
    assert pidfd is not None
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        assert info is not None and info.si_pid == pid and info.si_status == 6
    finally:
        os.close(pidfd)


def test_clone3_without_pidfd(healthy: Health) -> None:
    pid, pidfd = clone3(lambda: 0)
    assert pidfd is None
    assert exit_code(reap(pid)) == 0


def test_legacy_clone_pidfd_is_not_leaked(healthy: Health) -> None:
    assert exit_code(reap(clone(lambda: 0, CloneFlag.PIDFD | signal.SIGCHLD))) == 0


def test_kcmp_sees_sharing(healthy: Health) -> None:
    r, w = os.pipe()
    pid = clone(lambda: os.read(r, 1) and 0, CloneFlag.FILES | signal.SIGCHLD)
    try:
        me = os.getpid()
        assert pyclone.kcmp(me, pid, pyclone._pyclone.KCMP_FILES) == 0
        assert pyclone.kcmp(me, pid, pyclone._pyclone.KCMP_VM) != 0
        assert pyclone.kcmp(me, me, pyclone._pyclone.KCMP_FS) == 0
    finally:
        os.write(w, b"x")
        reap(pid)
        os.close(r)
        os.close(w)
    with pytest.raises(OSError):
        pyclone.kcmp(me, 0x7FFFFFF0, pyclone._pyclone.KCMP_VM)


def test_audit_event_is_raised() -> None:
    code = (
        "import sys, signal, os, pyclone\n"
        "seen = []\n"
        "sys.addaudithook(lambda e, a: seen.append((e, a)) if e == 'pyclone.clone' else None)\n"
        "os.waitpid(pyclone.clone(lambda: 0, signal.SIGCHLD), 0)\n"
        "print(seen)\n"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=True,
    ).stdout
    assert "('pyclone.clone', ('clone', 0, 17))" in out


# -- the property: any fork-like flag set leaves the parent as it was -------------------

FORKLIKE = [
    CloneFlag.FS,
    CloneFlag.FILES,
    CloneFlag.SIGHAND,
    CloneFlag.PIDFD,
    CloneFlag.PTRACE,
    CloneFlag.VFORK,
    CloneFlag.NEWNS,
    CloneFlag.SYSVSEM,
    CloneFlag.PARENT_SETTID,
    CloneFlag.CHILD_CLEARTID,
    CloneFlag.DETACHED,
    CloneFlag.UNTRACED,
    CloneFlag.CHILD_SETTID,
    CloneFlag.NEWCGROUP,
    CloneFlag.NEWUTS,
    CloneFlag.NEWIPC,
    CloneFlag.NEWUSER,
    CloneFlag.NEWPID,
    CloneFlag.NEWNET,
    CloneFlag.IO,
]


@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    bits=st.sets(st.sampled_from(FORKLIKE), max_size=6),
    exit_signal=st.sampled_from([signal.SIGCHLD, 0]),
    api=st.sampled_from(["clone", "clone3"]),
    code=st.integers(0, 255),
)
def test_any_forklike_flag_set_leaves_parent_healthy(
    bits: set[CloneFlag], exit_signal: int, api: str, code: int
) -> None:
    flags = CloneFlag(0)
    for bit in bits:
        flags |= bit
    before = Health.take()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            if api == "clone":
                pid = clone(lambda: code, flags | exit_signal)
            else:
                pid, _ = clone3(lambda: code, flags, exit_signal=exit_signal)
        except (OSError, UnsupportedFlags):
            pass
        else:
            assert exit_code(reap(pid)) == code
        assert os.path.isdir(scratch)
    check_health(before)
