"""The ``bench --plot`` figure: launch+wait time against heap size, drawn with matplotlib.

One panel per family of methods (fork-like, shared memory, thread, exec,
sandbox) and a last panel with each method's ratio to its family's
reference.  matplotlib is the optional ``plot`` extra, so it is imported only
when a plot is asked for, and its absence is reported as
:class:`PlotUnavailable`.
"""

from __future__ import annotations

import importlib
import os
import statistics
import subprocess
import sys
from typing import Any

from ._heap import fmt_heap
from ._methods import FAMILIES, Method
from ._runner import Run, quantile


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (``pip install 'pyclone[plot]'``)."""


def check_plot_available() -> None:
    """Raise PlotUnavailable now, before a long run, if ``matplotlib.pyplot`` cannot be imported.

    The import is tried in a child interpreter: importing matplotlib here
    would load numpy, whose math library starts a thread pool, and a
    multi-threaded parent changes what the run measures (``Sandbox.run``
    refuses to fork a multi-threaded caller).
    """
    env = dict(os.environ, MPLBACKEND="Agg")
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import matplotlib.pyplot"],
            capture_output=True,
            env=env,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlotUnavailable(f"--plot: could not check for matplotlib: {exc}") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise PlotUnavailable(
            "--plot needs matplotlib, which cannot be imported here"
            + (f" ({why[0]})" if why else "")
            + ": pip install 'pyclone[plot]'"
        )


def require_pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend; PlotUnavailable without matplotlib."""
    # Imported here, not at the top: matplotlib is an optional extra and slow to import,
    # and every other bench command runs without it.
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install 'pyclone[plot]'"
        ) from None


_MARKERS = "osD^v<>phX*"


def write_plot(run: Run, path: str) -> None:
    """Draw the figure into ``path`` (PNG): a panel per family, then the ratio panel.

    Log-scale time, the median of the launch+wait round trip with bars from
    the 10th to the 90th percentile; floors are dashed; a whole program
    (measured at the first heap only) is one point.  Needs matplotlib (the ``plot`` extra).
    """
    plt = require_pyplot()
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    panels = list(axes.flat)
    for ax, (family, (title, _)) in zip(panels, FAMILIES.items(), strict=False):
        members = [m for m in run.methods if m.family == family]
        for index, method in enumerate(members):
            style = colours[index % len(colours)], _MARKERS[index % len(_MARKERS)]
            _draw_method(ax, run, method, *style)
        _heap_axis(ax, run)
        ax.set_yscale("log")
        ax.set_ylabel("µs, launch+wait (median, p10..p90)")
        ax.set_title(title, fontsize=10)
        if members:
            ax.legend(fontsize=7, loc="best")
    _draw_ratios(panels[len(FAMILIES)], run, colours)
    pin = f"pinned to CPU {run.pin}" if run.pin is not None else "unpinned"
    fig.suptitle(f"Task launch+wait time vs parent heap size ({pin})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _heap_axis(ax: Any, run: Run) -> None:
    """The heap-size x axis: one evenly spaced tick per heap, with the parent's VmPTE."""
    ax.set_xticks(range(len(run.heaps)))
    ax.set_xticklabels(
        [f"{fmt_heap(h)}\nPTE {run.vm_pte.get(h, '?')} kB" for h in run.heaps], fontsize=7
    )
    ax.set_xlim(-0.3, len(run.heaps) - 0.7)
    ax.set_xlabel("parent heap, every page touched", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)


def _draw_method(ax: Any, run: Run, method: Method, colour: Any, marker: str) -> None:
    """One method's medians per heap with p10..p90 bars."""
    pts = []
    for x, mib in enumerate(run.heaps):
        cell = run.cells.get((method.name, mib))
        if cell is not None and cell.roundtrip:
            us = [v * 1e6 for v in cell.roundtrip]
            med = statistics.median(us)
            pts.append((x, med, med - quantile(us, 0.1), quantile(us, 0.9) - med))
    if not pts:
        return
    style = "--" if method.name.startswith("floor_") else "-"
    ax.errorbar(
        [p[0] for p in pts],
        [p[1] for p in pts],
        yerr=[[p[2] for p in pts], [p[3] for p in pts]],
        fmt=marker + style,
        color=colour,
        capsize=3,
        markersize=4,
        label=method.name + (" (once)" if method.once else ""),
    )


def _draw_ratios(ax: Any, run: Run, colours: Any) -> None:
    """Each method over its family's reference at each heap: one colour per family."""
    for number, (family, (_, reference)) in enumerate(FAMILIES.items()):
        members = [m for m in run.methods if m.family == family and m.name != reference]
        label: str | None = f"{family} / {reference}"
        for index, method in enumerate(members):
            pts = [
                (x, r)
                for x, h in enumerate(run.heaps)
                if (r := run.ratio(method.name, reference, h, "roundtrip")) is not None
            ]
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    _MARKERS[index % len(_MARKERS)] + "-",
                    color=colours[number % len(colours)],
                    markersize=4,
                    label=label,
                )
                label = None  # one legend entry per family
    ax.axhline(1.0, color="black", linewidth=0.8)
    _heap_axis(ax, run)
    ax.set_yscale("log")
    ax.set_ylabel("median ratio (markers as in the family's panel)")
    ax.set_title("each method over its family's reference", fontsize=10)
    ax.legend(fontsize=7, loc="best")
