"""The package's layering: every pyclone module imports only its own layer or lower ones.

Each module's imports are read with :mod:`ast` -- at module level, under
``if TYPE_CHECKING``, inside functions, and ``importlib.import_module``
calls with a literal name -- and checked against :data:`LAYERS`.  An
upward import or an import cycle fails here.

An import of a pyclone module inside a function (the usual way to hide a
cycle) is allowed only as a declared lazy import, one that defers loading
something heavy: the line carries a ``# lazy: <why>`` comment, or (for the
package's public names) the name is in the ``_LAZY`` table of
``pyclone/__init__.py``.  A lazy import must go down: to a lower layer, to
a part of the importing module, or to a module listed before it in its
layer.  Lazy edges stay in the graph, so they are checked for cycles too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyclone"

#: The layers, lowest first.  A module may import modules of its own layer
#: or of lower layers; within a layer the imports must not form a cycle.
#: Within a layer the list order is the order a lazy import must follow:
#: it may name only a module listed before the importing one.
LAYERS: list[tuple[str, list[str]]] = [
    ("the C extension", ["_pyclone"]),
    ("vocabulary", ["flags", "_procfs", "_fd", "_checks", "_lazy", "_helpformat", "_preload"]),
    (
        "kernel model and thin wrappers",
        [
            "rules",
            "spec",
            "_timeout",
            "errors",
            "pidfd",
            "actions",
            "sharing",
            "cgroup",
            "probe",
            "_exitsig",
        ],
    ),
    ("creating tasks", ["clone3_api", "_clone_api", "borrowed"]),
    ("task plumbing", ["_transport", "_reaper"]),
    ("the Task object", ["_task", "_task_pipe"]),
    ("launching", ["_gate", "_launch"]),
    ("the public task module", ["task"]),
    ("tools built on tasks", ["sandbox", "bench", "demo", "strategies", "testing"]),
    ("entry points and the package", ["cli", "__main__", "__init__", "_pytest_plugin"]),
]


def _layer_table() -> dict[str, int]:
    table: dict[str, int] = {}
    for rank, (_, modules) in enumerate(LAYERS):
        for module in modules:
            table[module] = rank
    return table


LAYER = _layer_table()


def _module_name(path: Path) -> str:
    """``pyclone/x.py`` -> ``x``; ``pyclone/sub/y.py`` -> ``sub.y``; ``__init__``s by package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _exists(name: str) -> bool:
    base = PACKAGE.joinpath(*name.split("."))
    return name == "_pyclone" or base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def owner_of(module: str) -> str:
    """The :data:`LAYERS` entry of the module: itself, its package, or ``x`` for ``_x_part``."""
    if module in LAYER:
        return module
    if "." in module:
        return owner_of(module.rsplit(".", 1)[0])
    for name in LAYER:
        stem = name.strip("_")
        if stem and module.strip("_").startswith(stem + "_"):
            return name
    raise KeyError(module)


def layer_of(module: str) -> int:
    """The module's layer; a submodule of a package, or ``_x_part``, takes ``x``'s layer."""
    return LAYER[owner_of(module)]


def _place_in_layer(module: str) -> int:
    name = owner_of(module)
    return LAYERS[LAYER[name]][1].index(name)


def goes_down(source: str, target: str) -> bool:
    """May ``source`` import ``target`` lazily: a lower layer, its own part, or listed before it."""
    if layer_of(target) != layer_of(source):
        return layer_of(target) < layer_of(source)
    if owner_of(target) == owner_of(source):
        return target != owner_of(source)  # a part of the module (``cli`` -> ``_cli_probe``)
    return _place_in_layer(target) < _place_in_layer(source)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool
    lazy: bool = False  # declared lazy: a ``# lazy:`` comment or the package's ``_LAZY`` table


def _package_of(module: str, path: Path) -> list[str]:
    parts = module.split(".") if module != "__init__" else []
    if path.name != "__init__.py":
        parts = parts[:-1]
    return parts


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> Iterator[str]:
    """The pyclone modules (names relative to the package) a ``from ... import`` reads."""
    named = node.module.split(".") if node.module else []
    if node.level:
        base = _package_of(module, path)
        parts = base[: len(base) - (node.level - 1)] + named
    elif named[:1] == ["pyclone"]:
        parts = named[1:]
    else:
        return
    yield from _from(parts, node)


def _from(parts: list[str], node: ast.ImportFrom) -> Iterator[str]:
    for alias in node.names:
        child = ".".join([*parts, alias.name])
        if _exists(child):
            yield child
        else:
            yield ".".join(parts) if parts else "__init__"


def _absolute(name: str) -> str | None:
    if name == "pyclone":
        return "__init__"
    if name.startswith("pyclone."):
        return name[len("pyclone.") :]
    return None


#: The comment that declares a lazy import, followed by the reason.
LAZY_MARKER = re.compile(r"#\s*lazy:\s*\S")


def _marked_lazy(lines: list[str], node: ast.stmt) -> bool:
    last = node.end_lineno or node.lineno
    return any(LAZY_MARKER.search(line) for line in lines[node.lineno - 1 : last])


