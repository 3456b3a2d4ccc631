"""pyclone.actions: building actions, and C-level children for every flag class (real kernel)."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

import pyclone
from pyclone import ActionError, CloneFlag, UnsupportedFlags, _pyclone, actions, spawn_task

from actions_support import CHILD, HELLO, THREAD, seed_buffer, text
from conftest import WAIT, Health, reap

# -- building actions ------------------------------------------------------------------


def test_reprs_name_the_call() -> None:
    buf = bytearray(8)
    assert repr(actions.exit(3)) == "exit(3)"
    assert repr(actions.sleep(0.5)) == "sleep(0.5)"
    assert repr(actions.write(buf, b"ab", 2)) == "write(<bytearray of 8 bytes>, b'ab', offset=2)"
    assert repr(actions.chdir("/tmp")) == "chdir('/tmp')"
    assert repr(actions.close(5)) == "close(5)"
    assert repr(actions.ignore_signal(signal.SIGUSR1)) == "ignore_signal(SIGUSR1)"
    assert repr(actions.exec("/nope", ["/nope"])) == "exec('/nope')"
    assert repr(actions.exec("/bin/sh", ["sh", "-c", "true"], env={"A": "1"})) == (
        "exec('/bin/sh', ['sh', '-c', 'true'], env=<1 variables>)"
    )
    nested = actions.sequence(actions.chdir("/"), actions.sequence(actions.exit(1)))
    assert repr(nested) == "sequence(chdir('/'), exit(1))"
    assert [type(a) for a in nested.actions] == [actions.Chdir, actions.Exit]  # flattened


def test_actions_are_immutable_and_not_callable() -> None:
    action = actions.exit(1)
    with pytest.raises(AttributeError, match="immutable"):
        action.code = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del action.code  # type: ignore[misc]
    assert not callable(action)
    assert action.code == 1


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: actions.exit(256), ValueError, "0..255"),
        (lambda: actions.exit(True), TypeError, "bool"),
        (lambda: actions.exit("1"), TypeError, "int"),
        (lambda: actions.sleep(-1), ValueError, ">= 0"),
        (lambda: actions.sleep(float("nan")), ValueError, "finite"),
        (lambda: actions.sleep("1"), TypeError, "number"),
        (lambda: actions.write(b"ro", b"x"), TypeError, "read-only"),
        (lambda: actions.write(42, b"x"), TypeError, "buffer protocol"),
        (lambda: actions.write(bytearray(2), b"xyz"), ValueError, "does not fit"),
        (lambda: actions.write(bytearray(2), b"x", -1), ValueError, "does not fit"),
        (lambda: actions.write(bytearray(2), "x"), TypeError, "bytes-like"),
        (lambda: actions.write(memoryview(bytearray(8))[::2], b"x"), ValueError, "contiguous"),
        (lambda: actions.chdir("/a\0b"), ValueError, "NUL"),
        (lambda: actions.chdir(3), TypeError, "PathLike"),
        (lambda: actions.close(-1), ValueError, "non-negative"),
        (lambda: actions.ignore_signal(signal.SIGKILL), ValueError, "cannot be ignored"),
        (lambda: actions.ignore_signal(65), ValueError, "1..64"),
        (lambda: actions.exec("/bin/true", "true"), TypeError, "single string"),
        (lambda: actions.exec("/bin/true", ["true"], env={"A=B": "1"}), ValueError, "name"),
        (lambda: actions.exec("/bin/true", ["true"], env=["A=1"]), TypeError, "mapping"),
        (lambda: actions.sequence(lambda: 0), TypeError, "takes actions"),
    ],
)
def test_bad_arguments_are_refused_before_the_clone(build: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()  # type: ignore[operator]


def test_write_holds_the_buffer() -> None:
    buf = bytearray(4)
    action = actions.write(buf, b"ab")
    with pytest.raises(BufferError):
        buf.extend(b"more")  # the child may write into it: it cannot move
    del action
    buf.extend(b"more")
    assert len(buf) == 8


def test_spawn_task_refuses_args_for_an_action() -> None:
    with pytest.raises(TypeError, match="no args"):
        spawn_task(actions.exit(0), (1,))  # type: ignore[arg-type]


# -- the seed sample, both modes ---------------------------------------------------------


@pytest.mark.parametrize(("share", "expected"), [("process", HELLO[:-1]), ("vm", CHILD[:-1])])
def test_seed_sample_through_spawn_task(healthy: Health, share: str, expected: bytes) -> None:
    buf = seed_buffer()
    with spawn_task(actions.write(buf, CHILD), share=share) as task:
        assert task.wait(WAIT) == 0
    assert text(buf) == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(0, HELLO[:-1]), (CloneFlag.VM, CHILD[:-1]), (CloneFlag.VM | CloneFlag.VFORK, CHILD[:-1])],
)
def test_seed_sample_through_clone(healthy: Health, flags: int, expected: bytes) -> None:
    buf = seed_buffer()
    pid = pyclone.clone(actions.write(buf, CHILD), flags | signal.SIGCHLD)
    assert os.waitstatus_to_exitcode(reap(pid)) == 0
    assert text(buf) == expected
    buf = seed_buffer()
    pid, pidfd = pyclone.clone3(actions.write(buf, CHILD), flags, pidfd=True)
    assert pidfd is not None
    os.close(pidfd)
    assert os.waitstatus_to_exitcode(reap(pid)) == 0
    assert text(buf) == expected


# -- each action --------------------------------------------------------------------------


@pytest.mark.parametrize("share", ["process", "vm", "vfork", "thread"])
def test_exit_code_comes_back(healthy: Health, share: str) -> None:
    with spawn_task(actions.exit(42), share=share) as task:
        assert task.wait(WAIT) == 42
        assert task.result(WAIT) == 42


def test_an_action_without_exit_ends_with_zero(healthy: Health) -> None:
    with spawn_task(actions.sequence(), share="thread") as task:
        assert task.wait(WAIT) == 0


@pytest.mark.parametrize("share", ["process", "vm", "thread"])
def test_sleep_then_exit(healthy: Health, share: str) -> None:
    with spawn_task(actions.sequence(actions.sleep(0.05), actions.exit(3)), share=share) as task:
        assert task.poll() is None
        assert task.wait(WAIT) == 3


@pytest.mark.parametrize("share", ["process", "vm", "thread"])
def test_kill_ends_a_sleeping_action(healthy: Health, share: str) -> None:
    with spawn_task(actions.sleep(WAIT * 10), share=share) as task:
        with pytest.raises(pyclone.TimeoutExpired):
            task.wait(0.01)
        task.kill()
        assert task.wait(WAIT) == -signal.SIGKILL


def test_terminate_cancels_a_thread_task(healthy: Health) -> None:
    with spawn_task(actions.sleep(WAIT * 10), share="thread") as task:
        task.terminate()
        assert task.wait(WAIT) == -signal.SIGTERM
        task.kill()  # after the end: nothing


def test_thread_task_refuses_other_signals(healthy: Health) -> None:
    with spawn_task(actions.sleep(0.01), share="thread") as task:
        with pytest.raises(ValueError, match="SIGKILL or SIGTERM"):
            task.send_signal(signal.SIGSTOP)
        assert task.wait(WAIT) == 0


def test_context_manager_cancels_a_thread_on_error(healthy: Health) -> None:
    with pytest.raises(KeyError), spawn_task(actions.sleep(WAIT * 10), share="thread") as task:
        raise KeyError
    assert task.returncode == -signal.SIGKILL


def test_chdir_with_clone_fs_moves_the_caller(tmp_path: Path) -> None:
    before = os.getcwd()
    try:
        with spawn_task(actions.chdir(tmp_path), share=["vm", "fs"]) as task:
            assert task.wait(WAIT) == 0
        assert os.getcwd() == str(tmp_path)
    finally:
        os.chdir(before)


def test_chdir_without_clone_fs_is_private(healthy: Health, tmp_path: Path) -> None:
    script = actions.exec("/bin/sh", ["sh", "-c", "pwd > where"])
    with spawn_task(actions.sequence(actions.chdir(tmp_path), script), share="vm") as task:
        assert task.wait(WAIT) == 0
    assert (tmp_path / "where").read_text().strip() == str(tmp_path)
    assert os.getcwd() != str(tmp_path)


@pytest.mark.parametrize("share", ["process", "vm", "vfork", "thread"])
def test_failed_chdir_is_reported_with_its_step(healthy: Health, share: str) -> None:
    action = actions.sequence(actions.chdir(os.getcwd()), actions.chdir("/nonexistent/dir"))
    if share == "vfork":
        with pytest.raises(ActionError) as info:
            spawn_task(action, share=share)
    else:
        task = spawn_task(action, share=share)
        with pytest.raises(ActionError) as info:
            task.wait(WAIT)
        assert task.returncode == actions.FAILED_STATUS
        with pytest.raises(ActionError):
            task.result(WAIT)  # the same error again
        assert task.wait(WAIT) == actions.FAILED_STATUS
        task.close()
    error = info.value
    assert isinstance(error, OSError)
    assert error.errno == errno.ENOENT
    assert error.step == 1
    assert str(error) == ("action chdir('/nonexistent/dir'): [Errno 2] No such file or directory")


def test_close_with_clone_files_closes_the_callers_fd(healthy: Health) -> None:
    fd = os.dup(0)
    try:
        with spawn_task(actions.close(fd), share=["vm", "files"]) as task:
            assert task.wait(WAIT) == 0
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF
    except BaseException:
        os.close(fd)
        raise


def test_close_without_clone_files_is_private(healthy: Health) -> None:
    fd = os.dup(0)
    try:
        with spawn_task(actions.close(fd), share="vm") as task:
            assert task.wait(WAIT) == 0
        os.fstat(fd)  # still open here
    finally:
        os.close(fd)


def test_close_of_a_bad_fd_is_reported(healthy: Health) -> None:
    with spawn_task(actions.close(987_654), share="thread") as task:
        with pytest.raises(ActionError, match=r"close\(987654\): \[Errno 9\]"):
            task.wait(WAIT)


def sig_bits(status_text: str, field: str) -> int:
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(field)


def test_ignore_signal_is_kept_across_exec(healthy: Health, tmp_path: Path) -> None:
    out = tmp_path / "status"
    action = actions.sequence(
        actions.ignore_signal(signal.SIGUSR1),
        actions.exec("/bin/cp", ["cp", "/proc/self/status", str(out)]),
    )
    with spawn_task(action, share="vfork") as task:
        assert task.wait(WAIT) == 0
    assert sig_bits(out.read_text(), "SigIgn") & (1 << (signal.SIGUSR1 - 1))


def test_ignore_signal_with_clone_sighand_is_the_callers_and_signal_module_is_told(
    healthy: Health,
) -> None:
    old = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        with spawn_task(actions.ignore_signal(signal.SIGUSR1), share=["vm", "sighand"]) as task:
            assert task.wait(WAIT) == 0
        assert _pyclone._signal_disposition(signal.SIGUSR1) == 1  # SIG_IGN in the kernel
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_ignore_sigchld_with_clone_sighand_is_refused(healthy: Health) -> None:
    # the caller's children, this task included, would be reaped behind its back
    with pytest.raises(UnsupportedFlags, match="SIGCHLD"):
        spawn_task(actions.ignore_signal(signal.SIGCHLD), share=["vm", "sighand"])
    assert _pyclone._signal_disposition(signal.SIGCHLD) == 0


@pytest.mark.parametrize("share", ["vm", "process", "vfork"])
def test_exec_restores_the_callers_mask_and_default_handlers(
    healthy: Health, tmp_path: Path, share: str
) -> None:
    """A process's launch holds signals; the exec'd program still gets the caller's mask."""
    out = tmp_path / "status"
    old = signal.signal(signal.SIGUSR2, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
    try:
        # cp copies its own status: the mask and handlers execve handed over
        action = actions.exec("/bin/cp", ["cp", "/proc/self/status", str(out)])
        with spawn_task(action, share=share) as task:
            assert task.wait(WAIT) == 0
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGWINCH})
        signal.signal(signal.SIGUSR2, old)
    status = out.read_text()
    assert sig_bits(status, "SigBlk") == 1 << (signal.SIGWINCH - 1)
    assert not sig_bits(status, "SigCgt") & (1 << (signal.SIGUSR2 - 1))


