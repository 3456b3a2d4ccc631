"""``python -m pyclone bench``: what it costs to launch a task, measured from Python.

Two measurements, both run in this process against the real kernel:

* ``bench`` (launch): every *method* (a pyclone call or a standard-library
  way to start a task, or the C floor in the extension module) is timed
  launch-alone and launch+wait, with the parent's heap allocated and touched
  at several sizes, because fork copies the page tables (``VmPTE``) of that
  heap and a thread does not.  The methods are interleaved one launch at a
  time, so each ratio compares figures taken side by side in one run.
* ``bench switch``: a pipe ping-pong between two tasks created with process
  flags or with thread flags, in nanoseconds per context switch.

A method whose feature is missing from this build is listed as
``n/a (needs ...)`` and starts working as soon as the feature lands.
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib
import math
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import _pyclone
from .errors import UnsupportedFlags
from .flags import CloneFlag
from .task import spawn_task

__all__ = [
    "CSV_COLUMNS",
    "GOALS",
    "METHODS",
    "Cell",
    "Goal",
    "GoalResult",
    "Method",
    "Run",
    "SwitchResult",
    "evaluate_goals",
    "parse_heaps",
    "run_launch",
    "run_switch",
    "vm_pte_kib",
]

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
TRUE = "/bin/true"
DEFAULT_HEAPS_MIB: tuple[float, ...] = (0, 2, 32, 256)
QUICK_HEAPS_MIB: tuple[float, ...] = (0, 2, 32)

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


def _actions() -> Any:
    """The ``pyclone.actions`` module, or None while it is not built."""
    try:
        return importlib.import_module("pyclone.actions")
    except ImportError:
        return None


def _need_actions(*names: str) -> str | None:
    mod = _actions()
    if mod is None:
        return "needs pyclone.actions, branch vm"
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        return f"needs pyclone.actions.{', '.join(missing)}, branch vm"
    return None


def _need_floor() -> str | None:
    if not hasattr(_pyclone, "_floor"):
        return "needs the C floor harness _pyclone._floor, branch vm"
    return None


def _need_vm_callable() -> str | None:
    """Python callables in CLONE_VM|CLONE_VFORK children: ask the C layer itself."""
    try:
        pid = _pyclone.clone(_noop, _VFORK_WORD)
    except UnsupportedFlags:
        return "needs Python callables in CLONE_VM|CLONE_VFORK children, branch vmpy"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"
    os.waitpid(pid, 0)
    return None


def _need_nothing() -> str | None:
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
            cls.exit0 = _actions().exit(0)
        return cls.exit0

    @classmethod
    def exec_action(cls) -> Any:
        if cls.exec_true is None:
            cls.exec_true = _actions().exec(TRUE, [TRUE])
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
        return (
            f"needs spawn_task(fn, share='vfork') with a result ({type(exc).__name__}), branch vmpy"
        )
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
    """

    name: str
    label: str
    reference: str | None
    needs: Callable[[], str | None]
    sampler: Callable[[], Sampler]
    group: str = "process"

    def __repr__(self) -> str:
        return f"<pyclone.bench.Method {self.name}: {self.label}>"


def _py(start: Starter) -> Callable[[], Sampler]:
    return lambda: _timed(start)


def _fl(kind: str) -> Callable[[], Sampler]:
    return lambda: _floor_sampler(kind)


