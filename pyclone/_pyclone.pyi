"""Type stubs for the C module pyclone._pyclone."""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, final

CSIGNAL: int
CLONE_NEWTIME: int
CLONE_VM: int
CLONE_FS: int
CLONE_FILES: int
CLONE_SIGHAND: int
CLONE_PIDFD: int
CLONE_PTRACE: int
CLONE_VFORK: int
CLONE_PARENT: int
CLONE_THREAD: int
CLONE_NEWNS: int
CLONE_SYSVSEM: int
CLONE_SETTLS: int
CLONE_PARENT_SETTID: int
CLONE_CHILD_CLEARTID: int
CLONE_DETACHED: int
CLONE_UNTRACED: int
CLONE_CHILD_SETTID: int
CLONE_NEWCGROUP: int
CLONE_NEWUTS: int
CLONE_NEWIPC: int
CLONE_NEWUSER: int
CLONE_NEWPID: int
CLONE_NEWNET: int
CLONE_IO: int
CLONE_CLEAR_SIGHAND: int
CLONE_INTO_CGROUP: int
WALL: int
KCMP_FILE: int
KCMP_VM: int
KCMP_FILES: int
KCMP_FS: int
KCMP_SIGHAND: int
KCMP_IO: int
KCMP_SYSVSEM: int
KCMP_EPOLL_TFD: int
MAX_SET_TID: int

class UnsupportedFlags(ValueError): ...

class _action_program:
    """An action compiled into raw system calls (private; see pyclone.actions)."""

    labels: tuple[str, ...]
    def __init__(
        self,
        ops: Sequence[tuple[Any, ...]],
        make_error: Callable[[int, str, int], OSError],
        on_end: Callable[[], object] | None = None,
    ) -> None: ...

class _ActionLike(Protocol):
    @property
    def _program(self) -> _action_program: ...

_Child = Callable[[], Any] | _ActionLike | _action_program

def clone(
    fn: _Child,
    flags: int,
    stack_size: int = 0,
    /,
    *,
    allow_threads: bool = False,
    exec_mask: Iterable[int] | None = None,
) -> int: ...
def clone3(
    fn: _Child,
    flags: int = 0,
    /,
    *,
    exit_signal: int = 17,
    pidfd: bool = False,
    set_tid: Sequence[int] = (),
    cgroup: int | None = None,
    stack_size: int = 0,
    allow_threads: bool = False,
    exec_mask: Iterable[int] | None = None,
) -> tuple[int, int | None]: ...
def kcmp(pid1: int, pid2: int, type: int, idx1: int = 0, idx2: int = 0, /) -> int: ...
def _signal_disposition(signum: int, /) -> int: ...
def _set_error_hook(hook: Callable[[int, int, str, int], OSError] | None, /) -> None: ...
def _tstate_id() -> int: ...
def _thread_count() -> int: ...

# -- the system calls the sandbox is built from (src/nsutil.c) ---------------
MS_RDONLY: int
MS_NOSUID: int
MS_NODEV: int
MS_NOEXEC: int
MS_REMOUNT: int
MS_NOATIME: int
MS_NODIRATIME: int
MS_BIND: int
MS_REC: int
MS_SILENT: int
MS_PRIVATE: int
MS_SLAVE: int
MS_RELATIME: int
MS_STRICTATIME: int
MNT_FORCE: int
MNT_DETACH: int
MNT_EXPIRE: int
UMOUNT_NOFOLLOW: int
PR_SET_PDEATHSIG: int
PR_GET_PDEATHSIG: int
PR_SET_KEEPCAPS: int
PR_CAPBSET_READ: int
PR_CAPBSET_DROP: int
PR_SET_NO_NEW_PRIVS: int
PR_GET_NO_NEW_PRIVS: int
PR_CAP_AMBIENT: int
PR_CAP_AMBIENT_IS_SET: int
PR_CAP_AMBIENT_CLEAR_ALL: int

def mount(
    source: str | bytes | None,
    target: str | bytes,
    fstype: str | bytes | None = None,
    flags: int = 0,
    data: str | bytes | None = None,
    /,
) -> None: ...
def umount2(target: str | bytes, flags: int = 0, /) -> None: ...
def pivot_root(new_root: str | bytes, put_old: str | bytes, /) -> None: ...
def setdomainname(name: str | bytes, /) -> None: ...
def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0, /) -> int: ...
def capget(pid: int = 0, /) -> tuple[int, int, int]: ...
def capset(effective: int, permitted: int, inheritable: int, /) -> None: ...

# -- seccomp (src/seccomp.c) --------------------------------------------------
def set_seccomp_filter(program: bytes | bytearray | memoryview, /) -> None: ...

# -- clone3 arguments, pidfds and cgroups (src/clone.c, src/pidfd.c) --------
def pidfd_send_signal(pidfd: int | Fd, sig: int, value: int | None = None, /) -> None: ...
def _await_exit(
    pidfd: int | Fd,
    fd: int | Fd,
    buffer: bytearray,
    limit: int,
    timeout: float = -1.0,
    reap: bool = True,
    /,
) -> tuple[bool, int | None, bool] | None: ...
def unshare(flags: int, /) -> None: ...
def setns(fd: int, nstype: int = 0, /) -> None: ...

# -- descriptors -------------------------------------------------------------

@final
class Fd:
    """The one owner of a file descriptor: closes it exactly once."""

    def __init__(self, fd: int) -> None: ...
    @property
    def fd(self) -> int | None: ...
    def close(self) -> None: ...
    def dup(self) -> Fd: ...

# -- actions (C-level children) ---------------------------------------------

class _action_run:
    """The stack and report page of one task running an action."""

    finished: bool
    def join(self, timeout: float | None = None, /) -> bool: ...
    def collect(self) -> tuple[int | None, OSError | None, bool]: ...
    def outcome(self) -> tuple[int, int, int, int]: ...
    def error(self) -> OSError | None: ...
    def cancel(self, signum: int, /) -> None: ...
    def release(self) -> None: ...

_act_clone3: int
_act_running: int
_act_exited: int
_act_failed: int
_act_execing: int
_act_cancelled: int

def _spawn_action(
    action: Any,
    flags: int,
    exit_signal: int,
    pidfd: bool,
    clone3: bool,
    stack_size: int,
    exec_mask: Iterable[int] | None = None,
    /,
) -> tuple[int, int | None, _action_run]: ...
def _spawn_thread(action: Any, flags: int, stack_size: int, /) -> tuple[int, _action_run]: ...
def _floor(kind: str, n: int, heap_bytes: int = 0, /) -> list[float]: ...

# -- borrowed interpreter: Python callables in CLONE_VM children (src/borrowed.c)
class ChildExitRequest(BaseException): ...
class ChildExecRequest(BaseException): ...

def abandoned_thread_states() -> int: ...
def _child_kind() -> str | None: ...
def _vm_supported() -> bool: ...
