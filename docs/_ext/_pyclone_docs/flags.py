"""``.. pyclone-flag-table::``: every CloneFlag with its value, spelling, APIs and rules."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

from docutils import nodes

from ._common import _Dynamic, _table

# ---------------------------------------------------------------------------
# What the code knows about each flag


#: One sentence per flag, used only for flags the rule model does not cover.
#: tests/test_docs.py checks that every CloneFlag member has an entry.
MEANING: dict[str, str] = {
    "CSIGNAL": "Mask of the low byte of the clone(2) word: the exit signal, not a flag.",
    "NEWTIME": "New time namespace (offsets for CLOCK_MONOTONIC and CLOCK_BOOTTIME).",
    "VM": "Share the address space instead of getting a copy-on-write copy.",
    "FS": "Share root, current directory and umask.",
    "FILES": "Share the file descriptor table.",
    "SIGHAND": "Share the table of signal dispositions.",
    "PIDFD": "Return a pidfd for the new task.",
    "PTRACE": "If the creator is traced, trace the new task too.",
    "VFORK": "Suspend the creator until the new task execs or exits.",
    "PARENT": "Give the new task the creator's parent as its parent.",
    "THREAD": "Put the new task in the creator's thread group (same tgid).",
    "NEWNS": "New mount namespace.",
    "SYSVSEM": "Share System V semaphore undo values.",
    "SETTLS": "Set the new task's thread pointer (TLS).",
    "PARENT_SETTID": "Store the new task's id at an address in the creator.",
    "CHILD_CLEARTID": "Clear the id word and wake a futex on it when the task ends.",
    "DETACHED": "Historical, ignored by clone(2); clone3(2) rejects it.",
    "UNTRACED": "Do not let a tracer force CLONE_PTRACE on the new task.",
    "CHILD_SETTID": "Store the new task's id at an address in the new task.",
    "NEWCGROUP": "New cgroup namespace.",
    "NEWUTS": "New UTS namespace (hostname, domain name).",
    "NEWIPC": "New IPC namespace (System V IPC, POSIX message queues).",
    "NEWUSER": "New user namespace (uid/gid maps, capabilities).",
    "NEWPID": "New pid namespace: the new task is its pid 1.",
    "NEWNET": "New network namespace.",
    "IO": "Share the I/O context (I/O scheduling).",
    "CLEAR_SIGHAND": "Reset every handled signal to its default in the new task.",
    "INTO_CGROUP": "Start the new task in the cgroup given by a directory fd.",
}


def clone3_only(flag: int) -> bool:
    """True for bits clone(2) cannot carry: above bit 31, or inside the signal byte."""
    import pyclone

    return bool(flag >> 32) or bool(flag & int(pyclone.CloneFlag.CSIGNAL))


def spelling(flag: Any) -> str:
    """How ``spawn_task`` names a flag: ``share=...``, ``new=...`` or ``flags=``."""
    from pyclone import spec

    shares = [name for name, value in spec.SHARE_NAMES.items() if value == flag]
    news = [name for name, value in spec.NAMESPACES.items() if value == flag]
    # A lone string that is also a preset name means the preset, so such a
    # name has to be given inside a set.
    parts = [f'share={{"{n}"}}' if n in spec.PRESETS else f'share="{n}"' for n in shares]
    parts += [f'new="{n}"' for n in news]
    presets = [name for name, value in spec.PRESETS.items() if value and value & flag]
    if presets:
        parts.append("in presets: " + ", ".join(presets))
    return "; ".join(parts) or "flags="


def rule_rows() -> tuple[str, list[dict[str, Any]]] | None:
    """Rows from the rule model, if ``pyclone.rules`` offers them.

    The contract: a callable ``pyclone.rules.flag_rows()`` returning an
    iterable of rows, one per flag, each a dataclass instance or a mapping
    (column name -> cell), with the flag's name under ``name`` or ``flag``.
    """
    try:
        rules = importlib.import_module("pyclone.rules")
    except ImportError:
        return None
    func = getattr(rules, "flag_rows", None)
    if not callable(func):
        return None
    rows: list[dict[str, Any]] = []
    for row in func():
        if dataclasses.is_dataclass(row) and not isinstance(row, type):
            rows.append(dataclasses.asdict(row))
        elif isinstance(row, Mapping):
            rows.append(dict(row))
        else:
            return None
    return "pyclone.rules.flag_rows()", rows


def _flag_key(value: Any) -> str:
    text = str(getattr(value, "name", value) or "")
    return text.removeprefix("CLONE_")


def flag_table() -> tuple[list[str], list[list[str]], str]:
    """Header, rows and a provenance note for the flag table."""
    import pyclone

    header = ["Flag", "Value", "spawn_task", "System calls", "fork", "pthread", "Meaning"]
    rules = rule_rows()
    extra_cols: list[str] = []
    by_flag: dict[str, Mapping[str, Any]] = {}
    if rules is not None:
        for model_row in rules[1]:
            key = _flag_key(model_row.get("flag", model_row.get("name", "")))
            by_flag[key] = model_row
            for col in model_row:
                if col not in ("flag", "name", "value") and col not in extra_cols:
                    extra_cols.append(col)
        header = header[:-1] + [
            _COLUMN_TITLES.get(c, c.replace("_", " ").capitalize()) for c in extra_cols
        ]
    rows: list[list[str]] = []
    for member in sorted(pyclone.CloneFlag.__members__.values(), key=int):
        name = member.name or ""
        if name == "CSIGNAL":
            continue
        row = [
            f"CLONE_{name}",
            f"{int(member):#x}",
            spelling(member),
            "clone3 only" if clone3_only(int(member)) else "clone, clone3",
            "yes" if member & pyclone.FORK_FLAGS else "",
            "yes" if member & pyclone.PTHREAD_FLAGS else "",
        ]
        if rules is None:
            row.append(MEANING.get(name, ""))
        else:
            model = by_flag.get(name, {})
            row += [_cell(model.get(col, "")) for col in extra_cols]
        rows.append(row)
    if "api" in extra_cols:  # the model knows better than the bit position
        del header[3]
        for row in rows:
            del row[3]
    if rules is None:
        source = (
            "Generated from pyclone.CloneFlag, pyclone.spec and pyclone.FORK_FLAGS/PTHREAD_FLAGS "
            "(the rule model pyclone.rules is not part of this build)."
        )
    else:
        source = (
            "Generated from pyclone.CloneFlag, pyclone.spec, pyclone.FORK_FLAGS/PTHREAD_FLAGS "
            f"and the rule model ({rules[0]})."
        )
    return header, rows, source


#: Headings for the rule model's columns (others are capitalised as they come).
_COLUMN_TITLES = {
    "effect": "Shares or creates",
    "api": "System calls",
    "constraints": "Rules",
    "since": "Linux",
}


def _cell(value: Any) -> str:
    if value is None or value is False:
        return ""
    if value is True:
        return "yes"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(sorted(str(v) for v in value))
    return str(value)


class FlagTable(_Dynamic):
    """``.. pyclone-flag-table::``"""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        header, rows, source = flag_table()
        literal_cols = {0, 1}
        cells: list[list[nodes.Node | str]] = []
        for row in rows:
            cells.append(
                [
                    nodes.paragraph("", "", nodes.literal(text=c)) if i in literal_cols else c
                    for i, c in enumerate(row)
                ]
            )
        narrow = {"Value": 10, "fork": 5, "pthread": 7, "Rules": 8, "Linux": 8, "System calls": 10}
        widths = [narrow.get(title, 18 if i < 3 else 30) for i, title in enumerate(header)]
        return [_table(header, cells, widths), nodes.paragraph(text=source, classes=["caption"])]
