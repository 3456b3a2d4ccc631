"""``python -m pyclone bench``: what it costs to launch a task, measured from Python.

Two measurements, both run in this process against the real kernel:

* ``bench`` (launch): every *method* (a pyclone call or a standard-library
  way to start a task, or the C floor in the extension module) is timed
  launch-alone and launch+wait, with the parent's heap allocated and touched
  at several sizes, because fork copies the page tables (``VmPTE``) of that
  heap and a thread does not.  The methods are interleaved one launch at a
  time, so each ratio compares figures taken side by side in one run.
  Whole programs (Python start-up, ``pyclone run`` and ``bwrap``) are timed
  as processes taking turns, and ``Sandbox.run`` against ``bwrap`` in this
  process; ``--goals`` prints every goal's ratio from that one run.
* ``bench switch``: a pipe ping-pong between two tasks created with process
  flags or with thread flags, in nanoseconds per context switch.

A method whose feature is missing from this build is listed as
``n/a (needs ...)`` and starts working as soon as the feature lands.

The package re-exports what callers use; each private module has one job:
``_methods`` (the launch methods), ``_programs`` (the whole-program and
sandbox ones), ``_heap`` (the parent's heap),
``_runner`` (the interleaved runs), ``_goals`` (target ratios),
``_report`` (tables and CSV), ``_plot`` (matplotlib figure), ``_switch``
(context switches), ``_cli`` (the subcommand).
"""

from __future__ import annotations

from ._cli import add_parser as add_parser
from ._goals import GOALS, Goal, GoalResult, evaluate_goals
from ._goals import format_goals as format_goals
from ._heap import QUICK_HEAPS_MIB as QUICK_HEAPS_MIB
from ._heap import parse_heaps, vm_pte_kib
from ._heap import touched_heap as _touched_heap  # noqa: F401 (for tests/test_bench.py)
from ._methods import METHODS, Method
from ._methods import need_nothing as _need_nothing  # noqa: F401 (for tests/test_bench.py)
from ._report import CSV_COLUMNS
from ._report import write_csv as write_csv
from ._runner import Cell, Run, run_launch
from ._switch import SWITCHES as SWITCHES
from ._switch import SwitchResult, run_switch

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
