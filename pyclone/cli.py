"""The ``python -m pyclone`` command line: one subcommand per module."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import bench, demo, sandbox
from .probe import add_parser as _add_probe
from .rules import add_parser as _add_explain

# Each entry adds its subparsers and sets ``func`` (args -> exit status).
_COMMANDS = (demo.add_parser, sandbox.add_parser, bench.add_parser, _add_explain, _add_probe)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``python -m pyclone``."""
    parser = argparse.ArgumentParser(
        prog="python -m pyclone",
        description="Create Linux tasks with clone(2)/clone3(2): processes and threads "
        "are both tasks, the flags decide what they share.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status
