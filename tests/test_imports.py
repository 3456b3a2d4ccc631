"""What ``import pyclone`` and the command line load: the C module at once, the rest on first use.

Each check starts a fresh interpreter with ``-I -S`` (no site, no
environment variables, no user directory: only the interpreter's own
start-up modules are loaded), puts the directory holding the pyclone under
test on ``sys.path``, notes ``sys.modules`` -- which is then what ``python -c
pass`` has loaded in that same interpreter -- and runs the import.  The
modules it added are compared with an allowlist, so the checks hold on
every supported CPython even though each starts with a different set.  No
timing is asserted: the whole-process cost is measured by the benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import pyclone
from pyclone import cli

from conftest import require_root

#: The directory the pyclone under test is imported from (the checkout, for an editable install).
PATH_ENTRY = str(Path(pyclone.__file__).resolve().parent.parent)

#: The standard-library modules the core may load beyond start-up, on any of
#: 3.10-3.15 (each loads a subset: later versions import fewer modules, or other names).
STDLIB_ALLOWED = frozenset(
    {
        # typing, enum and the small modules they and the core use
        "__future__",
        "_typing",
        "abc",
        "_abc",
        "collections",
        "_collections",
        "collections.abc",
        "_collections_abc",
        "contextlib",
        "_contextvars",
        "copyreg",
        "enum",
        "functools",
        "_functools",
        "keyword",
        "operator",
        "_operator",
        "reprlib",
        "types",
        "_types",
        "typing",
        "typing.io",
        "typing.re",
        "_weakrefset",
        "weakref",
        "re",
        "re._casefix",
        "re._compiler",
        "re._constants",
        "re._parser",
        "sre_compile",
        "sre_constants",
        "sre_parse",
        "_sre",
        # os and the C-level helpers the wrappers call
        "os",
        "os.path",
        "posixpath",
        "genericpath",
        "stat",
        "_stat",
        "errno",
        "fcntl",
        "math",
        "math.integer",
        "_math_integer",
        "numbers",
        "select",
        "signal",
        "struct",
        "_struct",
        "threading",
        "warnings",
        "_py_warnings",
        "importlib",
        "importlib._bootstrap",
        "importlib._bootstrap_external",
        "importlib.machinery",
        # a wait that times out: TimeoutExpired is a subprocess.TimeoutExpired
        "subprocess",
        "_posixsubprocess",
        "selectors",
        "locale",
        "_locale",
        "encodings",
        "time",
        # the first launch of a callable: its child pickles its outcome, formats tracebacks
        "pickle",
        "_pickle",
        "_compat_pickle",
        "traceback",
        "linecache",
        "tokenize",
        "_tokenize",
        "token",
        "textwrap",
        "_colorize",
        "importlib.util",  # 3.15's traceback: importlib.util, pathlib, and on Debian
        "importlib._abc",  # the hints for a missing standard-library module
        "pathlib",
        "pathlib._os",
        "ntpath",
        "pwd",
        "grp",
        "_missing_stdlib_info",
        "io",
        "codecs",
        "itertools",
        # 3.14's typing: annotationlib, which loads ast
        "annotationlib",
        "ast",
        "_ast",
        # 3.14's traceback: _colorize, a dataclass (see ONLY_FOR_COLORIZE)
        "dataclasses",
        "inspect",
        "dis",
        "opcode",
        "_opcode",
        "_opcode_metadata",
        "copy",
        "_thread",
    }
)

#: What loading the core must never load: each is heavy and needed only by a tool
#: built on top, or by one method (``Task.wait_async`` imports asyncio).
NEVER_AT_IMPORT = frozenset(
    {
        "argparse",
        "asyncio",
        "concurrent.futures",
        "ctypes",
        "hypothesis",
        "json",
        "logging",
        "platform",
        "socket",
        "ssl",
        "pyclone.bench",
        "pyclone.cli",
        "pyclone.demo",
        "pyclone.probe",
        "pyclone.rules",
        "pyclone.sandbox",
        "pyclone.sharing",
        "pyclone.strategies",
        "pyclone.testing",
    }
)

#: What only 3.14's traceback (and later) loads with the core, its _colorize being
#: a dataclass: nothing of pyclone's needs them, so on 3.10-3.13 the core loads none.
ONLY_FOR_COLORIZE = frozenset({"dataclasses", "inspect"})

#: The pyclone modules the first read of a core name (``pyclone.spawn_task``,
#: ``pyclone.CloneFlag``...) loads: the core API and what it is made of.
CORE = frozenset(
    {
        "pyclone",
        "pyclone._checks",
        "pyclone._clone_api",
        "pyclone._exitsig",
        "pyclone._fd",
        "pyclone._gate",
        "pyclone._launch",
        "pyclone._lazy",
        "pyclone._preload",
        "pyclone._procfs",
        "pyclone._pyclone",
        "pyclone._reaper",
        "pyclone._task",
        "pyclone._task_async",
        "pyclone._task_pipe",
        "pyclone._transport",
        "pyclone.actions",
        "pyclone.borrowed",
        "pyclone.cgroup",
        "pyclone.clone3_api",
        "pyclone.errors",
        "pyclone.flags",
        "pyclone.pidfd",
        "pyclone.spec",
        "pyclone.task",
    }
)

#: What the command line must not load for ``--help`` or for ``run``.
NEVER_IN_THE_CLI = frozenset({"asyncio", "hypothesis", "pyclone.bench", "pyclone.strategies"})

_PROBE = """
import sys
sys.path[:0] = sys.argv[1:]
before = set(sys.modules)
{statement}
print(*sorted(set(sys.modules) - before))
"""


def _loaded_by(statement: str) -> set[str]:
    """The modules a fresh ``-I -S`` interpreter adds to ``sys.modules`` running ``statement``."""
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _PROBE.format(statement=statement), PATH_ENTRY],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def _allowed(name: str) -> bool:
    """In :data:`STDLIB_ALLOWED`, or a codec (which ones load depends on the locale)."""
    return name in STDLIB_ALLOWED or name.startswith("encodings.")


def test_import_pyclone_loads_the_c_module_and_nothing_else() -> None:
    """The bare import is the C module (the CLONE_* constants, kcmp): no stdlib module at all."""
    assert _loaded_by("import pyclone") == {"pyclone", "pyclone._pyclone"}


@pytest.mark.parametrize("name", ["spawn_task", "CloneFlag", "clone", "ChildError", "actions"])
def test_the_first_core_name_loads_the_core_and_allowlisted_stdlib_only(name: str) -> None:
    loaded = _loaded_by(f"import pyclone; pyclone.{name}")
    ours = {name for name in loaded if name.partition(".")[0] == "pyclone"}
    assert ours == CORE
    others = loaded - ours
    extra = sorted(name for name in others if not _allowed(name))
    assert not extra, f"not in the allowlist: {extra}"
    assert not loaded & NEVER_AT_IMPORT
    if sys.version_info < (3, 14):
        assert not loaded & ONLY_FOR_COLORIZE


def test_every_public_name_resolves_and_is_listed() -> None:
    """``from pyclone import X`` works for each X in ``__all__``, and ``dir`` lists them."""
    code = (
        "import pyclone\n"
        "names = list(pyclone.__all__)\n"
        "missing = set(names) - set(dir(pyclone))\n"
        "assert not missing, missing\n"
        "exec('from pyclone import ' + ', '.join(names))\n"
    )
    _loaded_by(code)  # asserts the interpreter exited 0


@pytest.mark.parametrize("name", sorted(pyclone._LAZY))
def test_a_lazy_name_is_the_object_of_its_module(name: str) -> None:
    module = importlib.import_module(f"pyclone.{pyclone._LAZY[name]}")
    assert name in pyclone.__all__
    assert getattr(pyclone, name) is getattr(module, name)
    assert _loaded_by(f"import pyclone; pyclone.{name}") >= {f"pyclone.{pyclone._LAZY[name]}"}


@pytest.mark.parametrize("name", sorted(pyclone._LAZY))
def test_a_lazy_name_resolves_first_in_a_fresh_interpreter(name: str) -> None:
    """Loaded through the package first, a lazy name is still its module's own object."""
    module = pyclone._LAZY[name]
    _loaded_by(
        f"import pyclone, pyclone.{module} as m\n"
        f"from pyclone import {name}\n"
        f"assert {name} is getattr(sys.modules['pyclone.{module}'], {name!r})"
    )


