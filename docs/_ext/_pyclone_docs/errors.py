"""``.. pyclone-exceptions::``: a table of the exceptions pyclone exports."""

from __future__ import annotations

from docutils import nodes
from sphinx import addnodes

from ._common import _Dynamic, _table


def exception_rows() -> list[tuple[str, str, str]]:
    """(name, bases, first docstring line) for every exception pyclone exports."""
    import pyclone

    rows = []
    for name in pyclone.__all__:
        obj = getattr(pyclone, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            bases = ", ".join(
                b.__name__ if b.__module__ == "builtins" else f"{b.__module__}.{b.__qualname__}"
                for b in obj.__bases__
            )
            doc = (obj.__dict__.get("__doc__") or "").strip().splitlines()
            rows.append((name, bases, doc[0] if doc else ""))
    return rows


class Exceptions(_Dynamic):
    """``.. pyclone-exceptions::``: a table of the exceptions in ``pyclone.__all__``."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        cells: list[list[nodes.Node | str]] = []
        for name, bases, summary in exception_rows():
            ref = addnodes.pending_xref(
                "",
                refdomain="py",
                reftype="exc",
                reftarget=f"pyclone.{name}",
                refexplicit=False,
                refwarn=False,
            )
            ref += nodes.literal(text=f"pyclone.{name}")
            cells.append([nodes.paragraph("", "", ref), bases, summary])
        return [_table(["Exception", "Based on", "Meaning"], cells, [22, 28, 50])]