#: Every method, in the order of the tables.
METHODS: tuple[Method, ...] = (
    # fork-like: a copy of the parent
    Method("floor_fork", "C floor: fork()+waitpid", None, _need_floor, _fl("fork")),
    Method("os_fork", "os.fork+os._exit+waitpid", "floor_fork", _need_nothing, _py(_start_os_fork)),
    Method(
        "pyclone_clone",
        "pyclone.clone(fn, SIGCHLD)+waitpid",
        "os_fork",
        _need_nothing,
        _py(_start_clone_fork),
    ),
    Method(
        "pyclone_spawn",
        "spawn_task(fn).wait()",
        "os_fork",
        _need_nothing,
        _py(_start_spawn_wait),
    ),
    Method(
        "pyclone_result",
        "spawn_task(fn).result()",
        "mp_fork",
        _need_nothing,
        _py(_start_spawn_result),
    ),
    Method(
        "mp_fork",
        "multiprocessing fork Process start+join",
        "os_fork",
        _need_nothing,
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
    ),
    Method(
        "pyclone_vfork_result",
        'spawn_task(fn, share="vfork").result()',
        "mp_fork",
        _need_vfork_task,
        _py(_start_vfork_result),
        "vm",
    ),
    Method(
        "pyclone_vfork_action",
        "pyclone.clone(actions.exit(0), VM|VFORK|SIGCHLD)+waitpid",
        "floor_thread",
        lambda: _need_actions("exit"),
        _py(_start_vfork_action),
        "vm",
    ),
    # thread flags
    Method(
        "floor_pthread", "C floor: pthread_create+join", None, _need_floor, _fl("pthread"), "vm"
    ),
    Method(
        "floor_thread",
        "C floor: clone(thread flags)+futex join",
        "floor_pthread",
        _need_floor,
        _fl("thread"),
        "vm",
    ),
    Method(
        "pyclone_thread_action",
        'spawn_task(actions.exit(0), share="thread").wait()',
        "floor_thread",
        lambda: _need_actions("exit"),
        _py(_start_thread_action),
        "vm",
    ),
    Method(
        "threading_thread",
        "threading.Thread start+join",
        "floor_pthread",
        _need_nothing,
        _py(_start_thread),
        "vm",
    ),
    # exec of /bin/true
    Method(
        "floor_posix_spawn",
        "C floor: posix_spawn(/bin/true)+waitpid",
        None,
        _need_floor,
        _fl("posix_spawn"),
        "exec",
    ),
    Method(
        "floor_vfork_exec",
        "C floor: vfork+execve(/bin/true)+waitpid",
        "floor_posix_spawn",
        _need_floor,
        _fl("vfork_exec"),
        "exec",
    ),
    Method(
        "pyclone_exec",
        "pyclone.clone(actions.exec(/bin/true), VM|VFORK|SIGCHLD)+waitpid",
        "os_posix_spawn",
        lambda: _need_actions("exec"),
        _py(_start_vfork_exec),
        "exec",
    ),
    Method(
        "os_posix_spawn",
        "os.posix_spawn(/bin/true, env=os.environ)+waitpid",
        "floor_posix_spawn",
        _need_nothing,
        _py(_start_posix_spawn),
        "exec",
    ),
    Method(
        "subprocess",
        "subprocess.Popen([/bin/true]).wait()",
        "os_posix_spawn",
        _need_nothing,
        _py(_start_popen),
        "exec",
    ),
)

_BY_NAME = {m.name: m for m in METHODS}


# -- goals ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A ratio the benchmark must show: ``method`` over ``reference`` at most ``target``.

    With ``reference`` None the goal is about flatness: the method's cost at
    the largest heap over its cost at the smallest.  ``max_heap_mib`` limits
    the heaps the goal applies to.
    """

    key: str
    text: str
    method: str
    reference: str | None
    target: float
    max_heap_mib: float | None = None


#: The goals of issue 7, checked on the launch+wait medians.
GOALS: tuple[Goal, ...] = (
    Goal(
        "G1",
        "fork-like spawn+wait of a no-op callable vs os.fork",
        "pyclone_spawn",
        "os_fork",
        1.10,
    ),
    Goal("G1c", "same through pyclone.clone+waitpid vs os.fork", "pyclone_clone", "os_fork", 1.10),
    Goal("G2", "exec spawn of /bin/true vs os.posix_spawn", "pyclone_exec", "os_posix_spawn", 1.10),
    Goal("G2f", "exec spawn: largest heap vs 0 MiB (flat)", "pyclone_exec", None, 1.15),
    Goal(
        "G3",
        "thread-flags action spawn+join vs C floor",
        "pyclone_thread_action",
        "floor_thread",
        1.25,
    ),
    Goal(
        "G3t",
        "thread-flags action spawn+join vs threading.Thread",
        "pyclone_thread_action",
        "threading_thread",
        0.50,
    ),
    Goal(
        "G4", "result() round trip vs multiprocessing fork", "pyclone_result", "mp_fork", 0.50, 32
    ),
)


# -- heap -------------------------------------------------------------------------------


def parse_heaps(text: str) -> list[float]:
    """Parse ``"0,2,32,256,1G"`` into MiB: plain numbers are MiB, K/M/G suffixes allowed."""
    sizes: list[float] = []
    for raw in text.split(","):
        item = raw.strip().upper().removesuffix("IB").removesuffix("B")
        if not item:
            continue
        scale = 1.0
        if item[-1] in "KMG":
            scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}[item[-1]]
            item = item[:-1]
        try:
            value = float(item) * scale
        except ValueError:
            raise ValueError(f"bad heap size {raw!r}: use MiB, or a K/M/G suffix") from None
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"bad heap size {raw!r}: must be a non-negative size")
        sizes.append(value)
    if not sizes:
        raise ValueError("no heap sizes given")
    return sorted(set(sizes))


def _touched_heap(mib: float) -> bytearray:
    """A heap of ``mib`` MiB with every page written, so that it has page-table entries."""
    size = int(mib * MIB)
    heap = bytearray(size)
    if size:
        heap[::PAGE] = b"\x01" * len(range(0, size, PAGE))
    return heap


def vm_pte_kib(pid: int | str = "self") -> int:
    """The page-table size (``VmPTE``, in KiB) of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmPTE:"):
                return int(line.split()[1])
    raise OSError(f"no VmPTE in /proc/{pid}/status")


