"""The goals ``bench`` checks: target ratios between methods, their verdicts, the goal table.

A goal says a method's launch+wait median may be at most ``target`` times
a reference method's at the same heap (or, without a reference, at most
``target`` times its own cost at the smallest heap: flatness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._heap import fmt_heap
from ._runner import Run


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
    #: A method the measured one cannot beat (it runs inside it): its ratio to
    #: the same reference is printed beside the goal, a bound on what it can reach.
    floor: str | None = None


#: The goals of the project, checked on the launch+wait medians.
GOALS: tuple[Goal, ...] = (
    Goal(
        "G1",
        "fork-like spawn_task(fn).wait() vs os.fork+os._exit+waitpid, at every heap",
        "pyclone_spawn",
        "os_fork",
        1.05,
    ),
    Goal("G1c", "same through pyclone.clone+waitpid vs os.fork", "pyclone_clone", "os_fork", 1.10),
    Goal("G2", "exec spawn of /bin/true vs os.posix_spawn", "pyclone_exec", "os_posix_spawn", 1.10),
    Goal("G2f", "exec spawn: largest heap vs 0 MiB (flat)", "pyclone_exec", None, 1.15),
    Goal(
        "G3",
        "thread-flags action spawn+join vs C floor (clone with thread flags + futex join)",
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
        "G4",
        "spawn_task(fn).result() vs multiprocessing fork Process start+join, 0-32 MiB",
        "pyclone_result",
        "mp_fork",
        0.75,
        32,
    ),
    Goal(
        "G5",
        'whole process: python -c "import pyclone" vs python -c pass',
        "python_import",
        "python_pass",
        1.50,
    ),
    Goal(
        "G6",
        "whole process: python -m pyclone run <sandbox> -- /bin/true vs the same bwrap line",
        "pyclone_run_cli",
        "bwrap_cli",
        3.50,
        floor="python_pass",
    ),
    Goal(
        "G7",
        'in-process Sandbox(<sandbox>).run(["/bin/true"]) vs subprocess.run(["bwrap", ...])',
        "sandbox_run",
        "bwrap_subprocess",
        1.00,
    ),
)


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
    return [_evaluate(goal, run) for goal in GOALS]


def _evaluate(goal: Goal, run: Run) -> GoalResult:
    missing = [n for n in (goal.method, goal.reference) if n is not None and n in run.unavailable]
    if missing:
        why = "; ".join(f"{n}: {run.unavailable[n]}" for n in missing)
        return GoalResult(goal, {}, None, f"n/a ({why})")
    ratios: dict[float, float] = {}
    min_ratios: dict[float, float] = {}
    note = ""
    if goal.reference is None:
        note = _flatness(goal, run, ratios, min_ratios)
    else:
        _side_by_side(goal, run, ratios, min_ratios)
        if goal.floor is not None and ratios:
            bound = run.ratio(goal.floor, goal.reference, run.heaps[0], "roundtrip")
            if bound is not None:
                note = f"(its floor {goal.floor} alone is x{bound:.2f})"
    worst = max(ratios.values()) if ratios else None
    if worst is None and not note:
        note = "not measured"
    return GoalResult(goal, ratios, worst, note, min_ratios)


def _flatness(
    goal: Goal, run: Run, ratios: dict[float, float], min_ratios: dict[float, float]
) -> str:
    """Fill in the method's largest-heap over smallest-heap ratios; return the note."""
    lo, hi = run.heaps[0], run.heaps[-1]
    for stat, into in (("median", ratios), ("min", min_ratios)):
        a = run.median(goal.method, hi, stat=stat)
        b = run.median(goal.method, lo, stat=stat)
        if a is not None and b and hi > lo:
            into[hi] = a / b
    if not ratios:
        return ""
    note = f"{fmt_heap(hi)} / {fmt_heap(lo)}"
    if hi < 1024:
        note += " (the goal is stated for 1 GiB: add --heap ...,1G)"
    return note


def _side_by_side(
    goal: Goal, run: Run, ratios: dict[float, float], min_ratios: dict[float, float]
) -> None:
    """Fill in the method over its reference at each heap the goal applies to."""
    for h in run.heaps:
        if goal.max_heap_mib is not None and h > goal.max_heap_mib:
            continue
        r = run.ratio(goal.method, goal.reference, h, "roundtrip")
        if r is not None:
            ratios[h] = r
        r = run.ratio(goal.method, goal.reference, h, "roundtrip", "min")
        if r is not None:
            min_ratios[h] = r


def format_goals(results: Sequence[GoalResult], pin: int | None) -> str:
    """The goal table: worst median ratio, worst ratio of minimums, target, met?, per heap."""
    out = [
        "Goals (launch+wait; each ratio between two methods taking turns in this run"
        + (f"; pinned to CPU {pin}" if pin is not None else "; UNPINNED, do not trust")
        + ")",
        f"{'goal':<5} {'median':>8} {'(min)':>8} {'target':>7}  {'met?':<15}"
        " per heap: median ratio (ratio of minimums)",
    ]
    for res in results:
        out.append(_goal_line(res))
        out.append(f"{'':<5} {res.goal.text}")
    return "\n".join(out)


def _goal_line(res: GoalResult) -> str:
    """The first line of one goal's entry: worst ratios, target, verdict, ratio per heap."""
    g = res.goal
    target = "<=" + format(g.target, ".2f")
    if res.worst is None:
        return f"{g.key:<5} {'-':>8} {'-':>8} {target:>7}  {res.note}"
    miss = 100 * (res.worst / g.target - 1)
    verdict = "yes" if res.passed else f"MISS by {miss:.1f}%"
    per = "  ".join(
        f"{fmt_heap(h)}: x{r:.2f}" + (f" ({res.min_ratios[h]:.2f})" if h in res.min_ratios else "")
        for h, r in res.ratios.items()
    )
    wmin = res.worst_min
    return (
        f"{g.key:<5} {'x' + format(res.worst, '.2f'):>8}"
        f" {'x' + format(wmin, '.2f') if wmin is not None else '-':>8} {target:>7}"
        f"  {verdict:<15} {per} {res.note}".rstrip()
    )