@pytest.mark.parametrize("share", ["process", "vm", "vfork"])
def test_exec_status_and_environment(healthy: Health, share: str, tmp_path: Path) -> None:
    out = tmp_path / "env"
    action = actions.exec(
        "/bin/sh", ["sh", "-c", f'echo "$GREETING" > {out}; exit 5'], env={"GREETING": "hi"}
    )
    with spawn_task(action, share=share) as task:
        assert task.wait(WAIT) == 5
    assert out.read_text() == "hi\n"


@pytest.mark.parametrize("share", ["process", "vm", "vfork"])
def test_failed_exec_is_reported(healthy: Health, share: str) -> None:
    action = actions.exec("/nope", ["/nope"])
    match = r"^action exec\('/nope'\): \[Errno 2\] No such file or directory$"
    if share == "vfork":
        with pytest.raises(ActionError, match=match):
            spawn_task(action, share=share)
        return
    with spawn_task(action, share=share) as task, pytest.raises(ActionError, match=match):
        task.wait(WAIT)


def test_failed_exec_is_raised_by_clone_with_vfork(healthy: Health) -> None:
    flags = pyclone.CLONE_VM | pyclone.CLONE_VFORK
    with pytest.raises(ActionError) as info:
        pyclone.clone(actions.exec("/nope", ["/nope"]), flags | signal.SIGCHLD)
    assert info.value.errno == errno.ENOENT
    with pytest.raises(ActionError):
        pyclone.clone3(actions.exec("/nope", ["/nope"]), flags)


