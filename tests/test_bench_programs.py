"""The whole-program bench methods (pyclone/bench/_programs.py): Python start-up, ``pyclone run``,
``bwrap`` and ``Sandbox.run``, run for real with tiny repetition counts.

No timing is asserted: only that each method was measured (or says why not),
where it was measured, and that its goal row has a ratio and a target.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyclone import bench
from pyclone.bench import _programs

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120.0

WHOLE = ("python_pass", "python_import", "pyclone_run_cli", "bwrap_cli")
IN_PROCESS = ("sandbox_run", "bwrap_subprocess")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_whole_programs_are_measured_once_and_their_goals_have_ratios(tmp_path: Path) -> None:
    csv_path = tmp_path / "b.csv"
    cpu = sorted(os.sched_getaffinity(0))[0]
    args = ["--goals", "--pin", str(cpu), "--methods", ",".join(WHOLE + IN_PROCESS)]
    args += ["--heap", "0,1", "--repeat", "2", "--budget", "0", "--csv", str(csv_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "pyclone", "bench", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "roundtrip"]
    by_method: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    assert set(by_method) == set(WHOLE + IN_PROCESS)
    for name, method_rows in by_method.items():
        if method_rows[0]["available"] == "0":
            # e.g. no bwrap, or no user namespaces here: the row says why
            assert method_rows[0]["note"].startswith("n/a (") and len(method_rows[0]["note"]) > 6
            continue
        heaps = [float(r["heap_mib"]) for r in method_rows]
        # a new program inherits nothing of the heap: measured at the first heap only
        assert heaps == ([0.0] if name in WHOLE else [0.0, 1.0]), name
        assert all(int(r["n"]) == 2 and float(r["median_us"]) > 0 for r in method_rows)
    for name in ("python_pass", "python_import"):  # need nothing but this interpreter
        assert by_method[name][0]["available"] == "1"
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln[:2] in ("G5", "G6", "G7")}
    assert set(lines) == {"G5", "G6", "G7"}
    assert "<=1.50" in lines["G5"] and "<=3.50" in lines["G6"] and "<=1.00" in lines["G7"]
    assert lines["G5"].split()[1].startswith("x")  # the median ratio
    assert lines["G5"].split()[2].startswith("x")  # the ratio of minimums
    for key in ("G6", "G7"):
        ratio = lines[key].split()[1]
        assert ratio.startswith("x") or "n/a (" in lines[key], lines[key]


def test_missing_bwrap_gives_rows_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no bwrap on PATH
    run = bench.run_launch(
        [0], repeat=1, budget=0, min_samples=1, methods=["bwrap_cli", "bwrap_subprocess"]
    )
    assert run.methods == []
    for name in ("bwrap_cli", "bwrap_subprocess"):
        assert run.unavailable[name] == "bwrap is not installed (not found on PATH)"
    results = {r.goal.key: r for r in bench.evaluate_goals(run)}
    for key in ("G6", "G7"):
        assert results[key].passed is None
        assert "bwrap is not installed" in results[key].note
    text = bench.format_goals(list(results.values()), None)
    assert "n/a (bwrap_cli: bwrap is not installed (not found on PATH))" in text
    bench.write_csv(run, str(tmp_path / "b.csv"))
    with open(tmp_path / "b.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "bwrap_cli"]
    assert rows and all(
        r["available"] == "0" and "bwrap is not installed" in r["note"] for r in rows
    )


def test_pyclone_run_and_bwrap_get_the_same_sandbox_line() -> None:
    line = list(_programs.SANDBOX_LINE)
    assert _programs.bwrap_cli()[1:] == [*line, "/bin/true"]
    assert _programs.pyclone_run_cli()[1:] == ["-m", "pyclone", "run", *line, "--", "/bin/true"]
    sandbox = _programs._sandbox()  # what Sandbox.run is given: the same line, parsed
    assert sandbox.ro_bind == (("/usr", "/usr"),)
    assert sandbox.symlink == (("usr/bin", "/bin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"))
    assert (sandbox.proc, sandbox.dev, sandbox.tmpfs) == ("/proc", "/dev", ("/tmp",))
    assert {"user", "pid", "net", "uts", "ipc", "cgroup", "mnt"} <= set(sandbox.new)


def test_a_failing_program_is_reported_not_timed() -> None:
    start = _programs.process_starter(lambda: ["/bin/false"])
    with pytest.raises(RuntimeError, match="exited with status 1"):
        start()()
