"""``python -m pyclone bench``: the quick run end to end, and the pieces that are logic.

No test here asserts a timing: only that every available method produced a
number, that the files are well formed, and that the goal arithmetic is right.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyclone import bench

ROOT = Path(__file__).resolve().parent.parent
#: The quick run must finish in under a minute; allow for a loaded machine.
RUN_TIMEOUT = 100.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _bench(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyclone", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path | None, str]:
    """One ``bench --quick`` run shared by the checks below: CSV, PNG (if possible), stdout."""
    out = tmp_path_factory.mktemp("bench")
    csv_path = out / "bench.csv"
    args = ["--quick", "--goals", "--csv", str(csv_path)]
    png: Path | None = None
    if importlib.util.find_spec("matplotlib") is not None:
        png = out / "bench.png"
        args += ["--plot", str(png)]
    cpus = sorted(os.sched_getaffinity(0))
    args += ["--pin", str(cpus[0])]
    proc = _bench(*args)
    assert proc.returncode == 0, proc.stderr
    return csv_path, png, proc.stdout


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or ()), list(reader)


def test_quick_csv_has_the_columns(quick_run: tuple[Path, Path | None, str]) -> None:
    header, rows = _read(quick_run[0])
    assert tuple(header) == bench.CSV_COLUMNS
    assert rows


def test_quick_every_available_method_has_a_number(
    quick_run: tuple[Path, Path | None, str],
) -> None:
    _, rows = _read(quick_run[0])
    heaps = {float(h) for h in bench.QUICK_HEAPS_MIB}
    by_method: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    # every method of the table is listed, available or not
    assert set(by_method) == {m.name for m in bench.METHODS}
    names = {m.name: i for i, m in enumerate(bench.METHODS)}
    for name, method_rows in by_method.items():
        available = [r for r in method_rows if r["available"] == "1"]
        if not available:
            assert all(r["note"].startswith("n/a (") for r in method_rows), method_rows
            continue
        roundtrips = {float(r["heap_mib"]) for r in available if r["metric"] == "roundtrip"}
        # a whole program inherits nothing of the heap: it is measured at the first one only
        expected = {min(heaps)} if bench.METHODS[names[name]].once else heaps
        assert roundtrips == expected, f"{name} lacks a heap: {roundtrips}"
        for r in available:
            assert int(r["n"]) >= 1
            for col in ("median_us", "min_us", "max_us", "p10_us", "p90_us"):
                assert float(r[col]) > 0, (name, col, r)
            assert float(r["min_us"]) <= float(r["median_us"]) <= float(r["max_us"])
            assert int(r["vm_pte_kb"]) > 0
    # the methods that need nothing beyond this build are always available
    always = {m.name for m in bench.METHODS if m.needs is bench._need_nothing}
    for name in always:
        assert any(r["available"] == "1" for r in by_method[name]), name


def test_quick_prints_tables_and_goals(quick_run: tuple[Path, Path | None, str]) -> None:
    stdout = quick_run[2]
    assert "Median launch+wait round trip" in stdout
    assert "Goals" in stdout
    for goal in bench.GOALS:
        assert f"\n{goal.key} " in stdout


def test_quick_png(quick_run: tuple[Path, Path | None, str]) -> None:
    png = quick_run[1]
    if png is None:
        pytest.skip("matplotlib is not installed (pip install 'pyclone[plot]')")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_fails_before_measuring(tmp_path: Path) -> None:
    # a matplotlib that cannot be imported, first on the path of this run and of its checks
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    env = _env()
    env["PYTHONPATH"] = str(shadow.parent) + os.pathsep + env["PYTHONPATH"]
    png = tmp_path / "x.png"
    args = ["--methods", "os_fork", "--heap", "0", "--repeat", "2", "--plot", str(png)]
    proc = subprocess.run(
        [sys.executable, "-m", "pyclone", "bench", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 3
    assert "pip install 'pyclone[plot]'" in proc.stderr
    assert "blocked for the test" in proc.stderr  # the reason the import failed
    # nothing was measured: no progress line, no table
    assert "heap 0 MiB" not in proc.stderr
    assert proc.stdout == ""
    assert not png.exists()


def test_switch_quick() -> None:
    proc = _bench("switch", "--rounds", "300", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line}
    for name in bench.SWITCHES:
        assert float(lines[name][2]) > 0  # the median column


def test_parse_heaps() -> None:
    assert bench.parse_heaps("256, 0,2,32") == [0, 2, 32, 256]
    assert bench.parse_heaps("1G,512K,3MiB") == [0.5, 3, 1024]
    for bad in ("", "x", "-1", "1T", "nan"):
        with pytest.raises(ValueError):
            bench.parse_heaps(bad)


def test_bad_arguments_exit_with_usage() -> None:
    assert _bench("--heap", "lots", timeout=30).returncode == 2
    assert _bench("--methods", "nosuch", "--heap", "0", timeout=30).returncode == 2
    proc = _bench("--repeat", "0", timeout=30)
    assert proc.returncode == 2
    assert "at least 1" in proc.stderr


def test_vm_pte_grows_with_a_touched_heap() -> None:
    before = bench.vm_pte_kib()
    heap = bench._touched_heap(64)
    try:
        # 64 MiB of 4 KiB pages need 16384 PTEs, 128 KiB of page tables
        assert bench.vm_pte_kib() >= before + 100
    finally:
        del heap


def test_every_method_reference_exists() -> None:
    names = {m.name for m in bench.METHODS}
    assert len(names) == len(bench.METHODS)
    for method in bench.METHODS:
        assert method.reference is None or method.reference in names
        assert repr(method).startswith("<pyclone.bench.Method ")
    for goal in bench.GOALS:
        assert goal.method in names
        assert goal.reference is None or goal.reference in names
