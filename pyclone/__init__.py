"""pyclone: create Linux tasks with clone(2) and clone3(2) from Python.

On Linux a process and a thread are both tasks; the clone flags decide what
the new task shares with its creator.  :func:`spawn_task` gives a
Popen-like :class:`Task`; :func:`clone` and :func:`clone3` are the system
calls themselves.

Importing the package loads only the C module (the ``CLONE_*`` constants,
:func:`kcmp`).  The first other public name read loads the core, whatever
it is; the tools built on top (:class:`Sandbox`, :func:`explain` and the
rule model, :func:`probe`, :func:`shared_resources`) load on first use, as
the ``_LAZY`` table says.
"""

# No ``from __future__`` and no typing here: ``import pyclone`` should cost no
# more than the C module (mypy reads TYPE_CHECKING by its name).
import sys

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
    kcmp,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

    from . import actions
    from ._clone_api import clone
    from .actions import ActionError
    from .borrowed import abandoned_thread_states, child_exec, child_exit
    from .cgroup import Cgroup, CgroupUnavailable
    from .clone3_api import CloneArgumentError, clone3
    from .errors import ChildError, TimeoutExpired, UnsupportedFlags
    from .flags import FORK_FLAGS, PTHREAD_FLAGS, CloneFlag, flag_names
    from .pidfd import pidfd_exit_status, pidfd_send_signal
    from .probe import probe
    from .rules import explain, predict_errno, refused
    from .sandbox import Sandbox, SandboxError
    from .sharing import shared_resources
    from .task import Task, spawn_task
else:
    ModuleType = type(sys)  # types.ModuleType, without importing types

#: The public names imported on first use (PEP 562), each with the submodule that
#: defines it.  ``tests/test_layering.py`` reads this table as the package's lazy
#: imports, so they are checked like any other edge.
_LAZY = {
    "ActionError": "actions",
    "Cgroup": "cgroup",
    "CgroupUnavailable": "cgroup",
    "ChildError": "errors",
    "CloneArgumentError": "clone3_api",
    "CloneFlag": "flags",
    "FORK_FLAGS": "flags",
    "PTHREAD_FLAGS": "flags",
    "Sandbox": "sandbox",
    "SandboxError": "sandbox",
    "Task": "task",
    "TimeoutExpired": "errors",
    "UnsupportedFlags": "errors",
    "abandoned_thread_states": "borrowed",
    "child_exec": "borrowed",
    "child_exit": "borrowed",
    "clone": "_clone_api",
    "clone3": "clone3_api",
    "explain": "rules",
    "flag_names": "flags",
    "pidfd_exit_status": "pidfd",
    "pidfd_send_signal": "pidfd",
    "predict_errno": "rules",
    "probe": "probe",
    "refused": "rules",
    "shared_resources": "sharing",
    "spawn_task": "task",
}

#: Public submodules read as attributes of the package (``pyclone.actions.exit``).
_SUBMODULES = frozenset({"actions"})

#: What the first lazy name loads, whichever it is: the core API, with what a
#: task needs (the error hook, the result transport, the reaper), so that no
#: child has to import anything later.
_CORE = ("actions", "borrowed", "cgroup", "_clone_api", "clone3_api", "pidfd", "task")


def _lazy_attribute(name: str) -> object:
    """The public name ``name``, importing its submodule the first time (``__getattr__``)."""
    if name in _SUBMODULES:
        module = name
    else:
        try:
            module = _LAZY[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    for core in _CORE:
        __import__(f"{__name__}.{core}")
    __import__(f"{__name__}.{module}")
    loaded = sys.modules[f"{__name__}.{module}"]
    value: object = loaded if name in _SUBMODULES else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


class _Package(ModuleType):
    """The package's module type: ``pyclone.probe`` stays the function.

    Importing a submodule binds it on its package, so a first ``import
    pyclone.probe`` would replace the function :func:`probe` with the module
    of the same name; the function is kept instead.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and value is sys.modules.get(f"{__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


if not TYPE_CHECKING:  # mypy sees the names imported above, not a catch-all __getattr__
    __getattr__ = _lazy_attribute

sys.modules[__name__].__class__ = _Package

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
    "refused",
    "shared_resources",
    "spawn_task",
]
