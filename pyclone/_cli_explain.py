"""The ``pyclone explain`` subcommand: a flag set in words, and its verdict."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from .rules import explain, failing_rule, parse_flags
from .rules._parse import _parse_signal
from .rules._request import _APIS, _CSIGNAL

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    try:
        flags, named_signal = parse_flags(" ".join(args.flags))
        exit_signal = named_signal
        if args.exit_signal is not None:
            exit_signal = _parse_signal(args.exit_signal)
        if args.api == "clone" and exit_signal is None:
            exit_signal = (flags & _CSIGNAL) or int(signal.SIGCHLD)
        privileged: bool | None = {"auto": None, "root": True, "user": False}[args.caller]
        text = explain(flags, api=args.api, exit_signal=exit_signal, privileged=privileged)
        rule = failing_rule(flags, api=args.api, exit_signal=exit_signal, privileged=privileged)
    except (ValueError, TypeError) as exc:
        print(f"{args.prog}: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0 if rule is None else 1


def add_parser(sub: Any) -> None:
    """Register the ``explain`` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "explain",
        help="say what a flag set does and whether the kernel accepts it",
        description="Explain a clone flag set: what each flag shares or creates, and "
        "the kernel rule that rejects it, if any.  Exit status 0 if the kernel would "
        "accept it, 1 if not.",
    )
    parser.add_argument(
        "flags",
        nargs="+",
        help="flag names with or without CLONE_ (VM,SIGHAND or CLONE_VM|CLONE_FS), "
        "or a number; a signal name sets the exit signal",
    )
    parser.add_argument("--api", choices=_APIS, default="clone", help="default: clone")
    parser.add_argument("--exit-signal", help="exit signal, a number or a name (default: SIGCHLD)")
    parser.add_argument(
        "--caller",
        choices=("auto", "root", "user"),
        default="auto",
        help="whose privileges: this process (auto), root with every capability, "
        "or an unprivileged user",
    )
    parser.set_defaults(func=_run)
