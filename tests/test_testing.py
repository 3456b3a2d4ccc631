"""pyclone.testing: the guard protects the process, cleans up, and names what a block changed."""

from __future__ import annotations

import os
import signal
import time

import pytest

import pyclone
from pyclone import actions
from pyclone.testing import Guard, Health, HealthError, children, guard, reap_children

WAIT = 20.0


def _exit_soon() -> None:
    """A forked child that ends at once and is not waited for."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)


def _wait_until(predicate: object, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_a_clean_block_passes_and_spawning_is_clean() -> None:
    with guard() as state:
        with pyclone.spawn_task(lambda: 7) as task:
            assert task.wait(WAIT) == 0
            assert task.result() == 7
    assert state.strays == []
    assert set(state.drained) <= {signal.SIGCHLD}  # the task's exit signal, blocked
    assert state.before.diff(Health.take()) == []


def test_a_leaked_descriptor_is_named() -> None:
    fds: list[int] = []
    with pytest.raises(HealthError, match=r"fds: leaked \[\d+, \d+\], closed none"):
        with guard():
            fds.extend(os.pipe())
    for fd in fds:
        os.close(fd)


def test_an_unreaped_child_fails_and_is_reaped() -> None:
    with pytest.raises(HealthError, match="children left running or unreaped") as info:
        with guard():
            _exit_soon()
    pid = int(str(info.value).split("[")[1].split("]")[0])
    assert pid not in children()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_strays_reap_kills_and_reaps_running_children() -> None:
    with guard(strays="reap") as state:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            time.sleep(WAIT)
            os._exit(0)
    assert state.strays == [pid]
    assert pid not in children()


def test_children_from_before_the_block_are_left_alone() -> None:
    outer = pyclone.spawn_task(actions.sleep(WAIT))
    try:
        with guard() as state:
            assert outer.pid in state.kept
        assert outer.poll() is None  # still running: the guard did not touch it
    finally:
        outer.kill()
        assert outer.wait(WAIT) == -signal.SIGKILL
        outer.close()


def test_orphans_are_reparented_to_the_guarded_process() -> None:
    me = os.getpid()
    with guard(strays="reap") as state:
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:  # pragma: no cover - the child: leave an orphan behind
            grandchild = os.fork()
            if grandchild == 0:
                os.close(r)
                time.sleep(WAIT)
                os._exit(0)
            os.write(w, str(grandchild).encode())
            os._exit(0)
        os.close(w)
        grandchild = int(os.read(r, 32))
        os.close(r)
        os.waitpid(middle, 0)
        _wait_until(lambda: grandchild in children())
        with open(f"/proc/{grandchild}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == me
    assert state.strays == [grandchild]


def test_subreaper_only_for_the_block() -> None:
    from pyclone.testing import _subreaper

    assert not _subreaper()
    with guard():
        assert _subreaper()
    assert not _subreaper()


def test_exit_signals_are_blocked_and_drained() -> None:
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with guard() as state:
        assert signal.SIGHUP in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        # blocked by the guard: opt in to a signal whose default would end the caller
        task = pyclone.spawn_task(
            lambda: 0, exit_signal=signal.SIGHUP, allow_fatal_exit_signal=True
        )
        with task:
            assert task.wait(WAIT) == 0
        _wait_until(lambda: signal.SIGHUP in signal.sigpending())
    assert signal.SIGHUP in state.drained
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask
    assert signal.SIGHUP not in signal.sigpending()


def test_a_changed_disposition_is_named() -> None:
    old = signal.getsignal(signal.SIGUSR1)
    try:
        with pytest.raises(HealthError, match=r"SigIgn: .* \(SIGUSR1\)"):
            with guard():
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_cwd_and_umask_changes_are_named(tmp_path: os.PathLike[str]) -> None:
    cwd, mask = os.getcwd(), os.umask(0o022)
    try:
        with pytest.raises(HealthError) as info:
            with guard():
                os.chdir(tmp_path)
                os.umask(0o077)
        text = str(info.value)
        assert f"cwd: {cwd!r} -> {str(tmp_path)!r}" in text
        assert "umask: '0o22' -> '0o77'" in text
    finally:
        os.chdir(cwd)
        os.umask(mask)


def test_a_failing_block_is_not_masked_by_the_check() -> None:
    with pytest.raises(KeyError):
        with guard():
            _exit_soon()
            raise KeyError("the test's own failure")
    assert not children()


def test_reap_children_keeps_what_it_is_told_to() -> None:
    keep = pyclone.spawn_task(actions.sleep(WAIT))
    try:
        _exit_soon()
        _wait_until(lambda: len(children()) == 2)
        assert len(reap_children(frozenset({keep.pid}))) == 1
        assert children() == {keep.pid}
    finally:
        keep.kill()
        keep.wait(WAIT)
        keep.close()


def test_bad_strays_argument() -> None:
    with pytest.raises(ValueError, match="strays"):
        with guard(strays="ignore"):
            pass


def test_the_plugin_fixture(clone_guard: Guard) -> None:
    assert signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with pyclone.spawn_task(lambda: 0, share={"fs", "files"}, new="uts") as task:
        assert task.wait(WAIT) == 0
    assert clone_guard.before.cwd == os.getcwd()
