"""The property of the property-testing how-to: spawn works, or fails as pyclone's models say.

The how-to includes this file, and tests/test_strategies_howto.py runs it.
"""

import signal

from hypothesis import given, settings

import pyclone
from pyclone import CloneFlag as F
from pyclone.strategies import CLONE3_FLAGS, clone_flags
from pyclone.testing import guard

#: CLONE_PARENT would make each task the test process's sibling, out of its reach.
POOL = [flag for flag in CLONE3_FLAGS if flag is not F.PARENT]


def spawn(flags):
    """The code under test; here it is pyclone.spawn_task itself."""
    return pyclone.spawn_task(int, flags=flags)


def check_spawn(spawn, flags):
    """spawn(flags) works, or raises what refused() and predict_errno() said."""
    reason = pyclone.refused(flags, api="spawn_task")
    # spawn_task asks for a pidfd, and passes exit signal 0 with CLONE_THREAD
    sig = 0 if flags & F.THREAD else signal.SIGCHLD
    expected = pyclone.predict_errno(flags | F.PIDFD, api="clone3", exit_signal=sig)
    try:
        task = spawn(flags)
    except pyclone.UnsupportedFlags as exc:
        assert reason is not None, f"unpredicted refusal: {exc}"
        return
    except OSError as exc:
        assert reason is None, f"predicted refusal {reason!r}, got {exc}"
        assert exc.errno == expected, f"errno {exc.errno}, predicted {expected}"
        return
    with task:
        assert task.wait(timeout=10) == 0
    assert reason is None, f"predicted refusal {reason!r}, but the task ran"
    assert expected == 0, f"predicted errno {expected}, but the task ran"


@settings(max_examples=100, deadline=None)
@given(flags=clone_flags("clone3", flags=POOL))
def test_spawn_works_or_fails_as_predicted(flags):
    with guard():
        check_spawn(spawn, flags)