def test_probe_stays_the_function_when_its_module_is_imported_first() -> None:
    """Importing ``pyclone.probe`` binds the module on the package; the function must win."""
    _loaded_by(
        "import pyclone.probe, pyclone, types\n"
        "assert not isinstance(pyclone.probe, types.ModuleType)\n"
        "assert pyclone.probe is sys.modules['pyclone.probe'].probe\n"
    )


def test_the_first_refusal_loads_the_rule_model_and_names_the_rule() -> None:
    """The kernel refuses CLONE_SIGHAND without CLONE_VM; the hook imports the model then."""
    _loaded_by(
        "import pyclone\n"
        "from pyclone import actions\n"
        "assert 'pyclone.rules' not in sys.modules\n"
        "try:\n"
        "    pyclone.clone(actions.exit(0), pyclone.CLONE_SIGHAND)\n"
        "except OSError as exc:\n"
        "    assert exc.errno == 22, exc\n"
        "    assert str(exc).endswith('Invalid argument: CLONE_SIGHAND requires CLONE_VM'), exc\n"
        "else:\n"
        "    raise AssertionError('the kernel accepted CLONE_SIGHAND without CLONE_VM')\n"
        "assert 'pyclone.rules' in sys.modules\n"
    )


def test_a_refusal_is_still_the_oserror_where_nothing_can_be_imported_any_more() -> None:
    """A refusal may come where imports fail (no descriptor left, a uid that cannot
    read the installed package, a new root): it is the same OSError, without the rule.
    """
    _loaded_by(
        "import pyclone\n"
        "from pyclone import actions, clone\n"
        "sys.meta_path[:] = []\n"
        "sys.path_importer_cache.clear()\n"
        "try:\n"
        "    pyclone.clone(actions.exit(0), pyclone.CLONE_SIGHAND)\n"
        "except OSError as exc:\n"
        "    assert exc.errno == 22, exc\n"
        "    assert str(exc) == '[Errno 22] clone(CLONE_SIGHAND): Invalid argument', exc\n"
        "else:\n"
        "    raise AssertionError('the kernel accepted CLONE_SIGHAND without CLONE_VM')\n"
        "assert 'pyclone.rules' not in sys.modules\n"
    )


