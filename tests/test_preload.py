"""The modules a Python child may need are loaded in its creator, before the clone, once.

Each check runs in a fresh ``-I -S`` interpreter, where neither pickle nor
traceback is loaded at start-up, and reads ``sys.modules`` inside the child
before its target has done anything: what it finds there was imported by
the creator.
"""

from __future__ import annotations

import pytest

from pyclone import _transport

from conftest import WAIT, fresh_python

#: The statement's last line prints what the test compares.
_PRELUDE = """
import pyclone
MODULES = ("pickle", "traceback")
def loaded():
    return tuple(name in sys.modules for name in MODULES)
"""


def _run(statement: str) -> str:
    return fresh_python(_PRELUDE + statement).strip()


def test_the_core_alone_loads_neither() -> None:
    assert _run("pyclone.spawn_task; print(loaded())") == "(False, False)"


@pytest.mark.parametrize("share", ["process", "vfork"])
def test_a_callable_child_finds_them_loaded_before_its_target_runs(share: str) -> None:
    out = _run(
        f"task = pyclone.spawn_task(loaded, share={share!r})\n"
        f"print(task.result({WAIT}), loaded())\n"
    )
    assert out == "(True, True) (True, True)"


def test_a_raw_clone_child_finds_them_loaded_too() -> None:
    """``pyclone.clone(fn)``: the child's exit status says what it found (3: not loaded)."""
    out = _run(
        "import os\n"
        "pid = pyclone.clone(lambda: 0 if all(loaded()) else 3, 17)  # SIGCHLD\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    assert out == "0"


def test_an_action_needs_neither() -> None:
    """An action runs in C: launching one (even as a process) imports nothing for it."""
    out = _run(
        "from pyclone import actions\n"
        f"assert pyclone.spawn_task(actions.exit(0)).wait({WAIT}) == 0\n"
        "print(loaded())\n"
    )
    assert out == "(False, False)"


def test_the_frame_of_a_none_result_is_what_pickle_makes() -> None:
    """The frame kept written out (so that pickle loads on first use) is a valid one."""
    import pickle

    frame = _transport._OK_NONE
    assert _transport.frame_complete(bytearray(frame))
    assert _transport.FRAME.unpack_from(frame)[0] == len(frame) - _transport.FRAME.size
    assert pickle.loads(frame[_transport.FRAME.size :]) == ("ok", None)
    if pickle.HIGHEST_PROTOCOL == 5:
        assert frame == _transport._framed(("ok", None))


def test_a_child_that_cannot_load_traceback_still_reports_its_error() -> None:
    """A sandbox's command child does not preload it, and its new root may lack the stdlib."""
    out = _run(
        "from pyclone import _transport\n"
        "sys.modules['traceback'] = None  # what a failed import leaves: ImportError\n"
        "try:\n"
        "    raise KeyError('lost')\n"
        "except KeyError as exc:\n"
        "    text = _transport._format_exc(exc)\n"
        "print(repr(text))\n"
    )
    assert out == repr("KeyError: 'lost'\n(no traceback: the traceback module cannot load)\n")
