"""``.. pyclone-cli::``: the help of the ``pyclone`` command and each subcommand."""

from __future__ import annotations

import os
from collections.abc import Iterator

from docutils import nodes

from ._common import _Dynamic


class CliHelp(_Dynamic):
    """``.. pyclone-cli::``: the help text of ``pyclone`` and each command."""

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
        yield "pyclone", parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"pyclone {name}", sub.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
