"""``pyclone run --seccomp FD`` and ``--add-seccomp-fd FD``: bwrap's seccomp options.

Each reads a classic-BPF program (a ``struct sock_filter`` array) from FD to
its end and closes FD, while the command line is parsed, and refuses it with
bwrap's messages and exit status 1.  ``--seccomp`` gives the one program (a
later one replaces it, with bwrap's warning); ``--add-seccomp-fd`` adds one
more each time, loaded in command-line order; the two cannot be combined.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._cli_errors import LOG_WARNING, diagnostic, die
from ._hold import read_to_end
from ._seccomp import INSTRUCTION, check_program


def add_options(group: Any) -> None:
    """Add the options to the ``run`` parser (in ``group``)."""
    group.add_argument(
        "--seccomp",
        action=_Seccomp,
        metavar="FD",
        help="load and use the seccomp program (classic BPF) read from FD",
    )
    group.add_argument(
        "--add-seccomp-fd",
        action=_AddSeccomp,
        default=[],
        metavar="FD",
        help="also load the seccomp program read from FD (repeatable, in order)",
    )


def sandbox_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Sandbox` arguments these options give.

    An empty or oversized program passes bwrap's parsing and fails when the
    kernel loads it (exit status 1); here it is refused before the sandbox
    starts, with the same status.
    """
    programs = [args.seccomp] if args.seccomp is not None else list(args.add_seccomp_fd)
    for program in programs:
        try:
            check_program(program, "the program")
        except ValueError as exc:
            raise SystemExit(f"{args.prog}: Invalid seccomp data, {exc}") from None
    return {"seccomp_programs": programs}


class _Seccomp(argparse.Action):
    """``--seccomp FD``: the program of FD; the last one given wins."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, "add_seccomp_fd", None):
            die(parser, "--seccomp cannot be combined with --add-seccomp-fd")
        if getattr(namespace, self.dest, None) is not None:
            prefix = getattr(parser, "level_prefix", False)
            text = "Only the last --seccomp option will take effect"
            line = diagnostic(parser.prog, text, level_prefix=prefix, level=LOG_WARNING)
            print(line, file=sys.stderr)
        setattr(namespace, self.dest, _read_program(parser, str(values)))


class _AddSeccomp(argparse.Action):
    """``--add-seccomp-fd FD``: one more program, after those given before it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, "seccomp", None) is not None:
            die(parser, "--add-seccomp-fd cannot be combined with --seccomp")
        programs = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, [*programs, _read_program(parser, str(values))])


def _read_program(parser: argparse.ArgumentParser, text: str) -> bytes:
    """The program descriptor ``text`` holds, read to its end; the descriptor is closed."""
    if not (text.isascii() and text.isdigit()):
        die(parser, f"Invalid fd: {text}")
    fd = int(text)
    try:
        data = read_to_end(fd)
        os.close(fd)
    except OSError as exc:
        die(parser, f"Can't read seccomp data: {exc.strerror}")
    if len(data) % INSTRUCTION:
        die(parser, f"Invalid seccomp data, must be multiple of {INSTRUCTION}")
    return data
