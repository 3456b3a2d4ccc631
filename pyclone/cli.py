"""The ``pyclone`` command line (also ``python -m pyclone``): one subcommand per module.

Only the module of the subcommand that runs is imported (``pyclone run``
loads the sandbox, not the benchmark); the others are listed by name and
help line, kept here so that ``pyclone --help`` imports none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ._helpformat import HelpFormatter

#: Each subcommand and its help line, as its module's ``add_parser`` words it
#: (``tests/test_imports.py`` checks that they agree).
COMMANDS: dict[str, str] = {
    "demo": "show one task created with two flag sets (the clone-vm sample)",
    "run": "run a command in a sandbox (bubblewrap-style options)",
    "bench": "measure task launch cost (and, with 'switch', context switches)",
    "explain": "say what a flag set does and whether the kernel accepts it",
    "probe": "show which clone features this kernel offers",
}

#: The one program name in every usage line and message, whichever way it was started
#: (the ``pyclone`` console script or ``python -m pyclone``).
PROG = "pyclone"


def _add_parser(command: str) -> Callable[[Any], None]:
    """The ``add_parser`` that registers ``command``, importing its module now."""
    add: Callable[[Any], None]
    if command == "demo":
        from .demo import add_parser as add  # lazy: only the chosen subcommand's module
    elif command == "run":
        from .sandbox import add_parser as add  # lazy: only the chosen subcommand's module
    elif command == "bench":
        from .bench import add_parser as add  # lazy: only the chosen subcommand's module
    elif command == "explain":
        from ._cli_explain import add_parser as add  # lazy: only the chosen subcommand's module
    else:
        from ._cli_probe import add_parser as add  # lazy: only the chosen subcommand's module
    return add


def build_parser(only: str | None = None, *, others: bool = True) -> argparse.ArgumentParser:
    """The argument parser for ``pyclone``.

    Every subcommand's namespace carries ``prog`` (``"pyclone run"`` and so on),
    the prefix its handler puts on an error message.  With ``only``, just that
    subcommand is built in full (its module imported); the others have their
    name and help line, which is all ``pyclone --help`` shows of them, or are
    left out with ``others=False`` (for a command line that starts with
    ``only``'s name, which the top level then only dispatches).
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Create Linux tasks with clone(2)/clone3(2): processes and threads "
        "are both tasks, the flags decide what they share.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, help_line in COMMANDS.items():
        if only is None or command == only:
            _add_parser(command)(sub)
        elif others:
            sub.add_parser(command, help=help_line, add_help=False)
    for subparser in sub.choices.values():
        subparser.set_defaults(prog=subparser.prog)
    return parser


def _command(argv: Sequence[str]) -> str:
    """The subcommand named in ``argv`` (the first word that is not an option), or ``""``.

    The top-level parser has no option that takes a value, so that word is
    the subcommand if there is one.
    """
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    In-process callers get the status; the console script and ``python -m
    pyclone`` go through :func:`console`.
    """
    words = sys.argv[1:] if argv is None else list(argv)
    command = _command(words)
    # "pyclone run ...": no top-level option comes first, so the top level only
    # hands the rest to run's parser, and the other subcommands need not be built
    # (about 1 ms of the 2.6 ms a warm build takes here).
    alone = bool(words) and words[0] == command and command in COMMANDS
    args = build_parser(command, others=not alone).parse_args(words)
    status: int = args.func(args)
    return status


def console() -> NoReturn:
    """The ``pyclone`` program (console script and ``python -m pyclone``): run :func:`main`, exit.

    After ``run`` the process ends at once, once its output is flushed,
    without the interpreter's finalization.  The sandbox has ended and
    ``run`` leaves nothing behind for a finalizer (its cgroup, if any, is
    removed when the command ends); but the clone made every page of this
    interpreter copy-on-write, so the collections and module teardown of a
    normal exit would fault in page after page: about 12 ms here, more
    than a tenth of the whole command.  With ``-X dev`` or warning options
    (``-W``, ``PYTHONWARNINGS``) the exit is the normal one, so that the
    warnings of finalization (an unclosed file's ResourceWarning) still
    reach whoever asked for them.
    """
    status = main()
    if _command(sys.argv[1:]) != "run" or sys.flags.dev_mode or sys.warnoptions:
        sys.exit(status)
    # as the interpreter's own exit: 120 if stdout cannot be flushed, stderr's failure ignored
    for stream, failed in ((sys.stdout, 120), (sys.stderr, status)):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                status = failed
    os._exit(status)
