"""pyclone: create Linux tasks with clone(2) and clone3(2) from Python.

On Linux a process and a thread are both tasks; the clone flags decide what
the new task shares with its creator.  :func:`spawn_task` gives a
Popen-like :class:`Task`; :func:`clone` and :func:`clone3` are the system
calls themselves.
"""

from __future__ import annotations

from . import actions
from . import errors as _errors  # installs the error hook
from ._pyclone import (
    CLONE_CHILD_CLEARTID,
    CLONE_CHILD_SETTID,
    CLONE_CLEAR_SIGHAND,
    CLONE_DETACHED,
    CLONE_FILES,
    CLONE_FS,
    CLONE_INTO_CGROUP,
    CLONE_IO,
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWTIME,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    CLONE_PARENT,
    CLONE_PARENT_SETTID,
    CLONE_PIDFD,
    CLONE_PTRACE,
    CLONE_SETTLS,
    CLONE_SIGHAND,
    CLONE_SYSVSEM,
    CLONE_THREAD,
    CLONE_UNTRACED,
    CLONE_VFORK,
    CLONE_VM,
    CSIGNAL,
    clone,
    kcmp,
)
from .actions import ActionError
from .borrowed import abandoned_thread_states, child_exec, child_exit
from .cgroup import Cgroup, CgroupUnavailable
from .clone3_api import CloneArgumentError, clone3
from .errors import ChildError, TimeoutExpired, UnsupportedFlags
from .flags import FORK_FLAGS, PTHREAD_FLAGS, CloneFlag, flag_names
from .pidfd import pidfd_exit_status, pidfd_send_signal
from .probe import probe
from .rules import explain, predict_errno
from .sandbox import Sandbox, SandboxError
from .sharing import shared_resources
from .task import Task, spawn_task

del _errors

__version__ = "0.1.0"

__all__ = [
    "CLONE_CHILD_CLEARTID",
    "CLONE_CHILD_SETTID",
    "CLONE_CLEAR_SIGHAND",
    "CLONE_DETACHED",
    "CLONE_FILES",
    "CLONE_FS",
    "CLONE_INTO_CGROUP",
    "CLONE_IO",
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWTIME",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "CLONE_PARENT",
    "CLONE_PARENT_SETTID",
    "CLONE_PIDFD",
    "CLONE_PTRACE",
    "CLONE_SETTLS",
    "CLONE_SIGHAND",
    "CLONE_SYSVSEM",
    "CLONE_THREAD",
    "CLONE_UNTRACED",
    "CLONE_VFORK",
    "CLONE_VM",
    "CSIGNAL",
    "FORK_FLAGS",
    "PTHREAD_FLAGS",
    "ActionError",
    "Cgroup",
    "CgroupUnavailable",
    "ChildError",
    "CloneArgumentError",
    "CloneFlag",
    "Sandbox",
    "SandboxError",
    "Task",
    "TimeoutExpired",
    "UnsupportedFlags",
    "abandoned_thread_states",
    "actions",
    "child_exec",
    "child_exit",
    "clone",
    "clone3",
    "explain",
    "flag_names",
    "kcmp",
    "pidfd_exit_status",
    "pidfd_send_signal",
    "predict_errno",
    "probe",
    "shared_resources",
    "spawn_task",
]
