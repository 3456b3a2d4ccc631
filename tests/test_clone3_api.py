"""pyclone.clone3 on the real kernel: LTP clone301-303, the clone3 selftests, the ENOSYS fallback.

Cases of the kernel's own suites that Python cannot reach are left out on
purpose, because pyclone builds ``struct clone_args`` itself: a bad args
pointer (EFAULT), a struct size of 0, 56, 63, sizeof+1 at a page end or
with a non-zero tail (EINVAL/EFAULT/E2BIG), a bad pidfd pointer (EFAULT),
and the stack/stack_size mismatches (EINVAL): pyclone owns the stack and
never passes one without the other.
"""

from __future__ import annotations

import errno
import os
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyclone
from pyclone import Cgroup, CgroupUnavailable, CloneFlag, UnsupportedFlags, _pyclone
from pyclone.clone3_api import CloneArgumentError, check_clone3_args, clone3_missing

from conftest import WAIT, Health, check_health, reap, require_root, run_forked, sigwait_info


def _blocked(*signals: int) -> set[signal.Signals]:
    return signal.pthread_sigmask(signal.SIG_BLOCK, signals)


def _restore(old: set[signal.Signals], *signals: int) -> None:
    """Drop what is pending of ``signals`` and restore the old mask."""
    for sig in signals:
        while signal.sigtimedwait([sig], 0) is not None:
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, old)


# -- LTP clone301 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "exit_signal"),
    [
        (0, signal.SIGCHLD),
        (0, signal.SIGUSR2),
        (CloneFlag.FS, signal.SIGCHLD),
        (CloneFlag.NEWPID, signal.SIGCHLD),
    ],
    ids=["plain", "SIGUSR2", "FS", "NEWPID"],
)
def test_clone301_parent_gets_exit_signal(healthy: Health, flags: int, exit_signal: int) -> None:
    if flags & CloneFlag.NEWPID:
        require_root()
    old = _blocked(exit_signal)
    try:
        # blocked here and collected below: the opt-in is what this caller needs
        pid, pidfd = pyclone.clone3(
            lambda: 0, flags, exit_signal=exit_signal, allow_fatal_exit_signal=True
        )
        assert pidfd is None
        assert os.waitstatus_to_exitcode(reap(pid)) == 0  # waitpid(pid, __WALL)
        got = signal.sigtimedwait([exit_signal], WAIT)
        assert got is not None
        assert got.si_signo == exit_signal
        assert got.si_pid == pid
    finally:
        _restore(old, exit_signal)


def _expect_sigusr1_777() -> int:
    got = sigwait_info(signal.SIGUSR1, WAIT)
    return 0 if got is not None and got[3] == 777 and got[1] == -1 else 3  # SI_QUEUE


def test_clone301_pidfd_signal_with_value_reaches_child(healthy: Health) -> None:
    # The child inherits the blocked SIGUSR1, so the signal waits for it.
    old = _blocked(signal.SIGUSR1, signal.SIGCHLD)
    try:
        flags = CloneFlag.PARENT_SETTID | CloneFlag.CHILD_SETTID | CloneFlag.PIDFD
        pid, pidfd = pyclone.clone3(_expect_sigusr1_777, flags, pidfd=True)
        assert pidfd is not None
        try:
            pyclone.pidfd_send_signal(pidfd, signal.SIGUSR1, 777)
            assert os.waitstatus_to_exitcode(reap(pid)) == 0
        finally:
            os.close(pidfd)
    finally:
        _restore(old, signal.SIGUSR1, signal.SIGCHLD)


# -- LTP clone302 and the selftests' invalid arguments ---------------------------


