"""The goals of ``bench`` (pyclone/bench/_goals.py): their arithmetic, the --goals table.

The arithmetic runs on made-up samples; the command-line checks run the real
bench with two repetitions and assert the shape of what it prints, never a
timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyclone import bench

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0

#: The targets the project states (the goal table must show these).
TARGETS = {"G1": 1.05, "G3": 1.25, "G4": 0.75, "G5": 1.50, "G6": 3.50, "G7": 1.00}


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "pyclone", "bench", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=ROOT,
    )


def _fake_run(medians: dict[str, dict[float, float]], unavailable: dict[str, str]) -> bench.Run:
    heaps = sorted({h for per in medians.values() for h in per})
    run = bench.Run(heaps=heaps, pin=0, unavailable=dict(unavailable))
    for name, per in medians.items():
        for heap, value in per.items():
            run.cells[(name, heap)] = bench.Cell(roundtrip=[value * 0.9, value, value * 1.5])
    run.vm_pte = dict.fromkeys(heaps, 100)
    return run


def test_goals_pass_miss_and_na() -> None:
    run = _fake_run(
        {
            "os_fork": {0: 100.0, 32: 200.0},
            "pyclone_spawn": {0: 105.0, 32: 240.0},  # x1.05, x1.20: worst 1.20
            "pyclone_clone": {0: 100.0, 32: 200.0},
            "pyclone_result": {0: 40.0, 32: 160.0, 256: 10.0},  # x0.40, x0.80; 256 MiB: no goal
            "mp_fork": {0: 100.0, 32: 200.0, 256: 1000.0},
        },
        {"pyclone_exec": "needs pyclone.actions, branch vm"},
    )
    results = {r.goal.key: r for r in bench.evaluate_goals(run)}
    assert results["G1"].passed is False
    assert results["G1"].worst == pytest.approx(1.2)
    assert results["G1c"].passed is True
    assert results["G4"].ratios == {0: pytest.approx(0.4), 32: pytest.approx(0.8)}
    assert results["G4"].passed is False
    assert results["G2"].passed is None
    assert "needs pyclone.actions" in results["G2"].note
    text = bench.format_goals(list(results.values()), 0)
    assert "MISS by 14.3%" in text  # 1.20 / 1.05
    assert "n/a (pyclone_exec: needs pyclone.actions, branch vm)" in text


def test_flatness_goal_uses_smallest_and_largest_heap() -> None:
    run = _fake_run(
        {"pyclone_exec": {0: 100.0, 1024: 110.0}, "os_posix_spawn": {0: 100.0, 1024: 100.0}}, {}
    )
    results = {r.goal.key: r for r in bench.evaluate_goals(run)}
    assert results["G2f"].worst == pytest.approx(1.1)
    assert results["G2f"].passed is True
    assert results["G2"].worst == pytest.approx(1.1)


def test_every_goal_has_its_target_and_a_row() -> None:
    goals = {g.key: g for g in bench.GOALS}
    for key, target in TARGETS.items():
        assert goals[key].target == target, key
    assert goals["G4"].max_heap_mib == 32
    assert goals["G1"].max_heap_mib is None  # at every heap
    medians: dict[str, dict[float, float]] = {}
    for goal in bench.GOALS:
        for name in (goal.method, goal.reference):
            if name is not None:
                medians[name] = {0: 100.0, 32: 100.0}
    medians["python_import"] = {0: 150.0}  # whole programs: measured at the first heap only
    medians["python_pass"] = {0: 100.0}
    results = bench.evaluate_goals(_fake_run(medians, {}))
    assert [r.goal.key for r in results] == [g.key for g in bench.GOALS]
    assert results[[g.key for g in bench.GOALS].index("G5")].ratios == {0: pytest.approx(1.5)}
    lines = bench.format_goals(results, 0).splitlines()
    header = lines[1].split()
    assert header[:5] == ["goal", "median", "(min)", "target", "met?"]
    rows = {ln.split()[0]: ln.split() for ln in lines[2:] if ln[:1] == "G"}
    assert set(rows) == set(goals)
    for key, cells in rows.items():
        assert cells[1].startswith("x") and float(cells[1][1:]) > 0, cells  # median ratio
        assert cells[2].startswith("x") and float(cells[2][1:]) > 0, cells  # ratio of minimums
        assert cells[3] == f"<={goals[key].target:.2f}"
        assert cells[4] in ("yes", "MISS"), cells


def test_goal_table_only_with_goals_and_documented() -> None:
    args = ["--methods", "os_fork,pyclone_spawn", "--heap", "0", "--repeat", "2", "--budget", "0"]
    plain = _bench(*args)
    assert plain.returncode == 0, plain.stderr
    assert "Median launch+wait round trip" in plain.stdout
    assert "Goals" not in plain.stdout  # the measurements only, by default
    asked = _bench("--goals", *args)
    assert asked.returncode == 0, asked.stderr
    g1 = [ln for ln in asked.stdout.splitlines() if ln.startswith("G1 ")]
    assert len(g1) == 1 and g1[0].split()[1].startswith("x") and "<=1.05" in g1[0]
    g5 = [ln for ln in asked.stdout.splitlines() if ln.startswith("G5 ")]
    assert g5 and "not measured" in g5[0]  # its methods were not selected
    helptext = _bench("--help")
    assert helptext.returncode == 0
    assert "--goals" in helptext.stdout and "goal table" in helptext.stdout


def test_a_goal_with_a_floor_prints_the_floors_ratio() -> None:
    """G6 runs a whole interpreter: ``python -c pass`` over bwrap bounds what it can reach."""
    run = _fake_run(
        {"pyclone_run_cli": {0: 900.0}, "bwrap_cli": {0: 100.0}, "python_pass": {0: 400.0}}, {}
    )
    results = {r.goal.key: r for r in bench.evaluate_goals(run)}
    assert results["G6"].worst == pytest.approx(9.0)
    assert results["G6"].note == "(its floor python_pass alone is x4.00)"
    assert "(its floor python_pass alone is x4.00)" in bench.format_goals([results["G6"]], 0)
    unmeasured = _fake_run({"pyclone_run_cli": {0: 900.0}, "bwrap_cli": {0: 100.0}}, {})
    assert {r.goal.key: r for r in bench.evaluate_goals(unmeasured)}["G6"].note == ""
