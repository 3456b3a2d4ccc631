"""CallerState read from /proc, checked against the kernel in forked children.

Each test puts a child in one state (pid namespace init, after
unshare(CLONE_NEWPID), chrooted, unprivileged) and compares the model's
prediction with the errno the kernel returns there.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import tempfile
import traceback
from collections.abc import Callable

import pyclone
from pyclone import CloneFlag as F
from pyclone.rules import CallerState, predict_errno

from conftest import reap, require_root


def _in_child(fn: Callable[[], int]) -> int:
    """Run fn() in a forked child; its exit code (99 if it raised)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = fn()
        except BaseException:
            traceback.print_exc()
        os._exit(code)
    return os.waitstatus_to_exitcode(reap(pid))


def _unshare(flags: int) -> None:
    """unshare(2) (os.unshare is Python 3.12+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(int(flags))) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _kernel_errno(flags: int) -> int:
    try:
        pid = pyclone.clone(lambda: 0, flags | signal.SIGCHLD, allow_threads=True)
    except OSError as exc:
        return exc.errno or -1
    if not flags & F.PARENT:
        reap(pid)
    return 0


def test_caller_state_of_a_pid_namespace_init() -> None:
    require_root("CLONE_NEWPID needs CAP_SYS_ADMIN")

    def inside() -> int:
        state = CallerState.current()
        if not state.pid_ns_init:
            return 3
        want = predict_errno(F.PARENT | signal.SIGCHLD)
        got = _kernel_errno(F.PARENT)
        return 0 if want == got == errno.EINVAL else 4

    def outer() -> int:
        pid = pyclone.clone(lambda: inside(), F.NEWPID | signal.SIGCHLD)
        return os.waitstatus_to_exitcode(reap(pid))

    assert not CallerState.current().pid_ns_init
    assert _in_child(outer) == 0


def test_caller_state_after_unshare_newpid() -> None:
    require_root("unshare(CLONE_NEWPID) needs CAP_SYS_ADMIN")

    def inside() -> int:
        _unshare(F.NEWPID)
        state = CallerState.current()
        if not state.pid_ns_for_children_differs:
            return 3
        # after the unshare CLONE_THREAD is refused (trying it for real needs an
        # actions child);
        # a plain child is still fine: the model agrees with the kernel.
        expected = predict_errno(F.THREAD | F.SIGHAND | F.VM | signal.SIGCHLD)
        if expected != errno.EINVAL:
            return 4
        return 0 if predict_errno(signal.SIGCHLD) == _kernel_errno(0) == 0 else 5

    assert _in_child(inside) == 0


def test_caller_state_when_chrooted() -> None:
    require_root("chroot needs CAP_SYS_CHROOT")
    scratch = tempfile.mkdtemp()

    def inside() -> int:
        os.chroot(scratch)
        os.chdir("/")
        state = CallerState.current()
        want = predict_errno(F.NEWUSER | signal.SIGCHLD)
        got = _kernel_errno(F.NEWUSER)
        return 0 if state.chrooted and want == got == errno.EPERM else 3

    try:
        # /proc is not visible inside the chroot: bind it in
        os.mkdir(os.path.join(scratch, "proc"))
        code = _in_child(lambda: _chroot_with_proc(scratch, inside))
    finally:
        os.rmdir(os.path.join(scratch, "proc"))
        os.rmdir(scratch)
    assert code == 0
    assert not CallerState.current().chrooted


def _chroot_with_proc(root: str, then: Callable[[], int]) -> int:
    _unshare(F.NEWNS)
    libc = ctypes.CDLL(None, use_errno=True)
    ms_rec, ms_private, ms_bind = 0x4000, 0x40000, 0x1000
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        return 10
    if libc.mount(b"/proc", os.path.join(root, "proc").encode(), None, ms_bind | ms_rec, None):
        return 11
    return then()


def test_caller_state_reads_this_process() -> None:
    state = CallerState.current()
    with open("/proc/self/status") as f:
        caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    assert state.sys_admin == bool(caps >> 21 & 1)
    assert state.real_root == (os.getuid() == 0)
    assert not state.pid_ns_init and not state.chrooted and state.ids_mapped


def test_caller_state_unprivileged() -> None:
    require_root("dropping to uid 65534 needs root first")

    def inside() -> int:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        state = CallerState.current()
        ok = state == CallerState.unprivileged()
        return 0 if ok and predict_errno(F.NEWNET | 17) == errno.EPERM else 3

    assert _in_child(inside) == 0
