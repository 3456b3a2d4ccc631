"""The results of a ``bench`` run as text tables and as a CSV file.

The tables give, per heap, the median, minimum and maximum of each method
with its ratio to its reference, then the medians of all heaps side by
side; the CSV has one row per method x metric x heap with its quantiles.
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
from typing import Any

from ._heap import fmt_heap, num
from ._methods import Method, selected
from ._runner import Run, quantile

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


def write_csv(run: Run, path: str) -> None:
    """Write one row per method x metric x heap (n/a methods too, with ``available=0``)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(_rows(run))


def _rows(run: Run) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for method in selected(None):
        for metric in ("launch", "roundtrip"):
            for mib in run.heaps:
                row = _row(run, method, metric, mib)
                if row is not None:
                    rows.append(row)
    return rows


def _row(run: Run, method: Method, metric: str, mib: float) -> dict[str, Any] | None:
    """The CSV row of one method x metric x heap, or None when it has no row."""
    row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS, "")
    row.update(
        method=method.name,
        label=method.label,
        group=method.group,
        metric=metric,
        heap_mib=num(mib),
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
            return None  # the C floor times the round trip only
        if method.name not in {m.name for m in run.methods}:
            return None  # not selected
        if method.once and mib != run.heaps[0]:
            return None  # a whole program is measured at the first heap only
        row.update(available=0, n=0, note="no samples")
    else:
        us = [v * 1e6 for v in values]
        ratio = run.ratio(method.name, method.reference, mib, metric)
        row.update(
            available=1,
            n=len(us),
            median_us=f"{statistics.median(us):.2f}",
            min_us=f"{min(us):.2f}",
            p10_us=f"{quantile(us, 0.10):.2f}",
            p25_us=f"{quantile(us, 0.25):.2f}",
            p75_us=f"{quantile(us, 0.75):.2f}",
            p90_us=f"{quantile(us, 0.90):.2f}",
            max_us=f"{max(us):.2f}",
            ratio="" if ratio is None else f"{ratio:.3f}",
        )
    return row


def _us(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 1000:
        return f"{us:,.0f}"
    if us >= 100:
        return f"{us:.0f}"
    return f"{us:.1f}"


def format_tables(run: Run) -> str:
    """The text report: per heap, median/min/max of both metrics and the ratios."""
    pin = f"pinned to CPU {run.pin}" if run.pin is not None else "UNPINNED (use --pin CPU)"
    out = [f"Launch cost, µs ({pin}; Python {sys.version.split()[0]}, pid {os.getpid()})"]
    for mib in run.heaps:
        out.append("")
        out.extend(_heap_table(run, mib))
    out.append("")
    out.extend(_by_heap_table(run))
    if run.unavailable:
        out.append("")
        for name, reason in run.unavailable.items():
            out.append(f"{name:<24} n/a ({reason})")
    return "\n".join(out)


def _heap_table(run: Run, mib: float) -> list[str]:
    """One heap's table: each measured method's launch median, round trip, ratio."""
    out = [
        f"== heap {fmt_heap(mib)}  (parent VmPTE {run.vm_pte.get(mib, '?')} kB) ==",
        f"{'method':<24} {'launch med':>10} {'rt median':>10} {'min':>10} {'max':>10}"
        f" {'n':>5}  {'ratio':>7} to reference",
    ]
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
    return out


def _by_heap_table(run: Run) -> list[str]:
    """The round-trip medians of every method at every heap, and the parent's VmPTE."""
    out = [
        "Median launch+wait round trip, µs, by heap size",
        f"{'method':<24}" + "".join(f" {fmt_heap(h):>10}" for h in run.heaps) + "  what",
    ]
    for method in run.methods:
        cells = []
        for mib in run.heaps:
            m = run.median(method.name, mib)
            cells.append(f" {_us(m) if m is not None else '-':>10}")
        out.append(f"{method.name:<24}" + "".join(cells) + f"  {method.label}")
    out.append(f"{'parent VmPTE kB':<24}" + "".join(f" {run.vm_pte[h]:>10}" for h in run.heaps))
    return out
