"""Shared by the generated pages: docname resolution, tables, the always-re-read directive."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def docname_join(basedocname: str, docname: str) -> str:
    """Resolve ``docname`` relative to the page ``basedocname`` (or absolute with "/")."""
    return posixpath.normpath(posixpath.join("/" + basedocname, "..", docname))[1:]


def _table(
    header: list[str], rows: Iterable[list[nodes.Node | str]], widths: list[int]
) -> nodes.table:
    table = nodes.table(classes=["longtable", "pyclone-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    head += _row(header)
    body = nodes.tbody()
    group += body
    for row in rows:
        body += _row(row)
    return table


def _row(cells: Iterable[nodes.Node | str]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        if isinstance(cell, nodes.Node):
            entry += cell
        else:
            entry += nodes.paragraph(text=cell)
        row += entry
    return row


class _Dynamic(SphinxDirective):
    """A directive whose output depends on the code: its page is always re-read."""

    def mark_dynamic(self) -> None:
        dynamic: set[str] = getattr(self.env, "pyclone_dynamic_docs", set())
        dynamic.add(self.env.docname)
        self.env.pyclone_dynamic_docs = dynamic  # type: ignore[attr-defined]


def _parse(directive: SphinxDirective, lines: list[str]) -> list[nodes.Node]:
    container = nodes.container()
    directive.state.nested_parse(StringList(lines, directive.env.docname), 0, container)
    return list(container.children)
