"""The documentation: docstrings on every public name, and a site that builds.

The Sphinx builds run in a subprocess with a timeout, and are skipped (with
the reason) when Sphinx is not installed.  They build into a temporary
directory from scratch, so no cached page can hide a failure.
"""

from __future__ import annotations

import argparse
import ast
import doctest
import importlib.util
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import pyclone
from pyclone import _pyclone

from conftest import WAIT

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD_TIMEOUT = 100.0  # below the suite's 120 s per-test timeout

#: The pages other features contribute; the site must build with and without them.
CONTRIBUTED_PAGES = (
    "howto/property-testing.rst",
    "howto/shared-memory.rst",
    "howto/clone3.rst",
    "howto/sandbox.rst",
    "howto/benchmarks.rst",
    "limits.rst",
)


def _extension() -> ModuleType:
    """docs/_ext/pyclone_docs.py, the extension that generates the tables."""
    pytest.importorskip("sphinx", reason="Sphinx is not installed (pip install '.[docs]')")
    spec = importlib.util.spec_from_file_location("pyclone_docs", DOCS / "_ext" / "pyclone_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pyclone_docs", module)
    spec.loader.exec_module(sys.modules["pyclone_docs"])
    return sys.modules["pyclone_docs"]


def _is_flag_constant(name: str) -> bool:
    return name.startswith("CLONE_") or name == "CSIGNAL"


# -- docstrings ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(pyclone.__all__))
def test_public_name_has_a_docstring(name: str) -> None:
    obj = getattr(pyclone, name)
    if _is_flag_constant(name):
        # Plain ints: documented as the CloneFlag member of the same name.
        member = name.removeprefix("CLONE_")
        assert pyclone.CloneFlag[member] == obj
        return
    if inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj):
        doc = obj.__doc__
        if inspect.isclass(obj):
            doc = obj.__dict__.get("__doc__")  # its own, not inherited
        assert doc and doc.strip(), f"pyclone.{name} has no docstring"
        return
    # Data: documented by a `#:` comment above its assignment where it is defined.
    assert _has_comment_doc(name), f"pyclone.{name} has no #: comment"


def _has_comment_doc(name: str) -> bool:
    assignment = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=")
    for path in sorted((ROOT / "pyclone").glob("*.py")):
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if assignment.match(line) and index and lines[index - 1].startswith("#:"):
                return True
    return False


def _has_public_methods(obj: object) -> bool:
    return inspect.isclass(obj) and any(
        not attr.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
        for attr, value in vars(obj).items()
    )


@pytest.mark.parametrize(
    "name", sorted(n for n in pyclone.__all__ if _has_public_methods(getattr(pyclone, n)))
)
def test_public_methods_have_docstrings(name: str) -> None:
    cls = getattr(pyclone, name)
    missing = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        func = value.fget if isinstance(value, property) else value
        if isinstance(func, (staticmethod, classmethod)):
            func = func.__func__
        if inspect.isfunction(func) and not (func.__doc__ or "").strip():
            missing.append(attr)
    assert missing == [], f"pyclone.{name} methods without a docstring: {missing}"


@pytest.mark.parametrize(
    "name", sorted(n for n in pyclone.__all__ if inspect.isbuiltin(getattr(pyclone, n)))
)
def test_c_function_has_a_text_signature(name: str) -> None:
    signature = inspect.signature(getattr(pyclone, name))
    assert signature.parameters, f"pyclone.{name} has an empty signature"


def test_stub_names_match_the_c_module() -> None:
    tree = ast.parse((ROOT / "pyclone" / "_pyclone.pyi").read_text())
    stubbed: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stubbed.add(node.target.id)
        elif isinstance(node, ast.Assign):
            stubbed.update(t.id for t in node.targets if isinstance(t, ast.Name))
    # Private helper types of the stub (``_HasFileno``) are not module names.
    stubbed = {n for n in stubbed if not (n.startswith("_") and n[1:2].isupper())}
    actual = {n for n in dir(_pyclone) if not n.startswith("__")}
    assert actual - stubbed == set(), "in the C module but not in _pyclone.pyi"
    assert stubbed - actual == set(), "in _pyclone.pyi but not in the C module"
    assert (ROOT / "pyclone" / "py.typed").exists()


