"""The ``pyclone`` pytest plugin: the ``clone_guard`` fixture (:func:`pyclone.testing.guard`).

Registered under the ``pytest11`` entry point, so installing pyclone makes
the fixture available; ``-p no:pyclone`` turns it off.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import Guard, guard


@pytest.fixture
def clone_guard() -> Iterator[Guard]:
    """Run the test as a subreaper with every signal blocked; fail it if the process changed.

    Yields the :class:`pyclone.testing.Guard` (its ``before`` snapshot; after
    the test, the signals drained and strays reaped).
    """
    with guard() as state:
        yield state
