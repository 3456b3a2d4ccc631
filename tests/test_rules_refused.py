"""pyclone.refused: it predicts exactly the UnsupportedFlags the real calls raise."""

from __future__ import annotations

import os
import select
import signal
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import pyclone
from pyclone import CloneFlag as F
from pyclone import actions, refused
from pyclone.clone3_api import CloneArgumentError, check_clone3_args
from pyclone.rules._refused import _clone3_rejects_first
from pyclone.strategies import CLONE3_FLAGS
from pyclone.testing import guard

from conftest import WAIT, run_forked

APIS = ("clone", "clone3", "spawn_task")
TARGETS = ("callable", "action")
SWEEP = settings(
    max_examples=400,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

#: Every clone3 flag pyclone draws, each in a set one time in three: enough
#: for the two- and three-flag conditions pyclone refuses to come up often.
FLAG_SETS = st.lists(st.sampled_from(CLONE3_FLAGS), max_size=8).map(
    lambda chosen: F(sum(set(map(int, chosen))))
)


def _wait(pid: int) -> None:
    fd = os.pidfd_open(pid)
    try:
        assert select.select([fd], [], [], WAIT)[0], f"task {pid} did not end"
        os.waitid(os.P_PIDFD, fd, os.WEXITED | pyclone._pyclone.WALL)
    finally:
        os.close(fd)


def _attempt(api: str, target: str, flags: F, sig: int) -> tuple[str, str]:
    """Make the real call; return ("ok", "") or the exception's kind and message."""
    fn = actions.exit(0) if target == "action" else (lambda: 0)
    try:
        if api == "spawn_task":
            with pyclone.spawn_task(fn, flags=flags, exit_signal=sig) as task:
                task.wait(WAIT)
            return "ok", ""
        if api == "clone":
            word = int(flags) & ~0xFF | sig
            pid = pyclone.clone(fn, word)
        else:
            pid, _ = pyclone.clone3(fn, flags, exit_signal=sig)
    except pyclone.UnsupportedFlags as exc:
        return "unsupported", str(exc)
    except OSError as exc:  # the kernel's refusal, or clone3's early EINVAL
        return "oserror", str(exc)
    if not flags & (F.THREAD | F.PARENT):  # a thread is not waited for; a sibling is not ours
        _wait(pid)
    return "ok", ""


def _sweep() -> dict[str, int]:
    seen: Counter[str] = Counter()

    @SWEEP
    @seed(20261201)
    @given(
        api=st.sampled_from(APIS),
        target=st.sampled_from(TARGETS),
        flags=FLAG_SETS,
        high=st.booleans(),
        sig=st.sampled_from([int(signal.SIGCHLD), 0]),
    )
    def agree(api: str, target: str, flags: F, high: bool, sig: int) -> None:
        if api == "clone":
            # the legacy word: no exit-signal byte from the flags, sometimes a high bit
            flags = F(int(flags) & ~0xFF | (int(F.CLEAR_SIGHAND) if high else 0))
        word = int(flags) & ~0xFF | sig if api == "clone" else int(flags)
        reason = refused(word, api=api, exit_signal=None if api == "clone" else sig, target=target)
        kind, message = _attempt(api, target, flags, sig)
        if kind == "unsupported":
            assert reason is not None, f"pyclone refused {flags!r} but refused() said no: {message}"
            assert message.startswith(reason), (reason, message)
        else:
            assert reason is None, f"refused() said {reason!r} but the call gave {kind} {message}"
        seen[kind] += 1

    with guard(strays="reap"):
        agree()
    return dict(seen)


def test_refused_agrees_with_the_real_calls() -> None:
    # In a forked worker under this process's guard: CLONE_PARENT tasks of the
    # worker become this process's children, which the guard reaps.
    with guard(strays="reap"):
        seen = run_forked(_sweep, timeout=300)
    assert isinstance(seen, dict)
    # every outcome came up often: the sweep tested both directions of the claim
    assert all(seen.get(kind, 0) >= 40 for kind in ("ok", "unsupported", "oserror")), seen


@settings(max_examples=500, database=None, deadline=None)
@seed(1)
@given(flags=FLAG_SETS, sig=st.sampled_from([0, 17, 65, 300]))
def test_the_early_clone3_rules_match_clone3_api(flags: F, sig: int) -> None:
    try:
        check_clone3_args(int(flags), sig)
    except CloneArgumentError:
        assert _clone3_rejects_first(int(flags), sig)
    else:
        assert not _clone3_rejects_first(int(flags), sig)


def test_examples() -> None:
    assert refused(F.SETTLS) == "CLONE_SETTLS is refused"
    assert refused(F.THREAD | F.SIGHAND | F.VM) == "CLONE_THREAD with a Python callable is refused"
    assert refused(F.THREAD | F.SIGHAND | F.VM, target="action") is None
    assert refused(F.VM).startswith("CLONE_VM without CLONE_VFORK")  # type: ignore[union-attr]
    assert refused(F.VM | F.VFORK) is None
    assert refused(F.VM | F.VFORK | F.NEWTIME, api="clone3") is not None
    assert refused(int(F.CLEAR_SIGHAND)) is not None  # clone(2) would drop the bit
    # clone3 finds the kernel's own EINVAL first: not a pyclone refusal
    assert refused(F.THREAD | F.SETTLS, api="clone3", exit_signal=0) is None
    assert refused(F.THREAD | F.SETTLS, api="clone") is not None
    # spawn_task passes exit signal 0 with CLONE_THREAD
    assert refused(F.THREAD | F.SIGHAND | F.VM, api="spawn_task") is not None
    with pytest.raises(ValueError, match="api"):
        refused(0, api="fork")
    with pytest.raises(ValueError, match="target"):
        refused(0, target="thread")
    with pytest.raises(TypeError):
        refused(True)
