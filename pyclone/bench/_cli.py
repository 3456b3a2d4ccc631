"""The ``pyclone bench`` subcommand: its options and what a run prints and writes.

Exit status 2 is a bad option value, 3 a plot asked for without matplotlib.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._goals import evaluate_goals, format_goals
from ._heap import DEFAULT_HEAPS_MIB, QUICK_HEAPS_MIB, parse_heaps
from ._plot import PlotUnavailable, check_plot_available, write_plot
from ._report import format_tables, write_csv
from ._runner import Run, run_launch
from ._switch import format_switch, run_switch


def add_parser(sub: Any) -> None:
    """Register the ``bench`` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="measure task launch cost (and, with 'switch', context switches)",
        description="Time launching a task with pyclone and with the standard library "
        "(launch alone and launch+wait), with the parent's heap allocated and touched at "
        "several sizes, and whole programs (Python start-up, 'pyclone run' and bwrap); print "
        "medians and ratios (and, with --goals, the goal table).  'bench switch' measures "
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
        "--goals",
        action="store_true",
        help="also print the goal table: each goal's worst median ratio over the heaps, its "
        "ratio of minimums, the target and whether it is met (the ratios of G1..G7)",
    )
    parser.add_argument(
        "--rounds", type=_positive, metavar="N", help="switch: round trips per trial"
    )
    parser.set_defaults(func=_run)


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


def _run(args: Any) -> int:
    if args.mode == "switch":
        return _run_switch(args)
    if args.plot:
        # before the run, which can take minutes: a plot that cannot be drawn fails now
        try:
            check_plot_available()
        except PlotUnavailable as exc:
            print(f"{args.prog}: {exc}", file=sys.stderr)
            return 3
    try:
        run = _measure(args)
    except ValueError as exc:
        print(f"{args.prog}: {exc}", file=sys.stderr)
        return 2
    print(format_tables(run))
    if args.goals:
        print()
        print(format_goals(evaluate_goals(run), run.pin))
    return _write_files(run, args)


def _run_switch(args: Any) -> int:
    rounds = args.rounds or (2000 if args.quick else 20000)
    trials = args.repeat or (3 if args.quick else 7)
    print(format_switch(run_switch(rounds, trials, args.pin)))
    return 0


def _measure(args: Any) -> Run:
    """The launch run the options ask for; ValueError for a bad heap list or method name."""
    heaps = parse_heaps(args.heap) if args.heap else None
    if heaps is None:
        heaps = list(QUICK_HEAPS_MIB if args.quick else DEFAULT_HEAPS_MIB)
    repeat = args.repeat or (30 if args.quick else 300)
    budget = args.budget if args.budget is not None else (0.15 if args.quick else 1.5)
    min_samples = 5 if args.quick else 10
    methods = args.methods.split(",") if args.methods else None
    return run_launch(
        heaps,
        repeat=repeat,
        budget=budget,
        min_samples=min(min_samples, repeat),
        pin=args.pin,
        methods=methods,
        progress=sys.stderr,
    )


def _write_files(run: Run, args: Any) -> int:
    """Write the CSV and the plot the options ask for; the exit status."""
    if args.csv:
        write_csv(run, args.csv)
        print(f"\nCSV written to {args.csv}")
    if args.plot:
        try:
            write_plot(run, args.plot)
        except PlotUnavailable as exc:
            print(f"{args.prog}: {exc}", file=sys.stderr)
            return 3
        print(f"plot written to {args.plot}")
    return 0
