"""``.. pyclone-rules-table::``: the kernel's clone checks, from the rule model (pyclone.rules)."""

from __future__ import annotations

import importlib
import importlib.util

from docutils import nodes

from ._common import _Dynamic, _parse


def rules_table_text() -> str | None:
    """The rule model's table of kernel rules (reStructuredText), if it has one."""
    try:
        rules = importlib.import_module("pyclone.rules")
    except ImportError:
        return None
    func = getattr(rules, "rules_table", None)
    if not callable(func):
        return None
    text = func()
    return text if isinstance(text, str) else None


class RulesTable(_Dynamic):
    """``.. pyclone-rules-table::``: the kernel's checks, from the rule model."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        text = rules_table_text()
        if text is None:
            if not self.content:
                return []
            note = nodes.note()
            self.state.nested_parse(self.content, self.content_offset, note)
            return [note]
        lines = [*text.splitlines(), "", "Generated from the rule model (pyclone.rules)."]
        return _parse(self, lines)
