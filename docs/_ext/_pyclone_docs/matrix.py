"""``.. pyclone-support-matrix::``: which flag class runs which child kind, found by running it."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from docutils import nodes

from ._common import _Dynamic, _table

# ---------------------------------------------------------------------------
# The support matrix, found by running the library


@dataclass(frozen=True)
class Outcome:
    """What happened when one cell of the matrix was tried."""

    supported: bool | None  # None: could not be tried in this build
    text: str


def flag_classes() -> list[tuple[str, Any]]:
    """The rows of the matrix: a name and a representative flag set."""
    from pyclone import CloneFlag, spec

    return [
        ("fork-like (no CLONE_VM)", CloneFlag(0)),
        ("shared memory (CLONE_VM)", CloneFlag.VM),
        ("shared memory, caller suspended (CLONE_VM|CLONE_VFORK)", spec.PRESETS["vfork"]),
        ('thread (share="thread")', spec.PRESETS["thread"]),
    ]


def _actions() -> Any:
    try:
        return importlib.import_module("pyclone.actions")
    except ImportError:
        return None


def _callable_child() -> int:
    return 0


def _exec_child() -> None:
    import pyclone

    child_exec = getattr(pyclone, "child_exec", None)
    if child_exec is not None:
        child_exec("/bin/true", ["true"])
    os.execv("/bin/true", ["true"])


def child_kinds() -> list[tuple[str, Callable[[], Any] | None, str]]:
    """The columns: a name, a factory for the child (None: unavailable), and what is run."""
    actions = _actions()
    kinds: list[tuple[str, Callable[[], Any] | None, str]] = [
        ("Python callable", lambda: _callable_child, "a function returning 0"),
    ]
    if actions is not None:
        kinds.append(("action", lambda: actions.exit(0), "pyclone.actions.exit(0)"))
        kinds.append(
            ("exec", lambda: actions.exec("/bin/true", ["true"]), 'actions.exec("/bin/true")')
        )
    else:
        kinds.append(("action", None, "pyclone.actions.exit(0)"))
        kinds.append(("exec", lambda: _exec_child, "a function that execs /bin/true"))
    return kinds


def try_cell(make_child: Callable[[], Any] | None, flags: Any, timeout: float = 10.0) -> Outcome:
    """Spawn one task and report what happened."""
    import pyclone

    if make_child is None:
        return Outcome(None, "not in this build: pyclone.actions is missing")
    try:
        task = pyclone.spawn_task(make_child(), flags=flags)
    except pyclone.UnsupportedFlags as exc:
        return Outcome(False, f"refused: {exc}")
    except Exception as exc:  # an OSError from the kernel, for example
        return Outcome(False, f"error: {type(exc).__name__}: {exc}")
    try:
        code = task.wait(timeout)
    except pyclone.TimeoutExpired:
        task.kill()
        task.wait()
        code = None
    with contextlib.suppress(Exception):
        task.close()
    if code == 0:
        return Outcome(True, "supported")
    return Outcome(False, f"ran, but ended with status {code}")


_matrix_cache: list[tuple[str, list[Outcome]]] | None = None


def support_matrix() -> tuple[list[str], list[tuple[str, list[Outcome]]]]:
    """Header and rows of the matrix, each cell found by running it once."""
    global _matrix_cache
    kinds = child_kinds()
    header = ["Flag class"] + [name for name, _, _ in kinds]
    if _matrix_cache is None:
        rows = []
        for class_name, flags in flag_classes():
            rows.append((class_name, [try_cell(make, flags) for _, make, _ in kinds]))
        _matrix_cache = rows
    return header, _matrix_cache


class SupportMatrix(_Dynamic):
    """``.. pyclone-support-matrix::``"""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        header, rows = support_matrix()
        out: list[nodes.Node] = []
        cells: list[list[nodes.Node | str]] = []
        reasons: list[str] = []
        for class_name, outcomes in rows:
            row: list[nodes.Node | str] = [class_name]
            for outcome in outcomes:
                if outcome.supported:
                    row.append("yes")
                elif outcome.supported is None:
                    row.append("not in this build")
                else:
                    if outcome.text not in reasons:
                        reasons.append(outcome.text)
                    row.append(f"no ({reasons.index(outcome.text) + 1})")
            cells.append(row)
        out.append(_table(header, cells, [40] + [20] * (len(header) - 1)))
        what = "; ".join(f"{name}: {desc}" for name, _, desc in child_kinds())
        out.append(
            nodes.paragraph(
                text=f"Generated while building these docs on Linux {platform.release()}, "
                f"Python {platform.python_version()}, by spawning each case with "
                f"pyclone.spawn_task(child, flags=...). Children: {what}."
            )
        )
        if reasons:
            items = nodes.enumerated_list()
            for text in reasons:
                item = nodes.list_item()
                item += nodes.paragraph(text=text)
                items += item
            out.append(items)
        return out
