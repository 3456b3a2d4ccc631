"""The bench methods that run whole programs: Python start-up, ``pyclone run``, ``bwrap``, Sandbox.

Start-up and the two sandbox command lines are timed as processes: each
command is started with :func:`os.posix_spawn` (stdout and stderr on
``/dev/null``) and timed from the spawn to its reap, the pairs taking turns
one run at a time as hyperfine's alternating mode does.  ``Sandbox.run`` and
``subprocess.run(["bwrap", ...])`` are timed in this process.  Every run must
exit 0: a failing command is reported as failed, not timed.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..sandbox import Sandbox, sandbox_from_args
from ..sandbox import add_parser as _add_run_parser

TRUE = "/bin/true"

#: The sandbox both ``pyclone run`` and ``bwrap`` are given: bwrap's own example of a
#: minimal root (``/usr`` read-only, the usual symlinks, fresh /proc, /dev and /tmp).
SANDBOX_LINE: tuple[str, ...] = (
    "--unshare-all",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/bin",
    "/bin",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
)

_DEVNULL_OUT = [
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
]


# -- the command lines ------------------------------------------------------------


def python_pass() -> list[str]:
    """``python -c pass``: the interpreter's own start-up."""
    return [sys.executable, "-c", "pass"]


def python_import() -> list[str]:
    """``python -c "import pyclone"``."""
    return [sys.executable, "-c", "import pyclone"]


def pyclone_run_cli() -> list[str]:
    """``python -m pyclone run <SANDBOX_LINE> -- /bin/true``."""
    return [sys.executable, "-m", "pyclone", "run", *SANDBOX_LINE, "--", TRUE]


def bwrap_cli() -> list[str]:
    """``bwrap <SANDBOX_LINE> /bin/true``, bwrap found on ``PATH``."""
    return [_bwrap_path() or "bwrap", *SANDBOX_LINE, TRUE]


def _bwrap_path() -> str | None:
    return shutil.which("bwrap")


# -- feature detection: one trial run each ---------------------------------------------


def _trial(argv: Sequence[str]) -> str | None:
    """None when ``argv`` runs and exits 0, else why not (the end of its stderr)."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{argv[0]} failed: {exc}"
    if done.returncode == 0:
        return None
    tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
    return f"{os.path.basename(argv[0])} exited {done.returncode}: {' '.join(tail)}".strip(": ")


def need_bwrap() -> str | None:
    """None when ``bwrap`` is installed and can build the sandbox here, else why not."""
    if _bwrap_path() is None:
        return "bwrap is not installed (not found on PATH)"
    return _trial(bwrap_cli())


def need_pyclone_run() -> str | None:
    """None when ``python -m pyclone run`` can build the sandbox here, else why not."""
    return _trial(pyclone_run_cli())


def need_sandbox() -> str | None:
    """None when ``Sandbox(...).run`` of the sandbox line succeeds in this process."""
    try:
        run_sandbox()
    except Exception as exc:
        return f"Sandbox.run failed: {type(exc).__name__}: {exc}"
    return None


# -- the runs: a process started and reaped, or one in-process call ----------------------


def _check(code: int) -> int:
    if code != 0:
        raise RuntimeError(f"the command exited with status {code}")
    return code


def process_starter(argv_of: Callable[[], list[str]]) -> Callable[[], Callable[[], object]]:
    """A starter that posix_spawns the command and whose finish reaps it (and checks it)."""
    argv = argv_of()
    env = dict(os.environ)

    def start() -> Callable[[], object]:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=_DEVNULL_OUT)
        return lambda: _check(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))

    return start


@functools.cache
def _sandbox() -> Sandbox:
    """The Sandbox ``pyclone run <SANDBOX_LINE>`` describes, parsed by its own parser."""
    parser = argparse.ArgumentParser(prog="pyclone")
    _add_run_parser(parser.add_subparsers())
    args: Any = parser.parse_args(["run", *SANDBOX_LINE, "--", TRUE])
    return sandbox_from_args(args)


def run_sandbox() -> None:
    """``Sandbox(<SANDBOX_LINE>).run(["/bin/true"])``, checked."""
    _check(_sandbox().run([TRUE]).returncode)


def run_bwrap_subprocess() -> None:
    """``subprocess.run(["bwrap", <SANDBOX_LINE>, "/bin/true"])``, checked."""
    _check(subprocess.run(["bwrap", *SANDBOX_LINE, TRUE], check=False).returncode)