@pytest.mark.parametrize(
    ("flags", "exit_signal", "rule"),
    [
        (CloneFlag.SIGHAND, signal.SIGCHLD, "CLONE_SIGHAND requires CLONE_VM"),
        (CloneFlag.THREAD, 0, "CLONE_THREAD requires CLONE_SIGHAND"),
        (CloneFlag.FS | CloneFlag.NEWNS, signal.SIGCHLD, "CLONE_NEWNS cannot"),
        (0, 256, "exit_signal 256"),  # CSIGNAL + 1
        (0, 65, "exit_signal 65"),
        (0, 0xBADC0DED00000000, "exit_signal"),
        (0, 0x80000000, "exit_signal"),
        (0, 0x100, "exit_signal"),
        (0, 0xF0, "exit_signal"),
        (0, -1, "exit_signal -1"),  # the selftests' clone3-present probe
        (signal.SIGCHLD, signal.SIGCHLD, "not in the flags' low byte"),
        (CloneFlag.DETACHED, signal.SIGCHLD, "CLONE_DETACHED"),
        (CloneFlag.CLEAR_SIGHAND | CloneFlag.SIGHAND | CloneFlag.VM, 17, "CLEAR_SIGHAND"),
        (CloneFlag.PARENT, signal.SIGCHLD, "exit signal must be 0"),
        (CloneFlag.NEWUSER | CloneFlag.FS, signal.SIGCHLD, "CLONE_NEWUSER cannot"),
    ],
)
def test_invalid_arguments_give_einval_naming_the_rule(
    healthy: Health, flags: int, exit_signal: int, rule: str
) -> None:
    with pytest.raises(CloneArgumentError, match=rule) as info:
        pyclone.clone3(lambda: 0, flags, exit_signal=exit_signal)
    assert info.value.errno == errno.EINVAL
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "flags",
    [
        CloneFlag.SIGHAND,
        CloneFlag.FS | CloneFlag.NEWNS,
        CloneFlag.NEWUSER | CloneFlag.FS,
        CloneFlag.CLEAR_SIGHAND | CloneFlag.SIGHAND,
        CloneFlag.DETACHED,
    ],
)
def test_the_kernel_agrees_with_the_early_rules(healthy: Health, flags: int) -> None:
    """The same requests sent straight to the kernel (the C layer does not check them)."""
    with pytest.raises(CloneArgumentError):
        pyclone.clone3(lambda: 0, flags)
    with pytest.raises(OSError) as info:
        _pyclone.clone3(lambda: 0, flags)
    assert info.value.errno == errno.EINVAL


def test_too_many_set_tid_entries(healthy: Health) -> None:
    with pytest.raises(CloneArgumentError, match="at most 32"):
        pyclone.clone3(lambda: 0, set_tid=[1] * 33)


