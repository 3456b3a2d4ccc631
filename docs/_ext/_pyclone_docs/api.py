"""The API reference: autodoc directives that step aside for names another page documents.

``optional-automodule``, ``pyclone-constants``, ``pyclone-data``,
``pyclone-autodoc``, ``pyclone-remaining-api``, and the ``autodoc-skip-member``
hook that keeps the module reference from repeating another page.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx

from ._common import _Dynamic, _parse


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
    entry is not indexed, so the two never collide.  With ``:optional:`` a
    name that this build of pyclone lacks is left out instead of failing
    the build, so a page can place a name before the code that adds it.
    """

    required_arguments = 1
    has_content = False
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {
        "members": directives.unchanged,
        "no-members": directives.flag,
        "exclude-members": directives.unchanged,
        "optional": directives.flag,
    }

    def run(self) -> list[nodes.Node]:
        self.mark_dynamic()
        import pyclone

        name = self.arguments[0]
        optional = "optional" in self.options
        if optional and not hasattr(pyclone, name):
            return []
        options = {
            k: ("" if v is None else str(v)) for k, v in self.options.items() if k != "optional"
        }
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
            # Say so, rather than leave a heading over nothing.
            return [nodes.paragraph(text="None: every public name has a page of its own.")]
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
