"""What each clone flag makes the new task share or get, which API offers it, and since when.

Read by :func:`pyclone.rules.explain` and by the documentation's flag table.
"""

from __future__ import annotations

from ..flags import CloneFlag

F = CloneFlag

_EFFECTS: dict[CloneFlag, tuple[str, str, str]] = {
    F.NEWTIME: ("new time namespace", "clone3", "5.6 (clone3: 6.3)"),
    F.VM: ("shares the address space", "both", "2.0"),
    F.FS: ("shares root, cwd and umask", "both", "2.0"),
    F.FILES: ("shares the descriptor table", "both", "2.0"),
    F.SIGHAND: ("shares the signal handlers", "both", "2.0"),
    F.PIDFD: ("returns a pidfd for the task", "both", "5.2"),
    F.PTRACE: ("traced too if the creator is", "both", "2.2"),
    F.VFORK: ("creator waits for exec or exit", "both", "2.2"),
    F.PARENT: ("shares the creator's parent", "both", "2.3.12"),
    F.THREAD: ("joins the creator's thread group", "both", "2.4.0"),
    F.NEWNS: ("new mount namespace", "both", "2.4.19"),
    F.SYSVSEM: ("shares the SysV semaphore undo list", "both", "2.5.10"),
    F.SETTLS: ("gets a new TLS (thread pointer)", "both", "2.5.32"),
    F.PARENT_SETTID: ("tid stored in the creator's memory", "both", "2.5.49"),
    F.CHILD_CLEARTID: ("tid cleared and futex woken at exit", "both", "2.5.49"),
    F.DETACHED: ("ignored (historical); clone3 rejects it", "clone", "2.5 (no effect since 2.6.2)"),
    F.UNTRACED: ("cannot be forced under ptrace", "both", "2.5.46"),
    F.CHILD_SETTID: ("tid stored in the task's memory", "both", "2.5.49"),
    F.NEWCGROUP: ("new cgroup namespace", "both", "4.6"),
    F.NEWUTS: ("new UTS namespace", "both", "2.6.19"),
    F.NEWIPC: ("new IPC namespace", "both", "2.6.19"),
    F.NEWUSER: ("new user namespace", "both", "2.6.23 (unprivileged: 3.8)"),
    F.NEWPID: ("new pid namespace (task is its pid 1)", "both", "2.6.24"),
    F.NEWNET: ("new network namespace", "both", "2.6.24"),
    F.IO: ("shares the I/O context", "both", "2.6.25"),
    F.CLEAR_SIGHAND: ("handled signals reset to default", "clone3", "5.5"),
    F.INTO_CGROUP: ("starts in the cgroup given by fd", "clone3", "5.7"),
}