def test_argument_types(healthy: Health) -> None:
    with pytest.raises(TypeError, match="callable"):
        pyclone.clone3(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flags"):
        pyclone.clone3(lambda: 0, "0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64 bits"):
        pyclone.clone3(lambda: 0, 1 << 64)
    with pytest.raises(TypeError, match="exit_signal"):
        pyclone.clone3(lambda: 0, exit_signal=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="set_tid"):
        pyclone.clone3(lambda: 0, set_tid="12")
    with pytest.raises(TypeError, match="set_tid entries"):
        pyclone.clone3(lambda: 0, set_tid=[1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="pid_t"):
        pyclone.clone3(lambda: 0, set_tid=[1 << 40])
    with pytest.raises(TypeError, match="cgroup"):
        pyclone.clone3(lambda: 0, cgroup=1.0)  # type: ignore[arg-type]


def test_unknown_high_bits_are_left_to_the_kernel(healthy: Health) -> None:
    # Bit 40 is unassigned on 6.18 (newer kernels assign bits from 34 up).
    with pytest.raises(OSError) as info:
        pyclone.clone3(lambda: 0, 1 << 40)
    assert info.value.errno == errno.EINVAL
    assert not isinstance(info.value, CloneArgumentError)  # the kernel said so, not pyclone


def test_exit_signal_64_is_accepted(healthy: Health) -> None:
    sig = 64  # SIGRTMAX: its default action would end the test process
    old = _blocked(sig)
    try:
        pid, _ = pyclone.clone3(lambda: 0, exit_signal=sig, allow_fatal_exit_signal=True)
        assert os.waitstatus_to_exitcode(reap(pid)) == 0
        got = signal.sigtimedwait([sig], WAIT)
        assert got is not None and got.si_pid == pid
    finally:
        _restore(old, sig)


@pytest.mark.parametrize(
    "flags", [0, CloneFlag.NEWPID, CloneFlag.NEWTIME], ids=["none", "NEWPID", "NEWTIME"]
)
def test_selftest_valid_requests(healthy: Health, flags: int) -> None:
    if flags:
        require_root()
    pid, pidfd = pyclone.clone3(lambda: 0, flags, pidfd=True)
    assert pidfd is not None
    try:
        assert os.waitstatus_to_exitcode(reap(pid)) == 0
    finally:
        os.close(pidfd)


def _handlers_in_child() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    raise AssertionError("no SigCgt")


def test_clear_sighand_resets_handlers_in_the_child(healthy: Health) -> None:
    """clone3_clear_sighand.c: the child's SIGUSR1/SIGUSR2 handlers are SIG_DFL."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    try:
        for s in saved:
            signal.signal(s, lambda *_: None)
        mask = (1 << (signal.SIGUSR1 - 1)) | (1 << (signal.SIGUSR2 - 1))
        assert _handlers_in_child() & mask == mask  # the parent catches them
        with pyclone.spawn_task(_handlers_in_child, flags=CloneFlag.CLEAR_SIGHAND) as task:
            assert task.result(WAIT) & mask == 0
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


# -- LTP clone303: CLONE_INTO_CGROUP ---------------------------------------------


def _v2_cgroup() -> Cgroup:
    cg = Cgroup()
    try:
        cg.create()
    except CgroupUnavailable as exc:
        pytest.skip(str(exc))
    if "v2" not in cg.paths:
        cg.remove()
        pytest.skip("no writable cgroup v2 hierarchy: CLONE_INTO_CGROUP needs one")
    return cg


@pytest.mark.parametrize("by", ["path", "fd"])
def test_clone303_into_cgroup(healthy: Health, by: str) -> None:
    require_root()
    cg = _v2_cgroup()
    r, w = os.pipe()
    fd = os.open(cg.paths["v2"], os.O_RDONLY | os.O_DIRECTORY)
    try:
        target = cg.paths["v2"] if by == "path" else fd
        pid, pidfd = pyclone.clone3(lambda: len(os.read(r, 1)) - 1, pidfd=True, cgroup=target)
        assert pidfd is not None
        try:
            with open(os.path.join(cg.paths["v2"], "cgroup.procs")) as f:
                members = {int(p) for p in f.read().split()}
            os.write(w, b"x")
            assert os.waitstatus_to_exitcode(reap(pid)) == 0
        finally:
            os.close(pidfd)
        assert pid in members
    finally:
        for d in (r, w, fd):
            os.close(d)
        cg.remove()


def test_into_cgroup_errors_come_from_the_kernel(healthy: Health, tmp_path: object) -> None:
    with pytest.raises(CloneArgumentError, match="open descriptor"):
        pyclone.clone3(lambda: 0, cgroup=-1)
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as info:  # not a cgroup2 directory
            pyclone.clone3(lambda: 0, cgroup=fd)
        assert info.value.errno == errno.EBADF
    finally:
        os.close(fd)


# -- property: the early rules are exactly the kernel's --------------------------

_RULE_FLAGS = [
    CloneFlag.NEWNS,
    CloneFlag.FS,
    CloneFlag.NEWUSER,
    CloneFlag.SIGHAND,
    CloneFlag.NEWPID,
    CloneFlag.PIDFD,
    CloneFlag.DETACHED,
    CloneFlag.CLEAR_SIGHAND,
    CloneFlag.NEWIPC,
    CloneFlag.SYSVSEM,
    CloneFlag.NEWUTS,
    CloneFlag(0x01),  # a CSIGNAL bit
]
_flag_sets = st.lists(st.sampled_from(_RULE_FLAGS), max_size=5).map(
    lambda fs: int(sum(set(fs), CloneFlag(0)))
)
_signals = st.sampled_from([0, signal.SIGCHLD, signal.SIGUSR1, 64])


def _kernel_errno(flags: int, exit_signal: int) -> int:
    try:
        pid, fd = _pyclone.clone3(lambda: 0, flags, exit_signal=exit_signal)
    except OSError as exc:
        return exc.errno or -1
    if fd is not None:
        os.close(fd)
    reap(pid)
    return 0


def _check(flags: int, exit_signal: int) -> None:
    try:
        check_clone3_args(flags, exit_signal)
        predicted = 0
    except CloneArgumentError:
        predicted = errno.EINVAL
    actual = _kernel_errno(flags, exit_signal)
    if predicted:
        assert actual == errno.EINVAL, (hex(flags), exit_signal, actual)
    elif actual == errno.EINVAL:
        # the only EINVAL that depends on privilege, so not checked early (P12)
        assert flags & CloneFlag.NEWIPC and flags & CloneFlag.SYSVSEM, hex(flags)


def _property(max_examples: int) -> None:
    require_root()
    before = Health.take()
    old = _blocked(signal.SIGUSR1, 64)
    try:

        @settings(
            derandomize=True,
            max_examples=max_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(_flag_sets, _signals)
        def run(flags: int, exit_signal: int) -> None:
            _check(flags, exit_signal)

        run()
    finally:
        _restore(old, signal.SIGUSR1, 64)
    check_health(before)


def test_early_rules_match_the_kernel() -> None:
    _property(60)


@pytest.mark.slow
def test_early_rules_match_the_kernel_long(request: pytest.FixtureRequest) -> None:
    if "slow" not in str(request.config.getoption("-m")):
        pytest.skip("3000 kernel calls (about 75 s): run with -m slow")
    _property(3000)


# -- the ENOSYS fallback, with a real seccomp filter ------------------------------


def _filter_clone3(err: int) -> None:
    import pyseccomp as seccomp

    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    flt.add_rule(seccomp.ERRNO(err), "clone3")
    flt.load()


def _under_enosys() -> dict[str, object]:
    _filter_clone3(errno.ENOSYS)
    out: dict[str, object] = {}
    # CLONE_FS: a request glibc's fork() cannot serve, so pyclone asks clone3 for it
    with pyclone.spawn_task(os.getpid, share="fs") as task:
        out["pidfd"] = task.pidfd is not None  # before the wait: collecting closes it
        out["pid_ok"] = task.result(WAIT) == task.pid
    out["missing"] = clone3_missing()
    pid, pidfd = pyclone.clone3(lambda: 3, CloneFlag.FS, pidfd=True)
    out["raw_pidfd"] = pidfd is not None
    out["raw_status"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if pidfd is not None:
        os.close(pidfd)
    refusals = {}
    for name, call in {
        "set_tid": lambda: pyclone.spawn_task(os.getpid, set_tid=[4242]),
        "time": lambda: pyclone.spawn_task(os.getpid, new="time"),
        "clear_sighand": lambda: pyclone.clone3(lambda: 0, CloneFlag.CLEAR_SIGHAND),
        "cgroup": lambda: pyclone.clone3(lambda: 0, cgroup="/sys/fs/cgroup/unified"),
    }.items():
        try:
            call()
            refusals[name] = "no error"
        except UnsupportedFlags as exc:
            refusals[name] = str(exc)
    out["refusals"] = refusals
    try:
        with Cgroup() as cg, pyclone.spawn_task(_read_cgroup, cgroup=cg) as task:
            out["cgroup_line"] = task.result(WAIT)
            out["cgroup_name"] = os.path.basename(cg.path or "")
    except CgroupUnavailable as exc:
        out["cgroup_line"] = f"skip: {exc}"
    return out


def _read_cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        return f.read()


def test_fallback_on_enosys(healthy: Health) -> None:
    pytest.importorskip("pyseccomp", reason="the seccomp filter is built with pyseccomp")
    out = run_forked(_under_enosys)
    assert isinstance(out, dict)
    assert out["missing"] and out["pid_ok"] and out["pidfd"]
    assert out["raw_pidfd"] and out["raw_status"] == 3
    refusals = out["refusals"]
    assert "set_tid" in refusals["set_tid"] and "ENOSYS" in refusals["set_tid"]
    assert "CLONE_NEWTIME" in refusals["time"]
    assert "CLONE_CLEAR_SIGHAND" in refusals["clear_sighand"]
    assert "cgroup.procs" in refusals["cgroup"]
    line = str(out["cgroup_line"])
    if line.startswith("skip:"):
        pytest.skip(line)
    # spawn_task(cgroup=) still works: the task is written into cgroup.procs before it runs
    assert str(out["cgroup_name"]) in line


def _under_eperm() -> tuple[int, bool]:
    _filter_clone3(errno.EPERM)
    try:
        pyclone.spawn_task(os.getpid, share="fs")
    except OSError as exc:
        return exc.errno or 0, clone3_missing()
    return 0, clone3_missing()


def test_no_fallback_on_eperm(healthy: Health) -> None:
    pytest.importorskip("pyseccomp", reason="the seccomp filter is built with pyseccomp")
    err, missing = run_forked(_under_eperm)  # type: ignore[misc]
    assert err == errno.EPERM
    assert not missing


# -- create_plain: the launch path of spawn_task ---------------------------------


def test_create_plain_checks_every_call_until_a_pair_passes(healthy: Health) -> None:
    from pyclone.clone3_api import create_plain

    bad = int(CloneFlag.THREAD)  # CLONE_THREAD without CLONE_SIGHAND: rule, not kernel
    for _ in range(2):  # a refused pair is never remembered as checked
        with pytest.raises(CloneArgumentError, match="CLONE_THREAD requires CLONE_SIGHAND"):
            create_plain(lambda: 0, bad, 0, False)
    for code in (3, 4):  # the second call takes the checked shortcut
        pid, pidfd = create_plain(lambda code=code: code, 0, signal.SIGCHLD, False)
        assert pidfd is not None
        try:
            assert os.waitstatus_to_exitcode(reap(pid)) == code
        finally:
            os.close(pidfd)


def test_a_default_launch_takes_the_checked_fast_path(
    healthy: Health, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a (flags, exit signal) pair has been checked, launches skip the full check.

    The default exit signal is ``signal.SIGCHLD``, an enum member: it must
    reach the fast path as the same pair as a plain 17.
    """
    from pyclone import clone3_api

    if clone3_missing():
        pytest.skip("clone3 is missing here: every launch takes the fallback")
    assert pyclone.spawn_task(os.getpid).wait(WAIT) == 0  # checked once, if not before

    def full_check(*args: object, **kwargs: object) -> None:
        raise AssertionError("the launch went through the full check again")

    monkeypatch.setattr(clone3_api, "create", full_check)
    for how in ({}, {"exit_signal": signal.SIGCHLD}, {"exit_signal": int(signal.SIGCHLD)}):
        with pyclone.spawn_task(os.getpid, **how) as task:  # type: ignore[arg-type]
            assert task.result(WAIT) == task.pid