def _submodules() -> list[str]:
    names = [f"pyclone.{m.name}" for m in pkgutil.iter_modules(pyclone.__path__)]
    return sorted(n for n in names if n not in ("pyclone.__main__",))


def test_docstring_examples_run(healthy: object) -> None:
    """Examples in docstrings run in their own module's namespace, and pass."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for modname in ["pyclone", *_submodules()]:
        try:
            module = importlib.import_module(modname)
        except ImportError:  # an optional dependency (hypothesis) is missing
            continue
        for test in finder.find(module, modname):
            if test.examples:
                runner.run(test, out=report.append)
    assert runner.tries > 0, "no docstring examples found"
    assert runner.failures == 0, "".join(report)


# -- the generated tables -----------------------------------------------------


def test_every_flag_has_a_row_and_a_meaning() -> None:
    ext = _extension()
    header, rows, source = ext.flag_table()
    names = [row[0] for row in rows]
    expected = [f"CLONE_{m.name}" for m in pyclone.CloneFlag.__members__.values()]
    assert sorted(names) == sorted(n for n in expected if n != "CLONE_CSIGNAL")
    assert set(pyclone.CloneFlag.__members__) <= set(ext.MEANING)
    assert "pyclone.CloneFlag" in source
    by_name = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert by_name["CLONE_VM"]["Value"] == hex(pyclone.CLONE_VM)
    # From the bit position, or from the rule model ("clone3" / "both") when present.
    for clone3_only in ("CLONE_INTO_CGROUP", "CLONE_NEWTIME", "CLONE_CLEAR_SIGHAND"):
        assert by_name[clone3_only]["System calls"] in ("clone3 only", "clone3")
    assert by_name["CLONE_FILES"]["System calls"] in ("clone, clone3", "both")
    assert 'share="vm"' in by_name["CLONE_VM"]["spawn_task"]
    assert 'new="uts"' in by_name["CLONE_NEWUTS"]["spawn_task"]
    # "thread" alone means the preset, so the single flag is spelled as a set.
    assert 'share={"thread"}' in by_name["CLONE_THREAD"]["spawn_task"]
    assert by_name["CLONE_VM"]["pthread"] == "yes" and by_name["CLONE_VM"]["fork"] == ""


def test_support_matrix_matches_the_library(healthy: object) -> None:
    """The matrix is found by running each cell; check the runner's verdicts."""
    ext = _extension()
    flags = dict(ext.flag_classes())
    fork_like = flags["fork-like (no CLONE_VM)"]
    thread = flags['thread (share="thread")']
    shared = flags["shared memory (CLONE_VM)"]

    def returns_zero() -> int:
        return 0

    assert ext.try_cell(lambda: returns_zero, fork_like, WAIT).supported is True
    refused = ext.try_cell(lambda: returns_zero, thread, WAIT)
    assert refused.supported is False
    assert "threading.Thread" in refused.text
    # A Python callable under CLONE_VM alone (no CLONE_VFORK) is never allowed.
    refused = ext.try_cell(lambda: returns_zero, shared, WAIT)
    assert refused.supported is False and refused.text.startswith("refused: ")
    assert "CLONE_VM" in refused.text
    assert ext.try_cell(None, fork_like).supported is None

    header, rows = ext.support_matrix()
    assert header == ["Flag class", "Python callable", "action", "exec"]
    assert [name for name, _ in rows] == list(flags)
    for _, outcomes in rows:
        for outcome in outcomes:
            assert outcome.text, "every cell states what happened"
            if outcome.supported is False:
                assert outcome.text.startswith(("refused: ", "error: ", "ran, but"))


@pytest.mark.parametrize(
    ("found", "kept"),
    [
        (set(), []),
        ({"howto/sandbox"}, ["sandbox"]),  # the glob would match nothing left
        ({"howto/sandbox", "howto/clone3"}, ["sandbox", "*"]),
        ({"howto/clone3"}, ["*"]),
        ({"howto/property-testing", "howto/sandbox"}, ["sandbox", "property-testing"]),
    ],
)
def test_optional_toctree_keeps_what_exists(found: set[str], kept: list[str]) -> None:
    ext = _extension()
    entries = ["sandbox", "property-testing", "*"]
    docs = found | {"howto/index", "index"}
    keep = ext.filter_toctree_entries(entries, "howto/index", docs, True)
    assert [entries[i] for i in keep] == kept


