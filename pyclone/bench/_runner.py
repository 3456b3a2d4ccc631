"""Running ``bench``: pinning, the methods' interleaved launches at each heap, and the samples.

At each heap size the methods take turns one launch at a time, so every
ratio compares figures taken side by side; :class:`Run` holds the samples
and answers medians, minimums and ratios.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from ._heap import fmt_heap, touched_heap, vm_pte_kib
from ._methods import Method, Sampler, selected


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


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values``, interpolated linearly between the closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


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
    warm-up and is dropped.  A ``once`` method (a whole new program) is
    measured at the first heap only.
    """
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    run = Run(heaps=sorted(heaps), pin=pin)
    samplers = _available(run, methods)
    heap: bytearray | None = None
    gc_was_enabled = gc.isenabled()
    try:
        with warnings.catch_warnings():
            # os.fork warns on 3.12+ while a joined thread is still winding down
            warnings.simplefilter("ignore", DeprecationWarning)
            for mib in run.heaps:
                heap = None
                gc.collect()
                heap = touched_heap(mib)
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


def _available(run: Run, methods: Iterable[str] | None) -> dict[str, Sampler]:
    """Sort the selected methods into ``run.methods`` or ``run.unavailable``; their samplers."""
    samplers: dict[str, Sampler] = {}
    for method in selected(methods):
        reason = method.needs()
        if reason is not None:
            run.unavailable[method.name] = reason
            continue
        run.methods.append(method)
        samplers[method.name] = method.sampler()
    return samplers


def _measure_heap(
    run: Run,
    samplers: dict[str, Sampler],
    mib: float,
    repeat: int,
    budget: float,
    min_samples: int,
    progress: TextIO | None,
) -> None:
    first = mib == run.heaps[0]
    names = [m.name for m in run.methods if m.name not in run.unavailable and (first or not m.once)]
    for name in names:
        run.cells[(name, mib)] = Cell()
    if progress is not None:
        progress.write(f"heap {fmt_heap(mib)} (VmPTE {run.vm_pte[mib]} kB): ")
        progress.flush()
    # Methods take turns within their group only: after a fork every page of
    # the parent is write-protected, and the next launch would pay for the
    # copy-on-write faults of whatever it touches.  The memory-sharing and
    # exec groups never fork, so they are measured apart from the fork group;
    # each pair of whole programs, and the sandbox pair, take turns by themselves.
    groups: dict[str, list[str]] = {}
    for method in run.methods:
        if method.name in names:
            groups.setdefault(method.group, []).append(method.name)
    for group in groups.values():
        _settle_threads()
        _interleave(run, samplers, mib, group, repeat, budget, min_samples)
    if progress is not None:
        progress.write("done\n")
        progress.flush()


def _settle_threads(timeout: float = 1.0) -> None:
    """Wait (briefly) until this process is one thread again.

    ``Thread.join()`` returns before the joined thread's kernel task has
    exited; a group measured next (``Sandbox.run`` refuses to fork a
    multi-threaded caller) must not see it.
    """
    deadline = time.monotonic() + timeout
    while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
        time.sleep(0.001)


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
    scale = {m.name: m.budget_scale for m in run.methods}
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
            if n >= repeat or (spent[name] >= budget * scale[name] and n >= min_samples):
                active.remove(name)
        warm = False