# -- running ------------------------------------------------------------------------------


@dataclass
class Cell:
    """Samples of one method at one heap size (seconds)."""

    launch: list[float] = field(default_factory=list)
    roundtrip: list[float] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<pyclone.bench.Cell {len(self.roundtrip)} samples>"


@dataclass
class Run:
    """Everything one ``bench`` run measured."""

    heaps: list[float]
    pin: int | None
    vm_pte: dict[float, int] = field(default_factory=dict)
    cells: dict[tuple[str, float], Cell] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    methods: list[Method] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"<pyclone.bench.Run heaps={self.heaps} pin={self.pin} "
            f"methods={len(self.methods)} n/a={len(self.unavailable)}>"
        )

    def median(
        self, method: str, heap: float, metric: str = "roundtrip", stat: str = "median"
    ) -> float | None:
        """Median (or, with ``stat="min"``, minimum) in seconds; None without samples."""
        cell = self.cells.get((method, heap))
        values: list[float] = getattr(cell, metric) if cell is not None else []
        if not values:
            return None
        return min(values) if stat == "min" else statistics.median(values)

    def ratio(
        self,
        method: str,
        reference: str | None,
        heap: float,
        metric: str,
        stat: str = "median",
    ) -> float | None:
        """``method`` over ``reference`` at the same heap; None if either is missing."""
        if reference is None:
            return None
        a = self.median(method, heap, metric, stat)
        b = self.median(reference, heap, metric, stat)
        return a / b if a is not None and b else None


def _selected(names: Iterable[str] | None) -> list[Method]:
    if names is None:
        return list(METHODS)
    chosen = []
    for name in names:
        if name not in _BY_NAME:
            raise ValueError(f"unknown method {name!r}: choose among {', '.join(_BY_NAME)}")
        chosen.append(_BY_NAME[name])
    return chosen


def run_launch(
    heaps: Sequence[float],
    *,
    repeat: int = 300,
    budget: float = 1.5,
    min_samples: int = 10,
    pin: int | None = None,
    methods: Iterable[str] | None = None,
    progress: TextIO | None = None,
) -> Run:
    """Measure every available method at every heap size (MiB) and return the samples.

    At each heap the methods take turns, one launch each, until a method has
    ``repeat`` samples, or has used ``budget`` seconds and has at least
    ``min_samples``.  The first launch of each method at each heap is a
    warm-up and is dropped.
    """
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    run = Run(heaps=sorted(heaps), pin=pin)
    samplers: dict[str, Sampler] = {}
    for method in _selected(methods):
        reason = method.needs()
        if reason is not None:
            run.unavailable[method.name] = reason
            continue
        run.methods.append(method)
        samplers[method.name] = method.sampler()

    heap: bytearray | None = None
    gc_was_enabled = gc.isenabled()
    try:
        with warnings.catch_warnings():
            # os.fork warns on 3.12+ while a joined thread is still winding down
            warnings.simplefilter("ignore", DeprecationWarning)
            for mib in run.heaps:
                heap = None
                gc.collect()
                heap = _touched_heap(mib)
                run.vm_pte[mib] = vm_pte_kib()
                gc.disable()
                _measure_heap(run, samplers, mib, repeat, budget, min_samples, progress)
                gc.enable()
    finally:
        del heap
        if gc_was_enabled:
            gc.enable()
        else:
            gc.disable()
    return run


