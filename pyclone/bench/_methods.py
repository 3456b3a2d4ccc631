"""The launch methods ``bench`` times: how each one starts a task, and the table of them.

A method is a pyclone call, a standard-library way to start a task, or the
C floor in the extension module.  Each knows what it is compared with and
whether this build can run it (``needs()``), so a missing feature shows as
``n/a (needs ...)`` instead of failing the run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import _pyclone, actions
from ..errors import UnsupportedFlags
from ..flags import CloneFlag
from ..task import spawn_task
from . import _programs as programs

TRUE = "/bin/true"

_VFORK_WORD = int(CloneFlag.VM | CloneFlag.VFORK) | signal.SIGCHLD

#: ``start()`` launches one task and returns ``finish()``, which waits for it.
Starter = Callable[[], Callable[[], object]]
#: ``sample()`` returns one (launch seconds or None, launch+wait seconds) pair.
Sampler = Callable[[], tuple[float | None, float]]


# -- the children ---------------------------------------------------------------


def _noop() -> None:
    pass


def _small() -> tuple[int, str]:
    return (42, "ok")


# -- feature detection ----------------------------------------------------------


def _need_actions(*names: str) -> str | None:
    missing = [n for n in names if not hasattr(actions, n)]
    if missing:
        return f"needs pyclone.actions.{', '.join(missing)}"
    return None


def _need_floor() -> str | None:
    if not hasattr(_pyclone, "_floor"):
        return "needs the C floor harness _pyclone._floor"
    return None


def _need_vm_callable() -> str | None:
    """Python callables in CLONE_VM|CLONE_VFORK children: ask the C layer itself."""
    try:
        pid = _pyclone.clone(_noop, _VFORK_WORD)
    except UnsupportedFlags as exc:
        return f"Python callables in CLONE_VM|CLONE_VFORK children are refused here: {exc}"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"
    os.waitpid(pid, 0)
    return None


def need_nothing() -> str | None:
    """The ``needs()`` of a method every build can run."""
    return None


# -- the starters: one launch each, returning the wait ----------------------------


def _waitpid(pid: int) -> Callable[[], object]:
    return lambda: os.waitpid(pid, 0)


def _start_os_fork() -> Callable[[], object]:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return _waitpid(pid)


def _start_clone_fork() -> Callable[[], object]:
    return _waitpid(_pyclone.clone(_noop, signal.SIGCHLD))


def _start_spawn_wait() -> Callable[[], object]:
    task = spawn_task(_noop)

    def finish() -> object:
        code = task.wait()
        task.close()
        return code

    return finish


def _start_spawn_result() -> Callable[[], object]:
    task = spawn_task(_small)

    def finish() -> object:
        value = task.result()
        task.close()
        return value

    return finish


class _Prebuilt:
    """Actions are built once (argument conversion is not what is measured)."""

    exit0: Any = None
    exec_true: Any = None

    @classmethod
    def exit_action(cls) -> Any:
        if cls.exit0 is None:
            cls.exit0 = actions.exit(0)
        return cls.exit0

    @classmethod
    def exec_action(cls) -> Any:
        if cls.exec_true is None:
            cls.exec_true = actions.exec(TRUE, [TRUE])
        return cls.exec_true


def _start_thread_action() -> Callable[[], object]:
    task = spawn_task(_Prebuilt.exit_action(), share="thread")

    def finish() -> object:
        code = task.wait()
        task.close()
        return code

    return finish


def _start_vfork_action() -> Callable[[], object]:
    return _waitpid(_pyclone.clone(_Prebuilt.exit_action(), _VFORK_WORD))


def _start_vfork_callable() -> Callable[[], object]:
    return _waitpid(_pyclone.clone(_noop, _VFORK_WORD))


def _start_vfork_result() -> Callable[[], object]:
    task = spawn_task(_small, share="vfork")

    def finish() -> object:
        value = task.result()
        task.close()
        return value

    return finish


def _need_vfork_task() -> str | None:
    reason = _need_vm_callable()
    if reason is not None:
        return reason
    try:
        _start_vfork_result()()
    except Exception as exc:
        return f"needs spawn_task(fn, share='vfork') with a result ({type(exc).__name__})"
    return None


def _start_vfork_exec() -> Callable[[], object]:
    return _waitpid(_pyclone.clone(_Prebuilt.exec_action(), _VFORK_WORD))


def _start_posix_spawn() -> Callable[[], object]:
    return _waitpid(os.posix_spawn(TRUE, [TRUE], os.environ))


def _start_popen() -> Callable[[], object]:
    return subprocess.Popen([TRUE]).wait


def _start_mp_fork() -> Callable[[], object]:
    proc = multiprocessing.get_context("fork").Process(target=_noop)
    proc.start()

    def finish() -> object:
        proc.join()
        proc.close()
        return None

    return finish


def _start_thread() -> Callable[[], object]:
    thread = threading.Thread(target=_noop)
    thread.start()
    return thread.join


# -- the samplers: one timed launch+wait each -----------------------------------------


def _timed(start: Starter) -> Sampler:
    clock = time.perf_counter

    def sample() -> tuple[float | None, float]:
        t0 = clock()
        finish = start()
        t1 = clock()
        finish()
        t2 = clock()
        return t1 - t0, t2 - t0

    return sample


def _called(call: Callable[[], object]) -> Sampler:
    """Time one call that launches and waits itself (no separate launch figure)."""
    clock = time.perf_counter

    def sample() -> tuple[float | None, float]:
        t0 = clock()
        call()
        return None, clock() - t0

    return sample


def _floor_sampler(kind: str) -> Sampler:
    """One launch+wait of the C harness; it times itself with no Python in the loop.

    ``_floor(kind, n)`` returns n round-trip times in seconds (values of a
    second or more would be microseconds and are converted).
    """

    def sample() -> tuple[float | None, float]:
        values = _pyclone._floor(kind, 1)
        value = float(values[0])
        return None, value / 1e6 if value >= 1.0 else value

    return sample


# -- the method table ---------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One way to start a task: what it is, what it is compared with, how to time it.

    ``reference`` names the method its ratio is taken against (at the same
    heap, in the same run); ``needs()`` returns None when the method can
    run here, else what it needs; ``sampler()`` builds the timing function.
    Methods of one ``group`` take turns launch by launch; ``family`` is the
    panel of the figure.  A ``once`` method starts a new program, which
    inherits nothing of the parent's heap, so it is measured at the first
    heap only, with ``budget_scale`` times the time budget.
    """

    name: str
    label: str
    reference: str | None
    needs: Callable[[], str | None]
    sampler: Callable[[], Sampler]
    group: str = "process"
    family: str = "fork-like"
    once: bool = False
    budget_scale: float = 1.0

    def __repr__(self) -> str:
        return f"<pyclone.bench.Method {self.name}: {self.label}>"


