"""``.. pyclone-changelog:: PATH``: CHANGELOG.md shown as a page, without a Markdown parser.

The changelog is kept once, in Markdown at the top of the repository, where
GitHub and PyPI readers find it; the site renders the same file.  It uses a
small subset of Markdown (``##``/``###`` headings, ``-`` lists with
two-space continuation lines, backquoted code, ``*``/``**`` emphasis,
``[text](url)`` links), which maps line by line onto reStructuredText.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.nodes import nested_parse_with_titles

from ._common import _Dynamic

_UNDERLINES = {2: "=", 3: "-", 4: "~"}
_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """Markdown code spans and links as reStructuredText; emphasis is the same in both."""
    text = _LINK.sub(lambda m: f"`{m.group(1)} <{m.group(2)}>`__", text)
    return _CODE.sub(lambda m: f"``{m.group(1)}``", text)


def markdown_to_rst(markdown: str) -> list[str]:
    """The reStructuredText lines for the changelog's Markdown (its ``#`` title dropped).

    A ``##`` heading becomes a section one level below the page title.
    """
    lines: list[str] = []
    for line in markdown.splitlines():
        heading = re.match(r"^(#{1,4})\s+(.*)$", line)
        if heading:
            level = len(heading.group(1))
            if level == 1:
                continue
            title = _inline(heading.group(2).strip())
            lines += ["", title, _UNDERLINES[level] * len(title), ""]
        elif line.startswith("- "):
            lines.append("* " + _inline(line[2:]))
        else:
            lines.append(_inline(line))
    return lines


class Changelog(_Dynamic):
    """``.. pyclone-changelog:: ../CHANGELOG.md``: the file's sections, read at build time."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        path = _find(Path(self.env.doc2path(self.env.docname)).parent, self.arguments[0])
        if path is None:
            # A copy of docs/ without the repository around it (the tests
            # build one): say where the changelog is instead of failing.
            return [nodes.paragraph(text=f"See {self.arguments[0]} in the repository.")]
        self.env.note_dependency(str(path))
        text = path.read_text(encoding="utf-8")
        container = nodes.container()
        source = StringList(markdown_to_rst(text), str(path))
        nested_parse_with_titles(self.state, source, container)
        return list(container.children)


def _find(page_dir: Path, relative: str) -> Path | None:
    """The changelog next to the page, else in the checkout of the pyclone being documented."""
    import pyclone

    candidates = [
        page_dir / relative,
        Path(pyclone.__file__).resolve().parents[1] / Path(relative).name,
    ]
    return next((c.resolve() for c in candidates if c.is_file()), None)