def _measure_heap(
    run: Run,
    samplers: dict[str, Sampler],
    mib: float,
    repeat: int,
    budget: float,
    min_samples: int,
    progress: TextIO | None,
) -> None:
    names = [m.name for m in run.methods if m.name not in run.unavailable]
    for name in names:
        run.cells[(name, mib)] = Cell()
    if progress is not None:
        progress.write(f"heap {_fmt_heap(mib)} (VmPTE {run.vm_pte[mib]} kB): ")
        progress.flush()
    # Methods take turns within their group only: after a fork every page of
    # the parent is write-protected, and the next launch would pay for the
    # copy-on-write faults of whatever it touches.  The memory-sharing and
    # exec groups never fork, so they are measured apart from the fork group.
    groups: dict[str, list[str]] = {}
    for method in run.methods:
        if method.name in names:
            groups.setdefault(method.group, []).append(method.name)
    for group in groups.values():
        _interleave(run, samplers, mib, group, repeat, budget, min_samples)
    if progress is not None:
        progress.write("done\n")
        progress.flush()


def _interleave(
    run: Run,
    samplers: dict[str, Sampler],
    mib: float,
    active: list[str],
    repeat: int,
    budget: float,
    min_samples: int,
) -> None:
    """One launch per method in turn until each has its samples; the first round is warm-up."""
    clock = time.perf_counter
    spent = dict.fromkeys(active, 0.0)
    warm = True
    while active:
        for name in list(active):
            t0 = clock()
            try:
                launch, total = samplers[name]()
            except Exception as exc:  # a feature that is present but broken
                run.unavailable[name] = f"failed: {type(exc).__name__}: {exc}"
                active.remove(name)
                continue
            spent[name] += clock() - t0
            if warm:
                continue
            cell = run.cells[(name, mib)]
            if launch is not None:
                cell.launch.append(launch)
            cell.roundtrip.append(total)
            n = len(cell.roundtrip)
            if n >= repeat or (spent[name] >= budget and n >= min_samples):
                active.remove(name)
        warm = False


# -- statistics and output ----------------------------------------------------------------


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


#: Columns of the CSV file, one row per method x heap x metric.
CSV_COLUMNS: tuple[str, ...] = (
    "method",
    "label",
    "group",
    "metric",
    "heap_mib",
    "vm_pte_kb",
    "available",
    "n",
    "median_us",
    "min_us",
    "p10_us",
    "p25_us",
    "p75_us",
    "p90_us",
    "max_us",
    "reference",
    "ratio",
    "pinned_cpu",
    "note",
)


def _rows(run: Run) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for method in _selected(None):
        for metric in ("launch", "roundtrip"):
            for mib in run.heaps:
                row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS, "")
                row.update(
                    method=method.name,
                    label=method.label,
                    group=method.group,
                    metric=metric,
                    heap_mib=_num(mib),
                    vm_pte_kb=run.vm_pte.get(mib, ""),
                    reference=method.reference or "",
                    pinned_cpu="" if run.pin is None else run.pin,
                )
                cell = run.cells.get((method.name, mib))
                values = getattr(cell, metric) if cell is not None else []
                if method.name in run.unavailable and not values:
                    row.update(available=0, n=0, note=f"n/a ({run.unavailable[method.name]})")
                elif not values:
                    if metric == "launch" and cell is not None and cell.roundtrip:
                        continue  # the C floor times the round trip only
                    if method.name not in {m.name for m in run.methods}:
                        continue  # not selected
                    row.update(available=0, n=0, note="no samples")
                else:
                    us = [v * 1e6 for v in values]
                    ratio = run.ratio(method.name, method.reference, mib, metric)
                    row.update(
                        available=1,
                        n=len(us),
                        median_us=f"{statistics.median(us):.2f}",
                        min_us=f"{min(us):.2f}",
                        p10_us=f"{_quantile(us, 0.10):.2f}",
                        p25_us=f"{_quantile(us, 0.25):.2f}",
                        p75_us=f"{_quantile(us, 0.75):.2f}",
                        p90_us=f"{_quantile(us, 0.90):.2f}",
                        max_us=f"{max(us):.2f}",
                        ratio="" if ratio is None else f"{ratio:.3f}",
                    )
                rows.append(row)
    return rows