def test_a_refusal_in_a_borrowed_child_imports_nothing() -> None:
    """A child on the borrowed interpreter runs on the caller's memory: no import there."""
    _loaded_by(
        "import pyclone\n"
        "from pyclone import actions, clone, spawn_task\n"
        "def refused():\n"
        "    try:\n"
        "        clone(actions.exit(0), pyclone.CLONE_SIGHAND)\n"
        "    except OSError as exc:\n"
        "        return exc.errno, str(exc), 'pyclone.rules' in sys.modules\n"
        "got = spawn_task(refused, share='vfork').result(timeout=60)\n"
        "assert got == (22, '[Errno 22] clone(CLONE_SIGHAND): Invalid argument', False), got\n"
        "assert 'pyclone.rules' not in sys.modules\n"
        "import pyclone.rules\n"
        "got = spawn_task(refused, share='vfork').result(timeout=60)\n"
        "assert got[2] and got[1].endswith('CLONE_SIGHAND requires CLONE_VM'), got\n"
    )


def test_asyncio_loads_when_a_task_is_awaited_or_its_hints_are_read() -> None:
    """``Task`` names asyncio through a stand-in: annotations resolve, ``wait_async`` works."""
    _loaded_by(
        "import typing, pyclone\n"
        "assert 'asyncio' not in sys.modules\n"
        "hints = typing.get_type_hints(pyclone.Task)\n"
        "import asyncio\n"
        "assert asyncio.Task[None] in typing.get_args(hints['_async_wait']), hints\n"
        "task = pyclone.spawn_task(abs, (-3,))\n"
        "assert asyncio.run(asyncio.wait_for(task.wait_async(), 60)) == 0\n"
        "assert task.result(timeout=10) == 3\n"
    )


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        pyclone.no_such_name  # noqa: B018


def _cli_loads(*argv: str) -> set[str]:
    return _loaded_by(
        "import runpy\n"
        f"sys.argv = ['pyclone', *{list(argv)!r}]\n"
        "try:\n"
        "    runpy.run_module('pyclone', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
    )


def test_help_loads_no_subcommand() -> None:
    loaded = _cli_loads("--help")
    assert not loaded & NEVER_IN_THE_CLI
    assert not loaded & {"pyclone.sandbox", "pyclone.demo", "pyclone.probe"}


def test_run_help_loads_the_sandbox_and_not_the_rest() -> None:
    loaded = _cli_loads("run", "--help")
    assert "pyclone.sandbox" in loaded
    assert not loaded & NEVER_IN_THE_CLI
    assert not loaded & {"pyclone.demo", "pyclone.probe"}


