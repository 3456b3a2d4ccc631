"""hypothesis for :mod:`pyclone.strategies`, or an ImportError that says how to install it.

pyclone itself does not depend on hypothesis; only the strategies module does,
so the install hint is given where the import fails rather than as a bare
``No module named 'hypothesis'``.
"""

from __future__ import annotations

try:
    from hypothesis import strategies as strategies
except ImportError as exc:
    raise ImportError(
        "pyclone.strategies needs hypothesis, which is not installed: "
        "pip install 'pyclone[hypothesis]'",
        name="hypothesis",
    ) from exc

__all__ = ["strategies"]
