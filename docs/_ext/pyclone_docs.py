"""Sphinx extension for the pyclone docs: tables generated from the code.

Nothing in the reference tables is typed by hand.  At build time this
extension imports pyclone and

* ``.. pyclone-flag-table::`` lists every :class:`pyclone.CloneFlag` member
  with its value, its ``spawn_task`` spelling (from :mod:`pyclone.spec`),
  the system calls that accept it, and whatever the rule model
  (``pyclone.rules``) says about it when that module is present;
* ``.. pyclone-support-matrix::`` *runs* one small task per flag class and
  child kind and records what happened: it worked, or pyclone refused it
  (the :class:`pyclone.UnsupportedFlags` message is the reason shown);
* ``.. pyclone-cli::`` prints the ``python -m pyclone`` help of every
  subcommand, from the argument parser itself.

It also makes the site grow as features land without edits here:

* ``.. optional-toctree::`` is a toctree whose glob patterns may match
  nothing (a plain toctree warns, which ``-W`` turns into an error);
* ``:optdoc:`Title <path>``` links to a page if it exists, else prints the
  title as plain text;
* ``.. pending-feature:: EXPR`` shows its content as a note only while the
  Python expression is true (evaluated like a doctest ``:skipif:``);
* ``.. optional-automodule:: NAME`` documents a module with autodoc if it
  can be imported;
* names that another page documents itself (``.. autofunction::
  pyclone.x`` and friends) are left out of the module reference, so the
  two never collide as duplicate object descriptions.

Pages that use any of this are re-read on every build, so an incremental
build cannot show stale tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
import platform
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.directives.other import TocTree, glob_re
from sphinx.util.docutils import SphinxDirective
from sphinx.util.matching import patfilter


def docname_join(basedocname: str, docname: str) -> str:
    """Resolve ``docname`` relative to the page ``basedocname`` (or absolute with "/")."""
    return posixpath.normpath(posixpath.join("/" + basedocname, "..", docname))[1:]


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
        for row in rules[1]:
            key = _flag_key(row.get("flag", row.get("name", "")))
            by_flag[key] = row
            for col in row:
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


# ---------------------------------------------------------------------------
# Directives


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


class CliHelp(_Dynamic):
    """``.. pyclone-cli::``: the help text of ``python -m pyclone`` and each command."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        out: list[nodes.Node] = []
        for title, text in cli_help():
            section = nodes.rubric(text=title)
            out.append(section)
            out.append(nodes.literal_block(text, text, language="text"))
        return out


def cli_help() -> Iterator[tuple[str, str]]:
    """(title, help text) for the top-level parser and every subcommand."""
    import argparse

    from pyclone import cli

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        parser = cli.build_parser()
        yield "python -m pyclone", parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"python -m pyclone {name}", sub.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


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


