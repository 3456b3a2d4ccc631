"""The rule model as documentation tables: one row per flag, one row per rule.

The docs extension (docs/_ext) renders :func:`flag_rows` and
:func:`rules_table` at build time, so the tables never drift from the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..flags import SINGLE_FLAGS
from ._effects import _EFFECTS
from ._model import _BOTH, _PREDICTED, RULES


@dataclass(frozen=True)
class FlagRow:
    """One row of the flag table: a flag, what it does, and the rules on it."""

    name: str
    value: int
    effect: str
    api: str
    constraints: tuple[str, ...]
    since: str


def flag_rows() -> Iterator[FlagRow]:
    """One :class:`FlagRow` per :class:`CloneFlag`, in bit order.

    ``constraints`` are the ids of the predicted rules that involve the flag.
    """
    for bit in SINGLE_FLAGS:
        effect, where, since = _EFFECTS[bit]
        api = {"both": "clone, clone3", "clone3": "clone3", "clone": "clone"}[where]
        ids: list[str] = []
        for rule in _PREDICTED:
            if rule.flags & int(bit) and rule.id not in ids:
                ids.append(rule.id)
        yield FlagRow(f"CLONE_{bit.name}", int(bit), effect, api, tuple(ids), since)


def _format(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)
    out = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)).rstrip(), rule]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows[1:]
    ]
    out.append(rule)
    return "\n".join(out)


def flag_table() -> str:
    """The flag table as text (a reStructuredText simple table)."""
    rows: list[tuple[str, ...]] = [("flag", "value", "effect", "API", "rules", "since")]
    for r in flag_rows():
        rows.append(
            (r.name, f"{r.value:#x}", r.effect, r.api, ", ".join(r.constraints) or "-", r.since)
        )
    return _format(rows)


def rules_table(*, predicted_only: bool = False) -> str:
    """The rules in the kernel's order as text (a reStructuredText simple table)."""
    rows: list[tuple[str, ...]] = [("id", "errno", "API", "rule", "since")]
    for rule in RULES:
        if predicted_only and not rule.predicted:
            continue
        api = "both" if rule.apis == _BOTH else rule.apis[0]
        name = rule.name if rule.predicted else f"({rule.name})"
        rows.append((rule.id, rule.errno_name, api, name, rule.since))
    return _format(rows)