def _walk(
    module: str, path: Path, lines: list[str], node: ast.AST, in_function: bool
) -> Iterator[Edge]:
    for child in ast.iter_child_nodes(node):
        nested = in_function or isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        )
        if isinstance(child, ast.ImportFrom):
            lazy = _marked_lazy(lines, child)
            for target in _resolve(module, path, child):
                yield Edge(module, target, child.lineno, in_function, lazy)
        elif isinstance(child, ast.Import):
            lazy = _marked_lazy(lines, child)
            for alias in child.names:
                target = _absolute(alias.name)
                if target is not None:
                    yield Edge(module, target, child.lineno, in_function, lazy)
        elif (
            isinstance(child, ast.Call)
            and isinstance(child.func, ast.Attribute)
            and child.func.attr == "import_module"
            and child.args
            and isinstance(child.args[0], ast.Constant)
            and isinstance(child.args[0].value, str)
        ):
            target = _absolute(child.args[0].value)
            if target is not None:
                yield Edge(module, target, child.lineno, in_function)
        yield from _walk(module, path, lines, child, nested)


def _package_lazy_table(tree: ast.Module) -> Iterator[Edge]:
    """The ``_LAZY = {"Name": "submodule", ...}`` table of ``pyclone/__init__.py``, as edges.

    The package's ``__getattr__`` imports these submodules by computed name,
    which the scan cannot see; the table is the declaration it reads instead.
    """
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id == "_LAZY"):
            continue
        assert isinstance(node.value, ast.Dict), "_LAZY must be a literal dict"
        for value in node.value.values:
            assert isinstance(value, ast.Constant) and isinstance(value.value, str)
            yield Edge("__init__", value.value, value.lineno, in_function=True, lazy=True)


def _edges() -> list[Edge]:
    edges = []
    for module, path in _modules().items():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        found = list(_walk(module, path, text.splitlines(), tree, False))
        if module == "__init__":
            found += _package_lazy_table(tree)
        edges += [e for e in found if e.target != module]
    return edges


EDGES = _edges()


def _where(edge: Edge) -> str:
    kind = "inside a function" if edge.in_function else "at module level"
    if edge.lazy:
        kind = "lazily, " + kind
    return f"{edge.source} imports {edge.target} ({kind}, line {edge.line})"


def test_the_scan_sees_imports() -> None:
    """The scanner finds imports of every kind, so the other tests are not vacuous."""
    pairs = {(e.source, e.target) for e in EDGES}
    assert ("flags", "_pyclone") in pairs  # from . import _pyclone
    assert ("task", "_launch") in pairs  # from ._launch import ...
    assert ("__main__", "cli") in pairs
    assert ("bench._methods", "actions") in pairs  # from .. import actions, in a subpackage
    lazy = {(e.source, e.target) for e in EDGES if e.lazy and e.in_function}
    assert ("_task", "sharing") in lazy  # a marked import inside a method
    assert ("cli", "bench") in lazy  # a marked import inside a function, in a branch
    assert ("__init__", "sandbox") in lazy  # from the package's _LAZY table


def test_every_module_has_a_layer() -> None:
    missing = []
    for module in _modules():
        try:
            layer_of(module)
        except KeyError:
            missing.append(module)
    assert not missing, f"add these modules to LAYERS in {__file__}: {missing}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = [_where(e) for e in EDGES if layer_of(e.target) > layer_of(e.source)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_pyclone_module_is_imported_inside_a_function_unless_declared_lazy() -> None:
    hidden = [_where(e) for e in EDGES if e.in_function and not e.lazy]
    assert not hidden, (
        "function-level imports of pyclone modules (declare a deliberate lazy import "
        "with a '# lazy: <why>' comment on its line):\n" + "\n".join(hidden)
    )


def test_lazy_imports_go_down() -> None:
    upward = [_where(e) for e in EDGES if e.lazy and not goes_down(e.source, e.target)]
    assert not upward, "lazy imports that do not go down a layer:\n" + "\n".join(upward)


def test_lazy_markers_are_only_on_function_level_imports() -> None:
    """A ``# lazy:`` comment on a module-level import would declare nothing: it is a mistake."""
    stray = [_where(e) for e in EDGES if e.lazy and not e.in_function]
    assert not stray, "'# lazy:' on module-level imports:\n" + "\n".join(stray)


def test_the_rule_for_lazy_imports() -> None:
    """:func:`goes_down` itself: down a layer, to a part, or to an earlier module of the layer."""
    assert goes_down("cli", "sandbox")  # L9 -> L8
    assert goes_down("__init__", "rules")
    assert goes_down("cli", "_cli_probe")  # a part of the importing module
    assert goes_down("sandbox", "sandbox._run")  # a submodule of the importing package
    assert goes_down("errors", "rules")  # listed before it in its layer
    assert not goes_down("rules", "errors")
    assert not goes_down("task", "sandbox")  # up a layer
    assert not goes_down("sandbox._run", "sandbox")  # a part importing its package
    assert not goes_down("flags", "flags")


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        graph.setdefault(e.source, set()).add(e.target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