def test_exec_with_clone_thread_is_refused(healthy: Health) -> None:
    with pytest.raises(UnsupportedFlags, match="replaces the whole process"):
        spawn_task(actions.exec("/bin/true", ["true"]), share="thread")
    with pytest.raises(UnsupportedFlags, match="replaces the whole process"):
        pyclone.clone(actions.exec("/bin/true", ["true"]), THREAD)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (CloneFlag.SETTLS | THREAD, "CLONE_SETTLS"),
        (CloneFlag.SIGHAND | CloneFlag.VM | CloneFlag.NEWPID, "SIGCHLD to SIG_IGN"),
    ],
)
def test_refused_flag_sets(healthy: Health, flags: int, needle: str) -> None:
    with pytest.raises(UnsupportedFlags, match=needle):
        spawn_task(actions.exit(0), flags=flags)


def test_python_callable_with_clone_thread_points_to_threading() -> None:
    with pytest.raises(UnsupportedFlags, match=r"threading\.Thread") as info:
        spawn_task(lambda: 0, share="thread")
    assert "whole process" in str(info.value)


def test_small_stack_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        pyclone.clone(actions.exit(0), pyclone.CLONE_VM | signal.SIGCHLD, 4096)


def test_stack_size_is_honoured(healthy: Health) -> None:
    pid = pyclone.clone(actions.exit(4), pyclone.CLONE_VM | signal.SIGCHLD, 1 << 20)
    assert os.waitstatus_to_exitcode(reap(pid)) == 4