def write_csv(run: Run, path: str) -> None:
    """Write one row per method x metric x heap (n/a methods too, with ``available=0``)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(_rows(run))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _fmt_heap(mib: float) -> str:
    if mib >= 1024 and (mib / 1024).is_integer():
        return f"{int(mib // 1024)} GiB"
    return f"{_num(mib)} MiB"


def _us(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 1000:
        return f"{us:,.0f}"
    if us >= 100:
        return f"{us:.0f}"
    return f"{us:.1f}"


def format_tables(run: Run) -> str:
    """The text report: per heap, median/min/max of both metrics and the ratios."""
    out: list[str] = []
    pin = f"pinned to CPU {run.pin}" if run.pin is not None else "UNPINNED (use --pin CPU)"
    out.append(f"Launch cost, µs ({pin}; Python {sys.version.split()[0]}, pid {os.getpid()})")
    head = (
        f"{'method':<24} {'launch med':>10} {'rt median':>10} {'min':>10} {'max':>10}"
        f" {'n':>5}  {'ratio':>7} to reference"
    )
    for mib in run.heaps:
        out.append("")
        out.append(f"== heap {_fmt_heap(mib)}  (parent VmPTE {run.vm_pte.get(mib, '?')} kB) ==")
        out.append(head)
        for method in run.methods:
            cell = run.cells.get((method.name, mib))
            if cell is None or not cell.roundtrip:
                continue
            rt = cell.roundtrip
            launch = _us(statistics.median(cell.launch)) if cell.launch else "-"
            ratio = run.ratio(method.name, method.reference, mib, "roundtrip")
            rtext = f"x{ratio:.2f}" if ratio is not None else "-"
            ref = method.reference or "(floor)"
            out.append(
                f"{method.name:<24} {launch:>10} {_us(statistics.median(rt)):>10}"
                f" {_us(min(rt)):>10} {_us(max(rt)):>10} {len(rt):>5}  {rtext:>7} {ref}"
            )
    out.append("")
    out.append("Median launch+wait round trip, µs, by heap size")
    out.append(f"{'method':<24}" + "".join(f" {_fmt_heap(h):>10}" for h in run.heaps) + "  what")
    for method in run.methods:
        cells = []
        for mib in run.heaps:
            m = run.median(method.name, mib)
            cells.append(f" {_us(m) if m is not None else '-':>10}")
        out.append(f"{method.name:<24}" + "".join(cells) + f"  {method.label}")
    out.append(f"{'parent VmPTE kB':<24}" + "".join(f" {run.vm_pte[h]:>10}" for h in run.heaps))
    if run.unavailable:
        out.append("")
        for name, reason in run.unavailable.items():
            out.append(f"{name:<24} n/a ({reason})")
    return "\n".join(out)


@dataclass(frozen=True)
class GoalResult:
    """How one goal fared: the worst ratio over the heaps it applies to."""

    goal: Goal
    ratios: dict[float, float]
    worst: float | None
    note: str
    #: The same ratios taken between minimums (steadier on a busy machine).
    min_ratios: dict[float, float] = field(default_factory=dict)

    @property
    def worst_min(self) -> float | None:
        """The worst ratio of minimums, or None."""
        return max(self.min_ratios.values()) if self.min_ratios else None

    @property
    def passed(self) -> bool | None:
        """True/False, or None when the goal could not be measured."""
        return None if self.worst is None else self.worst <= self.goal.target

    def __repr__(self) -> str:
        return f"<pyclone.bench.GoalResult {self.goal.key} worst={self.worst} passed={self.passed}>"


def evaluate_goals(run: Run) -> list[GoalResult]:
    """Check every goal of :data:`GOALS` against a run's launch+wait medians."""
    results = []
    for goal in GOALS:
        missing = [
            n for n in (goal.method, goal.reference) if n is not None and n in run.unavailable
        ]
        if missing:
            why = "; ".join(f"{n}: {run.unavailable[n]}" for n in missing)
            results.append(GoalResult(goal, {}, None, f"n/a ({why})"))
            continue
        heaps = [h for h in run.heaps if goal.max_heap_mib is None or h <= goal.max_heap_mib]
        ratios: dict[float, float] = {}
        min_ratios: dict[float, float] = {}
        note = ""
        if goal.reference is None:
            lo, hi = run.heaps[0], run.heaps[-1]
            for stat, into in (("median", ratios), ("min", min_ratios)):
                a = run.median(goal.method, hi, stat=stat)
                b = run.median(goal.method, lo, stat=stat)
                if a is not None and b and hi > lo:
                    into[hi] = a / b
            if ratios:
                note = f"{_fmt_heap(hi)} / {_fmt_heap(lo)}"
                if hi < 1024:
                    note += " (the goal is stated for 1 GiB: add --heap ...,1G)"
        else:
            for h in heaps:
                r = run.ratio(goal.method, goal.reference, h, "roundtrip")
                if r is not None:
                    ratios[h] = r
                r = run.ratio(goal.method, goal.reference, h, "roundtrip", "min")
                if r is not None:
                    min_ratios[h] = r
        worst = max(ratios.values()) if ratios else None
        if worst is None and not note:
            note = "not measured"
        results.append(GoalResult(goal, ratios, worst, note, min_ratios))
    return results


