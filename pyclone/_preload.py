"""What a Python child may import after the clone, imported in its creator before it.

A fork-like child pickles its outcome and, if its target raised, formats the
traceback (as CPython 3.13's ``PyErr_Print`` does with :mod:`traceback`); a
child on the borrowed interpreter formats tracebacks too.  Importing those
modules in the child would cost it milliseconds on every launch, and an
import there can hang on a lock that another of the creator's threads held
at the clone, or (CLONE_VM) run on the suspended creator's own state.  So
every launch of a Python callable calls :func:`load` first; only the first
call imports anything, so a program that never launches one (``pyclone
run``, whose child runs pyclone's own setup and execs) never pays for them.
"""

from __future__ import annotations

_loaded = False


def load() -> None:
    """Import the modules a child may need (once per process; then a flag test)."""
    global _loaded
    if _loaded:
        return
    import pickle  # noqa: F401
    import traceback  # noqa: F401

    _loaded = True
