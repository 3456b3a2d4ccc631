"""The shape of the tree: one job per file, stated where the file opens, and no file too long.

The design page lists each file's job from its opening comment, so a file
without one would leave a hole in the map; a comment that cites an issue
number says nothing to a reader of the code, so none may.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600
C_OPENING = re.compile(r"\A\s*/\*.*?\S.*?\*/", re.S)
ISSUE_CITATION = re.compile(r"\bissues?\s*#?\d+|\(#\d+\)", re.I)


def _files(folder: str, *suffixes: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in suffixes and p.is_file())


SOURCES = _files("src", ".c", ".h") + _files("pyclone", ".py", ".pyi")
CHECKED = SOURCES + _files("tests", ".py") + _files("benchmarks", ".py") + [ROOT / "setup.py"]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", CHECKED, ids=_ids(CHECKED))
def test_no_file_is_over_the_limit(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by concern"


@pytest.mark.parametrize("path", SOURCES, ids=_ids(SOURCES))
def test_every_source_file_states_its_job(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.suffix in {".c", ".h"}:
        assert C_OPENING.match(text), f"{path.name} does not open with a comment saying its job"
    else:
        assert ast.get_docstring(ast.parse(text)), f"{path.name} has no module docstring"


def _comments(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in {".c", ".h"}:
        return re.findall(r"/\*.*?\*/|//[^\n]*", text, re.S)
    return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line] + [
        ast.get_docstring(node) or ""
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]


@pytest.mark.parametrize("path", CHECKED, ids=_ids(CHECKED))
def test_no_comment_cites_an_issue(path: Path) -> None:
    cited = [c for c in _comments(path) if ISSUE_CITATION.search(c)]
    assert not cited, f"{path.name}: say why, not which issue: {cited[0][:80]!r}"


def test_the_design_page_lists_the_tree_it_was_built_from() -> None:
    design = (ROOT / "docs" / "design.rst").read_text(encoding="utf-8")
    assert ".. pyclone-source-tree::" in design
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/design.rst" in readme
