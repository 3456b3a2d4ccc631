"""Site structure that follows the pages present: optional toctrees, ``:optdoc:``, pending features.

Also the environment hooks that re-read every page whose output depends on
the code or on which pages exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.directives.other import TocTree, glob_re
from sphinx.util.matching import patfilter

from ._common import _Dynamic, docname_join


def filter_toctree_entries(
    entries: list[str], docname: str, found_docs: Iterable[str], glob: bool
) -> list[int]:
    """Indexes of the toctree entries to keep: those that name or match a page.

    Entries are taken in order, as Sphinx does: a page named explicitly is
    no longer available to a later glob, so a glob left with nothing to
    match is dropped too (Sphinx would warn about it).
    """
    remaining = set(found_docs) - {docname}
    keep: list[int] = []
    for index, line in enumerate(entries):
        entry = line.strip()
        if not entry:
            keep.append(index)
        elif glob and glob_re.match(entry):
            matches = set(patfilter(remaining, docname_join(docname, entry)))
            if matches:
                keep.append(index)
                remaining -= matches
        elif entry.endswith(">") or "://" in entry or entry == "self":
            keep.append(index)  # explicit titles and URLs are left to Sphinx
        else:
            target = docname_join(docname, entry)
            if target in remaining:
                keep.append(index)
                remaining.discard(target)
    return keep


class OptionalTocTree(TocTree):
    """A toctree whose entries may name pages that do not exist (they are dropped)."""

    def run(self) -> list[nodes.Node]:
        env = self.env
        dynamic: set[str] = getattr(env, "pyclone_dynamic_docs", set())
        dynamic.add(env.docname)
        env.pyclone_dynamic_docs = dynamic  # type: ignore[attr-defined]
        lines = list(self.content)
        keep = filter_toctree_entries(lines, env.docname, env.found_docs, "glob" in self.options)
        kept = [lines[i] for i in keep]
        if not any(line.strip() for line in kept):
            return []
        source = self.content.source(0) if self.content else ""
        self.content = StringList(kept, source)
        return super().run()


def optdoc_role(
    name: str,
    rawtext: str,
    text: str,
    lineno: int,
    inliner: Any,
    options: Mapping[str, Any] | None = None,
    content: list[str] | None = None,
) -> tuple[list[nodes.Node], list[nodes.system_message]]:
    """``:optdoc:`Title <path>```: a page link if the page exists, else plain text."""
    env = inliner.document.settings.env
    match = re.fullmatch(r"(?s)(.*?)\s*<([^<>]+)>", text)
    title, target = (match.group(1), match.group(2)) if match else (text, text)
    dynamic: set[str] = getattr(env, "pyclone_dynamic_docs", set())
    dynamic.add(env.docname)
    env.pyclone_dynamic_docs = dynamic
    docname = docname_join(env.docname, target)
    if docname in env.found_docs:
        node = addnodes.pending_xref(
            rawtext,
            refdomain="std",
            reftype="doc",
            reftarget="/" + docname,
            refexplicit=True,
            refwarn=True,
            refdoc=env.docname,
        )
        node += nodes.inline(rawtext, title, classes=["xref", "std", "std-doc"])
        return [node], []
    return [nodes.emphasis(rawtext, title)], []


def _eval_condition(env: Any, expression: str) -> Any:
    config = env.config
    context: dict[str, Any] = {"found_docs": frozenset(env.found_docs)}
    if config.doctest_global_setup:
        exec(config.doctest_global_setup, context)
    return eval(expression, context)


class PendingFeature(_Dynamic):
    """``.. pending-feature:: EXPR``: a note shown only while EXPR is true."""

    required_arguments = 1
    final_argument_whitespace = True
    has_content = True

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        if not _eval_condition(self.env, self.arguments[0]):
            return []
        note = nodes.note()
        self.state.nested_parse(self.content, self.content_offset, note)
        return [note]


def always_reread(
    app: Sphinx, env: Any, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Re-read pages whose output depends on the code or on which pages exist."""
    dynamic: set[str] = getattr(env, "pyclone_dynamic_docs", set())
    return sorted(d for d in dynamic if d in env.found_docs)


def purge_doc(app: Sphinx, env: Any, docname: str) -> None:
    dynamic: set[str] = getattr(env, "pyclone_dynamic_docs", set())
    dynamic.discard(docname)


def merge_info(app: Sphinx, env: Any, docnames: set[str], other: Any) -> None:
    dynamic: set[str] = getattr(env, "pyclone_dynamic_docs", set())
    dynamic |= getattr(other, "pyclone_dynamic_docs", set())
    env.pyclone_dynamic_docs = dynamic
