"""What the package promises its installers: the hypothesis extra's hint, the refusal off Linux.

The build itself (sdist, a wheel from it, the installed wheel's tests) is
``.ci/sdist``; these are the parts that can be checked from a checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import WAIT

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, env=env, cwd=cwd
    )


def test_strategies_without_hypothesis_says_which_extra_to_install() -> None:
    # None in sys.modules makes every import of hypothesis fail, as if it were not installed
    done = _python(
        "import sys\n"
        "sys.modules['hypothesis'] = None\n"
        "try:\n"
        "    import pyclone.strategies\n"
        "except ImportError as exc:\n"
        "    print(exc.name, '|', exc)\n"
    )
    assert done.returncode == 0, done.stderr
    name, message = done.stdout.strip().split(" | ")
    assert name == "hypothesis"
    assert "pip install 'pyclone[hypothesis]'" in message


def test_pyclone_imports_without_hypothesis() -> None:
    done = _python("import sys; sys.modules['hypothesis'] = None; import pyclone, pyclone.cli")
    assert done.returncode == 0, done.stderr


def test_setup_py_refuses_other_systems_in_a_sentence() -> None:
    setup_py = ROOT / "setup.py"
    if not setup_py.exists():
        pytest.skip("no setup.py beside the tests (the tests were copied out of the sdist)")
    done = _python(
        "import sys\n"
        "sys.platform = 'darwin'\n"
        "sys.argv = ['setup.py', '--version']\n"
        "import pathlib\n"
        f"exec(compile(pathlib.Path({str(setup_py)!r}).read_text(), 'setup.py', 'exec'))\n",
        cwd=str(ROOT),
    )
    assert done.returncode == 1
    assert done.stderr.startswith("pyclone supports Linux only")
    assert "'darwin'" in done.stderr
    assert "error:" not in done.stderr  # no compiler ran
