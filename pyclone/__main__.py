"""``python -m pyclone``: see :mod:`pyclone.cli`."""

import sys

from .cli import main

sys.exit(main())