class OptionalAutomodule(_Dynamic):
    """``.. optional-automodule:: NAME``: autodoc the module if it imports.

    Content (optional) is a title line for the section.  Extra options are
    passed to automodule.
    """

    required_arguments = 1
    has_content = True
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {"title": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        name = self.arguments[0]
        try:
            importlib.import_module(name)
        except ImportError:
            return []
        title = self.options.get("title") or name
        lines = [f".. rubric:: {title}", "", f".. automodule:: {name}", "   :members:"]
        if name in elsewhere_documented(self.env.app):
            lines.append("   :no-index:")
        lines.append("")
        return _parse(self, lines)


class Constants(_Dynamic):
    """``.. pyclone-constants::``: one ``py:data`` entry per top-level CLONE_* int."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        import pyclone

        lines: list[str] = []
        for name in pyclone.__all__:
            if not (name.startswith("CLONE_") or name == "CSIGNAL"):
                continue
            value = getattr(pyclone, name)
            member = name.removeprefix("CLONE_")
            lines += [
                f".. py:data:: {name}",
                "   :module: pyclone",
                "   :type: int",
                f"   :value: {int(value):#x}",
                "",
                f"   :attr:`CloneFlag.{member} <pyclone.CloneFlag>` as a plain :class:`int`.",
                "",
            ]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, self.env.docname), 0, container)
        return list(container.children)


def data_doc(name: str) -> tuple[str, list[str]]:
    """The value text and ``#:`` comment of the top-level data ``pyclone.NAME``.

    The comment is read from whichever pyclone module defines the name, so
    a re-exported constant keeps the documentation written next to it.
    """
    import sys

    from sphinx.pycode import ModuleAnalyzer

    import pyclone

    value = getattr(pyclone, name)
    shown = pyclone.flag_names(value) if isinstance(value, pyclone.CloneFlag) else repr(value)
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith("pyclone") or getattr(module, name, None) is not value:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:
            continue
        lines = docs.get(("", name))
        if lines:
            return shown, [line for line in lines if line is not None]
    return shown, []


class Data(_Dynamic):
    """``.. pyclone-data:: NAME``: a top-level data name, its value and its ``#:`` comment."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        name = self.arguments[0]
        own = elsewhere_documented(self.env.app, self.env.docname, own_directives=False)
        return _parse(self, _data_lines(name, f"pyclone.{name}" in own))


def _data_lines(name: str, no_index: bool = False) -> list[str]:
    shown, doc = data_doc(name)
    lines = [f".. py:data:: {name}", "   :module: pyclone", f"   :value: {shown}"]
    if no_index:
        lines.append("   :no-index:")
    lines.append("")
    lines += [f"   {line}" if line else "" for line in doc]
    lines.append("")
    return lines


def _parse(directive: SphinxDirective, lines: list[str]) -> list[nodes.Node]:
    container = nodes.container()
    directive.state.nested_parse(StringList(lines, directive.env.docname), 0, container)
    return list(container.children)


def _autodoc_lines(name: str, options: Mapping[str, str], no_index: bool) -> list[str]:
    """autodoc directive lines for ``pyclone.NAME``, chosen by what the object is."""
    import inspect

    import pyclone

    obj = getattr(pyclone, name)
    full = f"pyclone.{name}"
    if isinstance(obj, type) and issubclass(obj, BaseException):
        lines = [f".. autoexception:: {full}"]
    elif isinstance(obj, type):
        lines = [f".. autoclass:: {full}"]
    elif callable(obj) or inspect.ismodule(obj):
        lines = [f".. autofunction:: {full}"]
    else:
        return _data_lines(name, no_index)
    if isinstance(obj, type) and "no-members" not in options and "members" not in options:
        lines.append("   :members:")
    lines += [f"   :{key}: {value}".rstrip() for key, value in options.items()]
    if no_index:
        lines.append("   :no-index:")
    lines.append("")
    return lines


class Autodoc(_Dynamic):
    """``.. pyclone-autodoc:: NAME``: autodoc ``pyclone.NAME`` (class, function or data).

    If another page describes the same name with its own directive, this
    entry is not indexed, so the two never collide.
    """

    required_arguments = 1
    has_content = False
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {
        "members": directives.unchanged,
        "no-members": directives.flag,
        "exclude-members": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        name = self.arguments[0]
        options = {k: ("" if v is None else str(v)) for k, v in self.options.items()}
        own = elsewhere_documented(self.env.app, self.env.docname, own_directives=False)
        return _parse(self, _autodoc_lines(name, options, f"pyclone.{name}" in own))


class RemainingApi(_Dynamic):
    """``.. pyclone-remaining-api::``: autodoc every public name not described yet.

    "Described" means: on this page above or below (explicit autodoc
    directives), on another page, or a CLONE_* constant.  New public names
    of pyclone therefore appear in the reference without an edit here.
    """

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        import inspect

        import pyclone

        here = _described_in(Path(self.env.doc2path(self.env.docname)))
        skip = here | elsewhere_documented(self.env.app, self.env.docname)
        lines: list[str] = []
        for name in pyclone.__all__:
            full = f"pyclone.{name}"
            if full in skip or name.startswith("CLONE_") or name == "CSIGNAL":
                continue
            if inspect.ismodule(getattr(pyclone, name)):
                continue
            lines += _autodoc_lines(name, {}, no_index=False)
        if not lines:
            return []
        container = nodes.container()
        self.state.nested_parse(StringList(lines, self.env.docname), 0, container)
        return list(container.children)


# ---------------------------------------------------------------------------
# Names other pages document themselves

_DESC = re.compile(
    r"^\.\.\s+(?:auto)?(?:py:)?"
    r"(function|class|exception|data|attribute|method|module|currentmodule|"
    r"decorator|property|pyclone-data|pyclone-autodoc)::\s*([\w.]+)",
    re.M,
)


def elsewhere_documented(
    app: Sphinx, docname: str | None = None, *, own_directives: bool = True
) -> frozenset[str]:
    """Full names described by explicit directives on pages other than ``docname``.

    With no ``docname``, pages under reference/ are left out too: that is
    the set the module reference must not repeat.
    """
    srcdir = Path(app.srcdir)
    names: set[str] = set()
    for path in sorted(srcdir.rglob("*.rst")):
        rel = path.relative_to(srcdir)
        if rel.parts[0].startswith("_"):
            continue
        if docname is None and rel.parts[0] == "reference":
            continue
        if rel.with_suffix("").as_posix() == docname:
            continue
        names |= _described_in(path, own_directives=own_directives)
    return frozenset(names)


def _described_in(path: Path, *, own_directives: bool = True) -> set[str]:
    """Full names that one page describes with explicit (auto)doc directives.

    ``own_directives=False`` leaves out this extension's ``pyclone-data`` and
    ``pyclone-autodoc`` (which step aside by themselves).
    """
    names: set[str] = set()
    module = ""
    text = path.read_text(encoding="utf-8", errors="replace")
    for kind, target in _DESC.findall(text):
        if kind in ("module", "currentmodule"):
            module = target
            if kind == "module":
                names.add(target)
            continue
        if kind in ("pyclone-data", "pyclone-autodoc"):
            if own_directives:
                names.add(f"pyclone.{target}")
        elif target.split(".")[0] == "pyclone":
            names.add(target)
        elif module:
            names.add(f"{module}.{target}")
    return names


def skip_member(
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """Leave out of the reference what another page already describes.

    Covers members of modules (``pyclone.explain``) and of classes
    (``pyclone.Task.shared_resources``), under the public or defining module.
    """
    documented = elsewhere_documented(app)
    if what == "module":
        module = getattr(obj, "__module__", None)
        candidates = [f"pyclone.{name}", f"{module}.{name}"]
    elif what in ("class", "exception"):
        target = obj.fget if isinstance(obj, property) else obj
        qualname = getattr(target, "__qualname__", None)
        module = getattr(target, "__module__", None)
        if not qualname:
            return None
        candidates = [f"pyclone.{qualname}", f"{module}.{qualname}"]
    else:
        return None
    if any(c in documented for c in candidates):
        return True
    return None


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


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("pyclone-flag-table", FlagTable)
    app.add_directive("pyclone-support-matrix", SupportMatrix)
    app.add_directive("pyclone-rules-table", RulesTable)
    app.add_directive("pyclone-cli", CliHelp)
    app.add_directive("pyclone-exceptions", Exceptions)
    app.add_directive("optional-toctree", OptionalTocTree)
    app.add_directive("pending-feature", PendingFeature)
    app.add_directive("optional-automodule", OptionalAutomodule)
    app.add_directive("pyclone-constants", Constants)
    app.add_directive("pyclone-remaining-api", RemainingApi)
    app.add_directive("pyclone-data", Data)
    app.add_directive("pyclone-autodoc", Autodoc)
    app.add_role("optdoc", optdoc_role)
    app.connect("autodoc-skip-member", skip_member)
    app.connect("env-get-outdated", always_reread)
    app.connect("env-purge-doc", purge_doc)
    app.connect("env-merge-info", merge_info)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