def test_a_run_command_line_loads_neither_shutil_nor_dataclasses() -> None:
    """Parsing ``run``'s options and building its Sandbox: argparse's formatter would load
    shutil (with lzma and bz2) for the terminal's width, a dataclass inspect and ast."""
    loaded = _loaded_by(
        "from pyclone import cli\n"
        "from pyclone.sandbox import sandbox_from_args\n"
        "words = ['run', '--unshare-all', '--ro-bind', '/usr', '/usr', '--', 'true']\n"
        "sandbox_from_args(cli.build_parser('run', others=False).parse_args(words))\n"
    )
    assert "pyclone.sandbox._cli" in loaded
    assert not loaded & {"shutil", "lzma", "bz2"}
    if sys.version_info < (3, 14):  # 3.14's traceback loads dataclasses for _colorize
        assert not loaded & ONLY_FOR_COLORIZE


#: What neither building a ``run`` sandbox nor running its command needs: the
#: outcome of a Python child (pickle, traceback) and a timeout (subprocess).
NEVER_FOR_A_COMMAND = frozenset({"pickle", "traceback", "subprocess", "selectors"})


def test_a_run_command_line_loads_no_outcome_modules_nor_subprocess() -> None:
    loaded = _loaded_by(
        "from pyclone import cli\n"
        "from pyclone.sandbox import sandbox_from_args\n"
        "from pyclone.sandbox._run import run_command\n"
        "words = ['run', '--unshare-all', '--ro-bind', '/usr', '/usr', '--', 'true']\n"
        "sandbox_from_args(cli.build_parser('run', others=False).parse_args(words))\n"
    )
    assert "pyclone.sandbox._run" in loaded
    assert not loaded & NEVER_FOR_A_COMMAND


def test_running_a_command_in_a_sandbox_loads_no_outcome_modules_nor_subprocess() -> None:
    """The whole of ``pyclone run``, its sandbox included, in a fresh interpreter."""
    require_root("runs a sandbox with every namespace (root, or user namespaces)")
    loaded = _loaded_by(
        "from pyclone import cli\n"
        "words = ['run', '--unshare-all', '--ro-bind', '/', '/', '--proc', '/proc',\n"
        "         '--dev', '/dev', '--', '/bin/true']\n"
        "assert cli.main(words) == 0\n"
    )
    assert "pyclone.sandbox._setup" in loaded
    assert not loaded & NEVER_FOR_A_COMMAND


def test_the_help_lines_kept_in_cli_are_the_subcommands_own() -> None:
    """``pyclone --help`` reads the lines in :data:`pyclone.cli.COMMANDS`; they must not drift."""
    full = cli.build_parser()
    listed = cli.build_parser("")
    assert listed.format_help() == full.format_help()
    for command in cli.COMMANDS:
        assert cli.build_parser(command).format_help() == full.format_help()


def test_the_cli_builds_the_named_subcommand_only() -> None:
    parser = cli.build_parser("probe")
    args = parser.parse_args(["probe", "--json"])
    assert args.json is True
    assert args.prog == "pyclone probe"
    assert cli._command(["-h", "run", "--ro-bind", "/a", "/a"]) == "run"
    assert cli._command(["--help"]) == ""


@pytest.mark.parametrize(
    "words",
    [
        ["probe", "--json"],
        ["run", "--unshare-all", "--ro-bind", "/usr", "/usr", "--", "true", "-x"],
        ["explain", "thread"],
    ],
)
def test_a_line_that_starts_with_its_subcommand_parses_the_same_without_the_others(
    words: list[str],
) -> None:
    """What ``main`` builds for ``pyclone run ...``: the top level and ``run`` alone."""
    alone = cli.build_parser(words[0], others=False)
    assert _subcommands(alone) == {words[0]}
    assert _subcommands(cli.build_parser(words[0])) == set(cli.COMMANDS)
    assert vars(alone.parse_args(words)) == vars(cli.build_parser(words[0]).parse_args(words))


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    """The names the top-level parser dispatches to."""
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices)


def test_the_sandbox_package_loads_its_command_line_on_first_use() -> None:
    """A program that builds sandboxes does not pay for argparse and the option parsers."""
    loaded = _loaded_by("import pyclone.sandbox")
    assert not loaded & {"argparse", "pyclone.sandbox._cli", "pyclone.sandbox._cli_ops"}
    loaded = _loaded_by("import pyclone.sandbox as s; s.add_parser")
    assert {"argparse", "pyclone.sandbox._cli"} <= loaded
