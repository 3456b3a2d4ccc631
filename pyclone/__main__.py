"""``python -m pyclone``: see :mod:`pyclone.cli`."""

from .cli import console

console()
