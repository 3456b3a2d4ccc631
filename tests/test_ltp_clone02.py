"""LTP clone02 in pyclone: a child changes memory, the cwd, an fd and a signal disposition.

LTP's first case clones with CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|SIGCHLD;
the child stores into a global, chdirs, closes a descriptor the parent
opened and changes SIGUSR2's disposition, and the parent checks that it sees
all four.  Its second case clones with SIGCHLD alone and checks it sees none.
Here the child is an action: ``write`` stands for the store into the global
(a buffer the parent reads), ``chdir`` and ``close`` are the same system
calls, and ``ignore_signal`` stands for LTP's sigaction (an action cannot
install a handler, since it runs no code of its own after the clone).  The
parent also checks that :func:`signal.getsignal` tells the truth afterwards.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyclone
from pyclone import CloneFlag, _pyclone, actions

from conftest import WAIT, Health, reap

PARENT_VALUE = 1
CHILD_VALUE = 2
SHARE_ALL = ("vm", "fs", "files", "sighand")
FLAG_ALL = CloneFlag.VM | CloneFlag.FS | CloneFlag.FILES | CloneFlag.SIGHAND


class Case:
    """What the parent set up before the clone (LTP's test_setup) and how to undo it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cwd_parent = os.getcwd()
        self.variable = bytearray(struct.pack("=i", PARENT_VALUE))
        self.fd = os.open(tmp / "parent_file", os.O_CREAT | os.O_RDWR, 0o777)
        self.caught: list[int] = []
        self.old_handler = signal.signal(signal.SIGUSR2, lambda s, _f: self.caught.append(s))
        self.action = actions.sequence(
            actions.write(self.variable, struct.pack("=i", CHILD_VALUE)),  # test_VM
            actions.close(self.fd),  # test_FILES
            actions.chdir(tmp),  # test_FS
            actions.ignore_signal(signal.SIGUSR2),  # test_SIG
        )

    def modified_vm(self) -> bool:
        return struct.unpack("=i", self.variable)[0] == CHILD_VALUE

    def modified_files(self) -> bool:
        try:
            os.fstat(self.fd)
        except OSError as exc:
            return exc.errno == errno.EBADF
        return False

    def modified_fs(self) -> bool:
        return os.getcwd() != self.cwd_parent

    def modified_sig_in_kernel(self) -> bool:
        return _pyclone._signal_disposition(signal.SIGUSR2) == 1  # SIG_IGN

    def cleanup(self) -> None:
        os.chdir(self.cwd_parent)
        if not self.modified_files():
            os.close(self.fd)
        signal.signal(signal.SIGUSR2, self.old_handler)


@pytest.fixture
def case(healthy: Health, tmp_path: Path) -> Iterator[Case]:
    made = Case(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def test_all_resources_shared(case: Case) -> None:
    with pyclone.spawn_task(case.action, share=SHARE_ALL) as task:
        assert task.wait(WAIT) == 0
    assert case.modified_vm()
    assert case.modified_files()
    assert case.modified_fs() and os.getcwd() == str(case.tmp)
    assert case.modified_sig_in_kernel()
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN  # told when the task was waited for
    os.kill(os.getpid(), signal.SIGUSR2)  # ignored now: the old handler does not run
    assert case.caught == []


def test_no_resources_shared(case: Case) -> None:
    with pyclone.spawn_task(case.action) as task:
        assert task.wait(WAIT) == 0
    assert not case.modified_vm()
    assert not case.modified_files()
    assert not case.modified_fs()
    assert not case.modified_sig_in_kernel()
    assert callable(signal.getsignal(signal.SIGUSR2))
    os.kill(os.getpid(), signal.SIGUSR2)
    assert case.caught == [signal.SIGUSR2]


def test_all_resources_shared_with_raw_clone_and_wait(case: Case) -> None:
    # LTP's own shape: clone(2) with FLAG_ALL, then wait; the caller resynchronises
    pid = pyclone.clone(case.action, int(FLAG_ALL) | signal.SIGCHLD)
    status = reap(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert case.modified_vm() and case.modified_files() and case.modified_fs()
    assert case.modified_sig_in_kernel()
    # told already if the task had ended when clone returned, else by the caller now
    told = signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    assert actions.resync_signals(case.action) == ([] if told else [signal.SIGUSR2])
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    assert actions.resync_signals(case.action) == []  # already in agreement


def test_all_resources_shared_with_vfork(case: Case) -> None:
    # with CLONE_VFORK the task has ended when clone returns: it resynchronises itself
    pid = pyclone.clone(case.action, int(FLAG_ALL | CloneFlag.VFORK) | signal.SIGCHLD)
    assert os.waitstatus_to_exitcode(reap(pid)) == 0
    assert case.modified_vm() and case.modified_files() and case.modified_fs()
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN


def test_default_signal_under_clone_sighand(healthy: Health) -> None:
    old = signal.signal(signal.SIGUSR2, lambda *_: None)
    try:
        action = actions.default_signal(signal.SIGUSR2)
        with pyclone.spawn_task(action, share=["vm", "sighand"]) as task:
            assert task.wait(WAIT) == 0
        assert _pyclone._signal_disposition(signal.SIGUSR2) == 0
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_a_thread_task_changes_the_process_dispositions(healthy: Health) -> None:
    old = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        with pyclone.spawn_task(actions.ignore_signal(signal.SIGUSR1), share="thread") as task:
            assert task.wait(WAIT) == 0
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_default_signal_arguments() -> None:
    assert repr(actions.default_signal(signal.SIGTERM)) == "default_signal(SIGTERM)"
    with pytest.raises(ValueError, match="cannot be ignored or caught"):
        actions.default_signal(signal.SIGSTOP)
    with pytest.raises(ValueError, match=r"1\.\.64"):
        actions.default_signal(0)
    with pytest.raises(TypeError, match="signum"):
        actions.default_signal("SIGTERM")  # type: ignore[arg-type]
