"""Help formatters for the command line that know the terminal's width without :mod:`shutil`.

argparse's formatter asks ``shutil.get_terminal_size`` for the width, and
argparse makes a formatter for every option it adds (to check its
metavar), so a bare ``pyclone run`` would import shutil, with lzma, bz2
and zlib, to print nothing.  The width is found the way shutil finds it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def terminal_columns() -> int:
    """``$COLUMNS`` if it is a positive number, else the width of stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's default formatter, given argparse's own default width (the terminal's,
    less 2) unless a width is passed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) < 4 and "width" not in kwargs:
            kwargs["width"] = terminal_columns() - 2
        super().__init__(*args, **kwargs)


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The same, keeping the description's own line breaks."""
