"""The ``pyclone probe`` subcommand: what this kernel offers, as text or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .probe import probe

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    found = probe()
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        width = max(len(key) for key in found)
        for key, value in found.items():
            shown = "unknown" if value is None else value
            print(f"{key.ljust(width)}  {shown}")
    return 0


def add_parser(sub: Any) -> None:
    """Register the ``probe`` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "probe",
        help="show which clone features this kernel offers",
        description="Probe clone3, CLONE_PIDFD|CLONE_THREAD, CLONE_NEWTIME in clone3, "
        "CLONE_INTO_CGROUP, set_tid, user namespaces, kcmp and pidfd info, "
        "without creating any task.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_run)
