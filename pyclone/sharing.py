"""What two live tasks really share, measured with kcmp(2) and /proc/PID/ns.

:func:`shared_resources` answers from the kernel's own objects, not from
flags: ``"vm"``, ``"files"``, ``"fs"`` and ``"sighand"`` come from kcmp(2)
(KCMP_VM, KCMP_FILES, KCMP_FS, KCMP_SIGHAND compare the kernel pointers of
the two tasks); one name per namespace the two tasks are both in comes from
the (st_dev, st_ino) of ``/proc/PID/ns/*``.

``"io"`` and ``"sysvsem"`` need care.  KCMP_IO and KCMP_SYSVSEM compare
pointers that are NULL until the task first needs an I/O context or a
System V semaphore undo list, and kcmp reports NULL == NULL as "same".  So
a "same" answer is only believed when one of the two tasks is a thread
that :func:`prime` has given both objects; a "different" answer is always
right.  Call :func:`prime` in the creating thread before creating the task.

kcmp on a zombie lies (its memory, files and fs are already released, so
they compare "different", while its signal handlers still compare "same"):
:func:`shared_resources` refuses tasks that have exited.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from . import _pyclone

__all__ = ["KCMP_RESOURCES", "NAMESPACES", "prime", "primed", "shared_resources"]

#: The resources kcmp compares, by the name shared_resources() reports.
KCMP_RESOURCES: dict[str, int] = {
    "vm": _pyclone.KCMP_VM,
    "files": _pyclone.KCMP_FILES,
    "fs": _pyclone.KCMP_FS,
    "sighand": _pyclone.KCMP_SIGHAND,
    "io": _pyclone.KCMP_IO,
    "sysvsem": _pyclone.KCMP_SYSVSEM,
}

#: Namespace names, as in /proc/PID/ns (the active ones, not *_for_children).
NAMESPACES: tuple[str, ...] = ("user", "pid", "mnt", "net", "uts", "ipc", "cgroup", "time")

# Threads (by tid) that prime() gave an I/O context and a SysV undo list.
_primed: set[int] = set()
_primed_pid = os.getpid()

_SYS_IOPRIO_GET = 252  # x86-64
_SYS_IOPRIO_SET = 251
_IOPRIO_WHO_PROCESS = 1
_IPC_PRIVATE = 0
_IPC_RMID = 0
_SEM_UNDO = 0x1000


class _Sembuf(ctypes.Structure):
    _fields_ = [
        ("sem_num", ctypes.c_ushort),
        ("sem_op", ctypes.c_short),
        ("sem_flg", ctypes.c_short),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prime() -> None:
    """Give the calling thread an I/O context and a SysV semaphore undo list.

    Afterwards :func:`shared_resources` can report ``"io"`` and
    ``"sysvsem"`` between this thread and tasks it creates later.  The I/O
    priority is set to the value it already had (allocating the context);
    the undo list comes from one ``semop(SEM_UNDO)`` on a private semaphore
    set that is removed at once.  Children created later without CLONE_IO
    or CLONE_SYSVSEM get their own (or none), which compare "different".
    """
    if os.getpid() != _primed_pid:
        _forget_after_fork()
    libc = _libc()
    tid = threading.get_native_id()
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    current = _check(syscall(_SYS_IOPRIO_GET, _IOPRIO_WHO_PROCESS, tid), "ioprio_get")
    _check(syscall(_SYS_IOPRIO_SET, _IOPRIO_WHO_PROCESS, tid, current), "ioprio_set")
    semid = _check(libc.semget(_IPC_PRIVATE, 1, 0o600), "semget")
    try:
        ops = (_Sembuf * 2)(_Sembuf(0, 1, _SEM_UNDO), _Sembuf(0, -1, _SEM_UNDO))
        _check(libc.semop(semid, ops, 2), "semop")
    finally:
        libc.semctl(semid, 0, _IPC_RMID)
    _primed.add(tid)


def primed() -> bool:
    """True if :func:`prime` was called in this thread (of this process)."""
    if os.getpid() != _primed_pid:
        _forget_after_fork()
    return threading.get_native_id() in _primed


def _forget_after_fork() -> None:
    global _primed_pid
    _primed.clear()
    _primed_pid = os.getpid()


def _state(pid: int) -> str:
    """The task's state letter from /proc/PID/stat ("R", "S", "Z", ...)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"no task {pid}") from None
    return stat[stat.rindex(")") + 2]


def _require_alive(pid: int) -> None:
    if _state(pid) in "ZX":
        raise ProcessLookupError(
            errno.ESRCH,
            f"task {pid} has exited (a zombie): kcmp would compare its released memory, "
            "files and fs as different and its signal handlers as shared; measure "
            "sharing while the task runs",
        )


def _ns_ids(pid: int) -> dict[str, tuple[int, int]]:
    ids = {}
    for name in NAMESPACES:
        try:
            st = os.stat(f"/proc/{pid}/ns/{name}")
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}"):
                raise ProcessLookupError(errno.ESRCH, f"no task {pid}") from None
            continue  # this kernel lacks that namespace type
        ids[name] = (st.st_dev, st.st_ino)
    return ids


def shared_resources(pid_a: int, pid_b: int) -> frozenset[str]:
    """What tasks ``pid_a`` and ``pid_b`` share now, measured by the kernel.

    Names: ``"vm"``, ``"files"``, ``"fs"``, ``"sighand"`` (kcmp); ``"io"``
    and ``"sysvsem"`` (kcmp, only when reliable: one of the two is a thread
    :func:`prime` was called in); and every namespace the two are both in
    (``"user"``, ``"pid"``, ``"mnt"``, ``"net"``, ``"uts"``, ``"ipc"``,
    ``"cgroup"``, ``"time"``).  Pids are thread ids where it matters.

    Raises :class:`ProcessLookupError` if a task does not exist or has
    exited (kcmp on a zombie lies), and :class:`PermissionError` if the
    caller may not inspect them (kcmp needs ptrace read access to both).

    A task shares everything with itself (``"io"`` and ``"sysvsem"`` show
    only once :func:`prime` has run, so they are left out here):

    >>> import os
    >>> sorted(shared_resources(os.getpid(), os.getpid()) - {"io", "sysvsem"})[:4]
    ['cgroup', 'files', 'fs', 'ipc']
    """
    for pid in (pid_a, pid_b):
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise TypeError(f"pids must be ints, not {type(pid).__name__}")
        if pid <= 0:
            raise ValueError(f"pids must be positive, not {pid}")
        _require_alive(pid)
    if os.getpid() != _primed_pid:
        _forget_after_fork()
    # a primed thread that still runs in this process keeps both objects
    witness = any(
        pid in _primed and os.path.exists(f"/proc/self/task/{pid}") for pid in (pid_a, pid_b)
    )
    shared = set()
    for name, kind in KCMP_RESOURCES.items():
        if name in ("io", "sysvsem") and not witness:
            continue  # a "same" could be NULL == NULL
        if _pyclone.kcmp(pid_a, pid_b, kind) == 0:
            shared.add(name)
    ids_a, ids_b = _ns_ids(pid_a), _ns_ids(pid_b)
    shared.update(name for name, ident in ids_a.items() if ids_b.get(name) == ident)
    # a task that exited meanwhile makes the kcmp answers above unreliable
    for pid in (pid_a, pid_b):
        _require_alive(pid)
    return frozenset(shared)