def format_goals(results: Sequence[GoalResult], pin: int | None) -> str:
    """The goal table: measured ratio per heap, target, pass or miss (and by how much)."""
    out = [
        "Goals (launch+wait medians, ratios side by side in this run"
        + ("" if pin is not None else "; UNPINNED, do not trust")
        + ")",
        f"{'goal':<5} {'target':>7} {'worst':>7} {'(min)':>7}  {'verdict':<16}"
        " per heap: median ratio (ratio of minimums)",
    ]
    for res in results:
        g = res.goal
        if res.worst is None:
            out.append(
                f"{g.key:<5} {'<=' + format(g.target, '.2f'):>7} {'-':>7} {'-':>7}  {res.note}"
            )
            out.append(f"{'':<5} {g.text}")
            continue
        miss = 100 * (res.worst / g.target - 1)
        verdict = "pass" if res.passed else f"MISS by {miss:.1f}%"
        per = "  ".join(
            f"{_fmt_heap(h)}: x{r:.2f}"
            + (f" ({res.min_ratios[h]:.2f})" if h in res.min_ratios else "")
            for h, r in res.ratios.items()
        )
        wmin = res.worst_min
        out.append(
            f"{g.key:<5} {'<=' + format(g.target, '.2f'):>7} {'x' + format(res.worst, '.2f'):>7}"
            f" {'x' + format(wmin, '.2f') if wmin is not None else '-':>7}"
            f"  {verdict:<16} {per} {res.note}".rstrip()
        )
        out.append(f"{'':<5} {g.text}")
    return "\n".join(out)


