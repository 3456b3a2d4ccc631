"""The tree of the sources, read at build time: each file with its size and its job.

Every file in ``src/`` and ``pyclone/`` opens with a comment (C) or a
docstring (Python) whose first sentence states its job; the design page
shows those sentences, so the map of the code cannot drift from the code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from docutils import nodes

import pyclone

from ._common import _Dynamic, _table

# The checkout the imported pyclone comes from (docs are built against it),
# not the folder these docs happen to be copied to.
ROOT = Path(pyclone.__file__).resolve().parent.parent

_C_OPENING = re.compile(r"\A\s*/\*(.*?)\*/", re.S)


def _first_sentence(text: str) -> str:
    words = " ".join(line.strip(" *") for line in text.strip().splitlines()).strip()
    match = re.match(r"(.+?\.)(\s|$)", words)
    return match.group(1) if match else words


def file_job(path: Path) -> str:
    """The first sentence of a file's opening comment or docstring ("" if it has none)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in {".c", ".h"}:
        match = _C_OPENING.match(text)
        if not match:
            return ""
        body = match.group(1).strip().lstrip("*").strip()
        # "name.c: the job ..." names the file first; the job follows the colon.
        body = re.sub(rf"\A{re.escape(path.name)}\s*:\s*", "", body)
        return _first_sentence(body)
    doc = ast.get_docstring(ast.parse(text)) or ""
    return _first_sentence(doc)


def source_files(root: Path = ROOT) -> list[Path]:
    """The files the design page lists: the C sources, then the Python package."""
    c_files = sorted(p for p in (root / "src").glob("*.[ch]"))
    py_files = sorted((root / "pyclone").rglob("*.py"), key=lambda p: p.parts)
    return c_files + py_files


def tree_rows(root: Path = ROOT) -> list[list[str]]:
    """One row per source file: its path, its line count and its job."""
    rows = []
    for path in source_files(root):
        lines = path.read_text(encoding="utf-8").count("\n")
        rows.append([str(path.relative_to(root)), str(lines), file_job(path)])
    return rows


class SourceTree(_Dynamic):
    """``.. pyclone-source-tree::``: the table of every source file and its job."""

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        rows: list[list[nodes.Node | str]] = []
        for path, lines, job in tree_rows():
            rows.append([nodes.literal(text=path), lines, job])
        return [_table(["file", "lines", "job"], rows, [30, 8, 62])]