def test_kernel_rejection_is_oserror(healthy: Health) -> None:
    with pytest.raises(OSError) as info:
        pyclone.clone(actions.exit(0), pyclone.CLONE_SIGHAND | signal.SIGCHLD)  # needs CLONE_VM
    assert info.value.errno == errno.EINVAL
    assert not isinstance(info.value, ActionError)


# -- every flag class -----------------------------------------------------------------------

FLAG_CLASSES = {
    "copy": CloneFlag(0),
    "copy+vfork": CloneFlag.VFORK,
    "copy+fs+files": CloneFlag.FS | CloneFlag.FILES,
    "vm": CloneFlag.VM,
    "vm+vfork": CloneFlag.VM | CloneFlag.VFORK,
    "vm+sighand": CloneFlag.VM | CloneFlag.SIGHAND,
    "vm+fs+files+io+sysvsem": CloneFlag.VM
    | CloneFlag.FS
    | CloneFlag.FILES
    | CloneFlag.IO
    | CloneFlag.SYSVSEM,
    "thread": THREAD,
    "thread+vfork": THREAD | CloneFlag.VFORK,
    "bare thread": CloneFlag.VM | CloneFlag.SIGHAND | CloneFlag.THREAD,
    "parent+vm": CloneFlag.PARENT | CloneFlag.VM,
    "vm+namespaces": CloneFlag.VM | CloneFlag.NEWUTS | CloneFlag.NEWIPC | CloneFlag.NEWNET,
    "copy+newpid+newns": CloneFlag.NEWPID | CloneFlag.NEWNS,
}