# -- plot -------------------------------------------------------------------------------------


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (``pip install 'pyclone[plot]'``)."""


def write_plot(run: Run, path: str) -> None:
    """Draw launch time against heap size, one line per method, like the article's figure.

    Log-scale time, median with p10..p90 error bars; a third panel shows
    the parent's VmPTE.  Needs matplotlib (the ``plot`` extra).
    """
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install 'pyclone[plot]'"
        ) from None
    fig, axes = plt.subplots(1, 3, figsize=(17, 6), gridspec_kw={"width_ratios": [5, 5, 2]})
    xs = run.heaps
    for ax, metric, title in (
        (axes[0], "launch", "launch (until the call returns in the parent)"),
        (axes[1], "roundtrip", "launch + wait round trip"),
    ):
        # 20 distinct colours and a marker per method: tab10 alone repeats after 10 lines
        colours = plt.get_cmap("tab20").colors
        markers = "osD^v<>phX*"
        for index, method in enumerate(run.methods):
            pts = []
            for mib in xs:
                cell = run.cells.get((method.name, mib))
                values = getattr(cell, metric) if cell is not None else []
                if values:
                    us = [v * 1e6 for v in values]
                    med = statistics.median(us)
                    pts.append((mib, med, med - _quantile(us, 0.1), _quantile(us, 0.9) - med))
            if not pts:
                continue
            style = "--" if method.name.startswith("floor_") else "-"
            ax.errorbar(
                [p[0] for p in pts],
                [p[1] for p in pts],
                yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                fmt=markers[index % len(markers)] + style,
                color=colours[index % len(colours)],
                capsize=3,
                markersize=4,
                label=method.name,
            )
        ax.set_xscale("symlog", linthresh=1)
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([_fmt_heap(h) for h in xs], rotation=30)
        ax.set_xlabel("parent heap, allocated and touched")
        ax.set_ylabel("µs (median, bars p10..p90)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    axes[2].bar([_fmt_heap(h) for h in xs], [run.vm_pte[h] for h in xs], color="gray")
    axes[2].set_title("parent VmPTE (kB)")
    axes[2].tick_params(axis="x", rotation=30)
    pin = f"pinned to CPU {run.pin}" if run.pin is not None else "unpinned"
    fig.suptitle(f"Task launch time vs parent heap size ({pin})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- context switch ------------------------------------------------------------------------------


def _ping(rfd: int, wfd: int, rounds: int) -> int:
    """Answer ``rounds`` pings: read one byte, write one byte."""
    read, write = os.read, os.write
    for _ in range(rounds):
        read(rfd, 1)
        write(wfd, b"p")
    return 0


@dataclass(frozen=True)
class SwitchResult:
    """ns per switch (round trip / 2) for each mechanism, one value per trial."""

    trials: dict[str, list[float]]
    rounds: int
    pin: int | None

    def __repr__(self) -> str:
        return f"<pyclone.bench.SwitchResult {sorted(self.trials)} rounds={self.rounds}>"


def _pingpong(start_partner: Callable[[int, int], Callable[[], object]], rounds: int) -> float:
    """ns per switch between this task and a partner answering on two pipes."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    try:
        finish = start_partner(a_r, b_w)
        read, write = os.read, os.write
        write(a_w, b"p")  # one warm-up round
        read(b_r, 1)
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            write(a_w, b"p")
            read(b_r, 1)
        elapsed = time.perf_counter_ns() - t0
        finish()
    finally:
        for fd in (a_r, a_w, b_r, b_w):
            os.close(fd)
    return elapsed / (2 * rounds)


def _switch_process(rounds: int) -> float:
    def start(rfd: int, wfd: int) -> Callable[[], object]:
        task = spawn_task(_ping, (rfd, wfd, rounds + 1), share="process")

        def finish() -> object:
            code = task.wait()
            task.close()
            return code

        return finish

    return _pingpong(start, rounds)


def _switch_thread(rounds: int) -> float:
    def start(rfd: int, wfd: int) -> Callable[[], object]:
        thread = threading.Thread(target=_ping, args=(rfd, wfd, rounds + 1))
        thread.start()
        return thread.join

    return _pingpong(start, rounds)


def _switch_floor(rounds: int) -> float:
    """One task writing then reading its own pipe: the two syscalls, no switch (ns per pair)."""
    r, w = os.pipe()
    try:
        read, write = os.read, os.write
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            write(w, b"p")
            read(r, 1)
        return (time.perf_counter_ns() - t0) / rounds
    finally:
        os.close(r)
        os.close(w)


#: The ``bench switch`` mechanisms: name -> (description, trial function).
SWITCHES: dict[str, tuple[str, Callable[[int], float]]] = {
    "process": ('pipe ping-pong, spawn_task(share="process") partner', _switch_process),
    "thread": ("pipe ping-pong, threading.Thread partner (pthread flags)", _switch_thread),
    "no_switch": ("write+read of one's own pipe (syscall floor, per pair)", _switch_floor),
}