def test_cli_help_lists_every_command() -> None:
    ext = _extension()
    helps = dict(ext.cli_help())
    assert "pyclone" in helps
    assert "pyclone demo" in helps


# -- the builds ---------------------------------------------------------------


def _sphinx(builder: str, srcdir: Path, outdir: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("sphinx", reason="Sphinx is not installed (pip install '.[docs]')")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-E",
        "-q",
        "-b",
        builder,
        "-d",
        str(outdir / ".doctrees"),
        str(srcdir),
        str(outdir),
    ]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return result


def test_doctests_pass(tmp_path: Path) -> None:
    """The site as it is: every page read with -W, every example run."""
    out = tmp_path / "doctest"
    _sphinx("doctest", DOCS, out)
    report = (out / "output.txt").read_text()
    summary = report[report.index("Doctest summary") :]
    tests = int(re.search(r"(\d+) tests", summary).group(1))  # type: ignore[union-attr]
    assert tests >= 100, summary
    assert re.search(r"\b0 failures in tests", summary), summary


def test_html_with_contributed_pages(tmp_path: Path) -> None:
    """The HTML site, with the pages other features contribute added by glob.

    Pages that are not in the tree yet get a stub, one of which documents a
    name the reference also documents (they must not collide).  Without
    the stubs, -W on the doctest build above covers the reading phase.
    """
    src = tmp_path / "docs"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build"))
    added = []
    for page in CONTRIBUTED_PAGES:
        path = src / page
        if path.exists():
            continue
        stem = Path(page).stem
        title = f"Contributed {stem}"
        path.write_text(
            f"{title}\n{'=' * len(title)}\n\n"
            ".. autofunction:: pyclone.flag_names\n\n"
            ".. doctest::\n\n   >>> pyclone.flag_names(pyclone.CLONE_VM)\n   'CLONE_VM'\n"
        )
        added.append(page)
        break  # one page documenting flag_names; the others are plain
    for page in CONTRIBUTED_PAGES:
        path = src / page
        if not path.exists():
            stem = Path(page).stem
            path.write_text(f"Contributed {stem}\n{'=' * (12 + len(stem))}\n\nText.\n")
            added.append(page)
    out = tmp_path / "html"
    _sphinx("html", src, out)
    index = (out / "index.html").read_text() + (out / "howto" / "index.html").read_text()
    for page in added:
        link = Path(page).with_suffix(".html").name
        assert link in index, f"{page} is not in a toctree"
    started = (out / "getting-started.html").read_text()
    assert 'href="howto/sandbox.html"' in started
    from sphinx.util.inventory import InventoryFile

    with open(out / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath_join)
    described = {name for entries in inventory.values() for name in entries}
    missing = [n for n in pyclone.__all__ if f"pyclone.{n}" not in described]
    assert missing == [], "public names missing from the reference"
    page = (out / "reference" / "flags.html").read_text()
    assert "CLONE_INTO_CGROUP" in page and hex(pyclone.CLONE_INTO_CGROUP) in page


def posixpath_join(base: str, target: str) -> str:
    return f"{base}/{target}" if base else target


def _run_options() -> set[str]:
    from pyclone.cli import build_parser

    parser = build_parser("run")
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {option for action in sub.choices["run"]._actions for option in action.option_strings}


def _bwrap_table() -> list[tuple[str, str]]:
    """(bwrap option, pyclone run cell) for each row of the how-to's bubblewrap table."""
    lines = (DOCS / "howto" / "sandbox.rst").read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        found = re.match(r"^   \* - ``(--[a-z0-9-]+)", line)
        if found and i + 1 < len(lines):
            rows.append((found.group(1), lines[i + 1].strip().removeprefix("- ")))
    return rows


def test_bwrap_table_says_what_pyclone_run_accepts() -> None:
    """A row says "not yet" exactly when ``pyclone run`` has no such option."""
    rows = _bwrap_table()
    assert len(rows) > 50
    known = _run_options()
    for option, cell in rows:
        if cell == "not yet":
            assert option not in known, f"{option} is accepted but the table says not yet"
        elif cell.startswith("``--"):
            spelled = re.match(r"``(--[a-z0-9-]+)", cell)
            assert spelled and spelled.group(1) in known, f"{option}: {cell} is not an option"