@pytest.mark.parametrize("name", list(FLAG_CLASSES))
def test_every_flag_class_runs_an_action(healthy: Health, name: str) -> None:
    flags = FLAG_CLASSES[name]
    buf = seed_buffer()
    action = actions.sequence(actions.write(buf, CHILD), actions.exit(9))
    with spawn_task(action, flags=flags) as task:
        assert task.wait(WAIT) == 9
    assert text(buf) == (CHILD if flags & CloneFlag.VM else HELLO)[:-1]
    if flags & CloneFlag.THREAD:
        assert task.tgid == os.getpid()
    else:
        assert task.tgid == task.pid


# -- the benchmark floor -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fork", "vfork_exec", "thread", "pthread", "posix_spawn"])
def test_floor_returns_one_time_per_round_trip(healthy: Health, kind: str) -> None:
    times = _pyclone._floor(kind, 5, 1 << 20)
    assert len(times) == 5
    assert all(isinstance(t, float) and t > 0 for t in times)


def test_floor_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="kind is one of"):
        _pyclone._floor("clone", 1)


def test_private_program_with_a_make_error_that_returns_no_exception(healthy: Health) -> None:
    # it used to surface as SystemError from PyErr_SetObject; a TypeError says what is wrong
    for bad in (lambda *_: 5, lambda *_: None):
        prog = _pyclone._action_program([("chdir", "chdir", b"/nonexistent")], bad)
        with pytest.raises(TypeError, match="make_error returned"):
            pyclone.clone(prog, CloneFlag.VM | CloneFlag.VFORK | signal.SIGCHLD)
    with pytest.raises(TypeError, match="on_end"):
        _pyclone._action_program([("exit", "exit", 0)], ActionError, 5)
    with pytest.raises(ValueError, match="not in 1"):
        _pyclone._action_program([("ignore_signal", "x", 0)], ActionError)


def test_private_run_join_refuses_nan(healthy: Health) -> None:
    pid, pidfd, run = _pyclone._spawn_action(
        actions.sleep(0.01), int(CloneFlag.VM), signal.SIGCHLD, True, True, 0
    )
    try:
        with pytest.raises(ValueError, match="NaN"):
            run.join(float("nan"))
        assert run.join(WAIT)
    finally:
        assert pidfd is not None
        os.close(pidfd)
        reap(pid)
        run.release()
