"""Heavy standard-library modules bound under their usual names but imported on first use.

``from ._lazy import asyncio`` binds a stand-in whose first attribute read
imports the real module, so a module that only needs asyncio inside a few
methods does not pay for it (with ssl and sockets) at import time, while its
annotations (``asyncio.Task[None]``) still resolve at run time and mypy sees
the real module.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

__all__ = ["asyncio"]


class _Module:
    """Stands for the module ``name``: every attribute read comes from the real module."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module = sys.modules.get(self._name) or importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


if TYPE_CHECKING:
    import asyncio as asyncio
else:
    asyncio = _Module("asyncio")