def _py(start: Starter) -> Callable[[], Sampler]:
    return lambda: _timed(start)


def _fl(kind: str) -> Callable[[], Sampler]:
    return lambda: _floor_sampler(kind)


def _prog(argv_of: Callable[[], list[str]]) -> Callable[[], Sampler]:
    return lambda: _timed(programs.process_starter(argv_of))


def _call(call: Callable[[], object]) -> Callable[[], Sampler]:
    return lambda: _called(call)


#: The figure's panels: family -> (title, the method the ratio panel divides by).
FAMILIES: dict[str, tuple[str, str]] = {
    "fork-like": ("fork-like: a copy of the parent", "os_fork"),
    "shared-memory": ("shared memory, parent suspended (vfork)", "os_fork"),
    "thread": ("thread flags", "floor_thread"),
    "exec": ("exec of a new program", "os_posix_spawn"),
    "sandbox": ("sandbox of /bin/true (namespaces)", "bwrap_subprocess"),
}

#: Whole programs: a new program inherits nothing of the heap (measured once, 4x budget).
_ONCE: dict[str, Any] = {"once": True, "budget_scale": 4.0}


#: Every method, in the order of the tables.
METHODS: tuple[Method, ...] = (
    # fork-like: a copy of the parent
    Method("floor_fork", "C floor: fork()+waitpid", None, _need_floor, _fl("fork")),
    Method("os_fork", "os.fork+os._exit+waitpid", "floor_fork", need_nothing, _py(_start_os_fork)),
    Method(
        "pyclone_clone",
        "pyclone.clone(fn, SIGCHLD)+waitpid",
        "os_fork",
        need_nothing,
        _py(_start_clone_fork),
    ),
    Method(
        "pyclone_spawn",
        "spawn_task(fn).wait()",
        "os_fork",
        need_nothing,
        _py(_start_spawn_wait),
    ),
    Method(
        "pyclone_result",
        "spawn_task(fn).result()",
        "mp_fork",
        need_nothing,
        _py(_start_spawn_result),
    ),
    Method(
        "mp_fork",
        "multiprocessing fork Process start+join",
        "os_fork",
        need_nothing,
        _py(_start_mp_fork),
    ),
    # shared memory, suspended parent
    Method(
        "pyclone_vfork_py",
        "pyclone.clone(fn, VM|VFORK|SIGCHLD)+waitpid",
        "os_fork",
        _need_vm_callable,
        _py(_start_vfork_callable),
        "vm",
        "shared-memory",
    ),
    Method(
        "pyclone_vfork_result",
        'spawn_task(fn, share="vfork").result()',
        "mp_fork",
        _need_vfork_task,
        _py(_start_vfork_result),
        "vm",
        "shared-memory",
    ),
    Method(
        "pyclone_vfork_action",
        "pyclone.clone(actions.exit(0), VM|VFORK|SIGCHLD)+waitpid",
        "floor_thread",
        lambda: _need_actions("exit"),
        _py(_start_vfork_action),
        "vm",
        "shared-memory",
    ),
    # thread flags
    Method(
        "floor_pthread",
        "C floor: pthread_create+join",
        None,
        _need_floor,
        _fl("pthread"),
        "vm",
        "thread",
    ),
    Method(
        "floor_thread",
        "C floor: clone(thread flags)+futex join",
        "floor_pthread",
        _need_floor,
        _fl("thread"),
        "vm",
        "thread",
    ),
    Method(
        "pyclone_thread_action",
        'spawn_task(actions.exit(0), share="thread").wait()',
        "floor_thread",
        lambda: _need_actions("exit"),
        _py(_start_thread_action),
        "vm",
        "thread",
    ),
    Method(
        "threading_thread",
        "threading.Thread start+join",
        "floor_pthread",
        need_nothing,
        _py(_start_thread),
        "vm",
        "thread",
    ),
    # exec of /bin/true
    Method(
        "floor_posix_spawn",
        "C floor: posix_spawn(/bin/true)+waitpid",
        None,
        _need_floor,
        _fl("posix_spawn"),
        "exec",
        "exec",
    ),
    Method(
        "floor_vfork_exec",
        "C floor: vfork+execve(/bin/true)+waitpid",
        "floor_posix_spawn",
        _need_floor,
        _fl("vfork_exec"),
        "exec",
        "exec",
    ),
    Method(
        "pyclone_exec",
        "pyclone.clone(actions.exec(/bin/true), VM|VFORK|SIGCHLD)+waitpid",
        "os_posix_spawn",
        lambda: _need_actions("exec"),
        _py(_start_vfork_exec),
        "exec",
        "exec",
    ),
    Method(
        "os_posix_spawn",
        "os.posix_spawn(/bin/true, env=os.environ)+waitpid",
        "floor_posix_spawn",
        need_nothing,
        _py(_start_posix_spawn),
        "exec",
        "exec",
    ),
    Method(
        "subprocess",
        "subprocess.Popen([/bin/true]).wait()",
        "os_posix_spawn",
        need_nothing,
        _py(_start_popen),
        "exec",
        "exec",
    ),
    # whole programs, process runs taking turns (G5: start-up; G6: the sandbox command lines)
    Method(
        "python_pass",
        "python -c pass (a whole process)",
        "os_posix_spawn",
        need_nothing,
        _prog(programs.python_pass),
        "startup",
        "exec",
        **_ONCE,
    ),
    Method(
        "python_import",
        'python -c "import pyclone" (a whole process)',
        "python_pass",
        need_nothing,
        _prog(programs.python_import),
        "startup",
        "exec",
        **_ONCE,
    ),
    Method(
        "pyclone_run_cli",
        "python -m pyclone run <sandbox> -- /bin/true (a whole process)",
        "bwrap_cli",
        programs.need_pyclone_run,
        _prog(programs.pyclone_run_cli),
        "cli",
        "sandbox",
        **_ONCE,
    ),
    Method(
        "bwrap_cli",
        "bwrap <sandbox> /bin/true (a whole process)",
        "bwrap_subprocess",
        programs.need_bwrap,
        _prog(programs.bwrap_cli),
        "cli",
        "sandbox",
        **_ONCE,
    ),
    # the sandbox in this process (G7)
    Method(
        "sandbox_run",
        'Sandbox(<sandbox>).run(["/bin/true"])',
        "bwrap_subprocess",
        programs.need_sandbox,
        _call(programs.run_sandbox),
        "sandbox",
        "sandbox",
    ),
    Method(
        "bwrap_subprocess",
        'subprocess.run(["bwrap", <sandbox>, "/bin/true"])',
        None,
        programs.need_bwrap,
        _call(programs.run_bwrap_subprocess),
        "sandbox",
        "sandbox",
    ),
)

_BY_NAME = {m.name: m for m in METHODS}


def selected(names: Iterable[str] | None) -> list[Method]:
    """The methods named, in that order (all of them for None); ValueError for a bad name."""
    if names is None:
        return list(METHODS)
    chosen = []
    for name in names:
        if name not in _BY_NAME:
            raise ValueError(f"unknown method {name!r}: choose among {', '.join(_BY_NAME)}")
        chosen.append(_BY_NAME[name])
    return chosen
