"""The ``pyclone`` command line: one program name everywhere, the console script's exit status."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyclone import cli

from conftest import WAIT


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_usage_line_names_the_program_pyclone() -> None:
    assert cli.build_parser().format_usage().startswith("usage: pyclone ")
    commands = _subparsers()
    assert {"demo", "run", "bench", "explain", "probe"} <= set(commands)
    for name, parser in commands.items():
        assert parser.format_usage().startswith(f"usage: pyclone {name}"), name
        assert "python -m" not in parser.format_help(), name


@pytest.mark.parametrize(
    ("argv", "status", "prefix"),
    [
        (["explain", "NO_SUCH_FLAG"], 2, "pyclone explain: unknown flag"),
        (["run"], 1, "pyclone run: no COMMAND given"),  # bwrap's status
        (["run", "--distinct-exit-codes"], 2, "pyclone run: no COMMAND given"),
        (["bench", "--heap", "not-a-size"], 2, "pyclone bench: bad heap size"),
    ],
)
def test_error_messages_start_with_the_program_name(
    argv: list[str], status: int, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == status
    assert capsys.readouterr().err.startswith(prefix)


def test_python_dash_m_uses_the_same_name() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyclone", "explain", "NO_SUCH_FLAG"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 2
    assert done.stderr.startswith("pyclone explain: ")


def _console_script() -> str:
    """The installed ``pyclone`` script beside this interpreter; skip where there is none."""
    try:
        points = importlib.metadata.entry_points(group="console_scripts", name="pyclone")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        points = ()
    if not points:
        pytest.skip("pyclone is not installed (run from a checkout on PYTHONPATH)")
    script = shutil.which("pyclone", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("no pyclone script beside this interpreter")
    return script


def test_console_script_entry_point_is_cli_console() -> None:
    _console_script()
    (point,) = importlib.metadata.entry_points(group="console_scripts", name="pyclone")
    assert point.value == "pyclone.cli:console"
    assert point.load() is cli.console


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["demo"], 0),
        (["explain", "VM,SIGHAND"], 0),
        (["explain", "SIGHAND"], 1),
        (["run", "--distinct-exit-codes"], 2),
    ],
)
def test_console_script_exits_with_mains_status(argv: list[str], status: int) -> None:
    done = subprocess.run([_console_script(), *argv], capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == status, done.stderr
    if status == 2:
        assert done.stderr.startswith("pyclone run: ")


def test_help_is_as_wide_as_columns_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """The formatter finds the width as shutil would: ``$COLUMNS`` first, asked each time."""
    for columns in (60, 100):
        monkeypatch.setenv("COLUMNS", str(columns))
        text = cli.build_parser("run").format_help()
        assert max(len(line) for line in text.splitlines()) <= columns - 2
        assert text == _with_argparse_width(columns)


def _with_argparse_width(columns: int) -> str:
    """What argparse's own formatter, at the width shutil gives, makes of the same parser."""
    parser = cli.build_parser("run")

    def formatter(prog: str) -> argparse.HelpFormatter:
        return argparse.HelpFormatter(prog, width=shutil.get_terminal_size().columns - 2)

    parser.formatter_class = formatter
    return parser.format_help()


@pytest.mark.parametrize(
    ("options", "finalized"), [([], False), (["-X", "dev"], True), (["-W", "default"], True)]
)
def test_run_skips_finalization_unless_warnings_were_asked_for(
    options: list[str], finalized: bool
) -> None:
    """``python -m pyclone run`` ends with os._exit (atexit handlers do not run), but
    not under ``-X dev`` or ``-W``, whose finalization warnings someone wants to see."""
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('finalized'))\n"
        "sys.argv = ['pyclone', 'run', '--distinct-exit-codes']\n"
        "runpy.run_module('pyclone', run_name='__main__', alter_sys=True)\n"
    )
    done = subprocess.run(
        [sys.executable, *options, "-c", code],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 2, done.stderr  # no COMMAND: pyclone's usage status
    assert "no COMMAND given" in done.stderr
    assert done.stdout == ("finalized\n" if finalized else "")