def run_switch(rounds: int = 20000, trials: int = 5, pin: int | None = None) -> SwitchResult:
    """Measure each mechanism ``trials`` times, interleaved, ``rounds`` round trips each."""
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    results: dict[str, list[float]] = {name: [] for name in SWITCHES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for _ in range(trials):
            for name, (_, fn) in SWITCHES.items():
                results[name].append(fn(rounds))
    return SwitchResult(results, rounds, pin)


def format_switch(res: SwitchResult) -> str:
    """Table of min/median/max ns per switch, and process/thread."""
    pin = (
        f"both tasks pinned to CPU {res.pin}"
        if res.pin is not None
        else "UNPINNED: a cross-CPU wake-up is measured, not a switch; use --pin CPU"
    )
    out = [
        f"Context switch, ns per switch = round trip / 2 ({res.rounds} round trips x "
        f"{len(next(iter(res.trials.values())))} trials; {pin})",
        f"{'mechanism':<10} {'min':>8} {'median':>8} {'max':>8}  what",
    ]
    for name, values in res.trials.items():
        out.append(
            f"{name:<10} {min(values):>8.0f} {statistics.median(values):>8.0f}"
            f" {max(values):>8.0f}  {SWITCHES[name][0]}"
        )
    p = statistics.median(res.trials["process"])
    t = statistics.median(res.trials["thread"])
    out.append(f"ratio process/thread: x{p / t:.2f} (medians)")
    return "\n".join(out)


# -- command line --------------------------------------------------------------------------------


def _run(args: Any) -> int:
    if args.mode == "switch":
        rounds = args.rounds or (2000 if args.quick else 20000)
        trials = args.repeat or (3 if args.quick else 7)
        print(format_switch(run_switch(rounds, trials, args.pin)))
        return 0
    try:
        heaps = parse_heaps(args.heap) if args.heap else None
    except ValueError as exc:
        print(f"pyclone bench: {exc}", file=sys.stderr)
        return 2
    if heaps is None:
        heaps = list(QUICK_HEAPS_MIB if args.quick else DEFAULT_HEAPS_MIB)
    repeat = args.repeat or (30 if args.quick else 300)
    budget = args.budget if args.budget is not None else (0.15 if args.quick else 1.5)
    min_samples = 5 if args.quick else 10
    methods = args.methods.split(",") if args.methods else None
    try:
        run = run_launch(
            heaps,
            repeat=repeat,
            budget=budget,
            min_samples=min(min_samples, repeat),
            pin=args.pin,
            methods=methods,
            progress=sys.stderr,
        )
    except ValueError as exc:
        print(f"pyclone bench: {exc}", file=sys.stderr)
        return 2
    print(format_tables(run))
    print()
    print(format_goals(evaluate_goals(run), run.pin))
    if args.csv:
        write_csv(run, args.csv)
        print(f"\nCSV written to {args.csv}")
    if args.plot:
        try:
            write_plot(run, args.plot)
        except PlotUnavailable as exc:
            print(f"pyclone bench: {exc}", file=sys.stderr)
            return 3
        print(f"plot written to {args.plot}")
    return 0


def _cpu(text: str) -> int:
    cpu = int(text)
    if cpu not in os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f"CPU {cpu} is not available to this process")
    return cpu


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(sub: Any) -> None:
    """Register the ``bench`` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="measure task launch cost (and, with 'switch', context switches)",
        description="Time launching a task with pyclone and with the standard library "
        "(launch alone and launch+wait), with the parent's heap allocated and touched at "
        "several sizes; print medians, ratios and the goal table.  'bench switch' measures "
        "a pipe ping-pong between process-flag and thread-flag tasks.",
    )
    parser.add_argument(
        "mode", nargs="?", choices=("launch", "switch"), default="launch", help="what to measure"
    )
    parser.add_argument("--pin", type=_cpu, metavar="CPU", help="pin the run to one CPU")
    parser.add_argument(
        "--heap",
        metavar="LIST",
        help="heap sizes, MiB or with K/M/G suffix (default 0,2,32,256; e.g. 0,2,32,256,1G)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        metavar="N",
        help="launches per method and heap (default 300, quick 30); switch: trials",
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="time per method and heap before stopping early (default 1.5, quick 0.15)",
    )
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--csv", metavar="FILE", help="write every cell to a CSV file")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw launch time against heap size (matplotlib)"
    )
    parser.add_argument(
        "--methods", metavar="NAMES", help="comma-separated subset of methods (default all)"
    )
    parser.add_argument(
        "--rounds", type=_positive, metavar="N", help="switch: round trips per trial"
    )
    parser.set_defaults(func=_run)
