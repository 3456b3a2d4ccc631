"""A user's script with a misspelt ``share=`` preset: ``mypy --strict`` must reject it.

.ci/typecheck expects mypy to exit non-zero here, with an arg-type error on the
``share="thred"`` line; at run time the same call raises ValueError.
"""

from __future__ import annotations

import pyclone


def work() -> int:
    return 1


task = pyclone.spawn_task(work, share="thred")
