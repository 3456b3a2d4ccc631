"""pyclone.strategies: what they draw, that it is what the model says, and how it shrinks."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import pyclone
import pyclone.strategies
from pyclone import CloneFlag as F
from pyclone import predict_errno
from pyclone.flags import SINGLE_FLAGS
from pyclone.spec import resolve_flags
from pyclone.strategies import (
    CLONE3_FLAGS,
    CLONE_FLAGS,
    UNBLOCKABLE_EXIT_SIGNALS,
    CloneCall,
    clone_calls,
    clone_flags,
    exit_signals,
    namespace_specs,
    share_specs,
    spawn_specs,
)

FAST = settings(max_examples=60, derandomize=True, database=None, deadline=None)
T = TypeVar("T")

#: For find(): its own default of 2000 examples, but no explain phase.  Explaining
#: re-runs the test on variations of the shrunk example, and find() returns the
#: value of the last run whose condition held, so a condition that most values
#: meet (``lambda f: True``) got back one of those variations, not the shrunk
#: example.  No database either: find()'s key is the condition's source, the
#: same for every ``lambda f: True`` here.
MINIMAL = settings(
    max_examples=2000, database=None, derandomize=True, phases=[Phase.generate, Phase.shrink]
)
APIS = ["clone", "clone3"]
PRIVILEGES = [True, False]


def minimal(strategy: st.SearchStrategy[T], condition: Callable[[T], bool]) -> T:
    """The example ``strategy`` shrinks to among those meeting ``condition``."""
    return find(strategy, condition, settings=MINIMAL)


def test_not_imported_by_pyclone() -> None:
    code = (
        "import sys, pyclone, pyclone.probe, pyclone.cli; "
        "sys.exit('hypothesis' in sys.modules or 'pyclone.strategies' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_pools() -> None:
    assert all(not int(m) & 0xFF and not int(m) >> 32 for m in CLONE_FLAGS)
    assert len(CLONE_FLAGS) == 24  # every bit of the legacy word above the exit signal
    assert F.NEWTIME in CLONE3_FLAGS and F.CLEAR_SIGHAND in CLONE3_FLAGS
    assert F.INTO_CGROUP not in CLONE3_FLAGS  # its outcome depends on the descriptor


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("privileged", PRIVILEGES)
def test_valid_means_accepted(api: str, privileged: bool) -> None:
    @FAST
    @given(clone_flags(api, valid=True, privileged=privileged))
    def accepted(flags: F) -> None:
        assert isinstance(flags, F)
        assert predict_errno(flags, api=api, privileged=privileged) == 0

    accepted()


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("privileged", PRIVILEGES)
def test_invalid_means_rejected(api: str, privileged: bool) -> None:
    @FAST
    @given(clone_flags(api, valid=False, privileged=privileged))
    def rejected(flags: F) -> None:
        assert predict_errno(flags, api=api, privileged=privileged) != 0

    rejected()


@FAST
@given(clone_flags("clone"))
def test_clone_flags_carry_no_exit_signal(flags: F) -> None:
    assert int(flags) & 0xFF == 0 and int(flags) >> 32 == 0


@pytest.mark.parametrize("api", APIS)
def test_every_accepted_set_can_be_drawn(api: str) -> None:
    """Accepted sets are drawn as themselves (the repair leaves them alone)."""

    @FAST
    @given(clone_flags(api), st.sampled_from([0, 17]))
    def fixed_point(flags: F, sig: int) -> None:
        if predict_errno(flags, api=api, exit_signal=sig, privileged=False) == 0:
            caller = pyclone.rules.CallerState.unprivileged()
            assert pyclone.strategies._repair(int(flags), api, sig, caller) == flags

    fixed_point()


def test_shrinks_to_minimal_flag_sets() -> None:
    # a shrunk rejected set is minimal: without any one of its flags it is accepted
    for api in APIS:
        for privileged in PRIVILEGES:
            found = minimal(clone_flags(api, valid=False, privileged=privileged), lambda f: True)
            assert predict_errno(found, api=api, privileged=privileged) != 0
            for bit in SINGLE_FLAGS:
                if found & bit:
                    assert predict_errno(found & ~bit, api=api, privileged=privileged) == 0
    assert minimal(clone_flags(), lambda f: bool(f & F.NEWNS and f & F.FS)) == F.NEWNS | F.FS
    thread = minimal(
        clone_flags("clone3", valid=True, exit_signal=0, privileged=True),
        lambda f: bool(f & F.THREAD),
    )
    assert thread == F.THREAD | F.SIGHAND | F.VM
    unprivileged = minimal(clone_flags(valid=True, privileged=False), lambda f: bool(f & F.NEWNET))
    assert unprivileged == F.NEWNET | F.NEWUSER


def test_no_valid_set_with_a_bad_clone3_exit_signal() -> None:
    with pytest.raises(ValueError, match="no flag set"):
        clone_flags("clone3", valid=True, exit_signal=65)
    with pytest.raises(ValueError, match="api"):
        clone_flags("fork")
    with pytest.raises(ValueError, match="low byte"):
        clone_flags("clone", flags=[F.NEWTIME])


@pytest.mark.parametrize("api", APIS)
def test_exit_signals(api: str) -> None:
    top = 255 if api == "clone" else 64

    @FAST
    @given(exit_signals(api, valid=True, blockable=True))
    def valid(sig: int) -> None:
        assert 0 <= sig <= top and sig not in UNBLOCKABLE_EXIT_SIGNALS

    valid()
    assert minimal(exit_signals(api), lambda s: True) == signal.SIGCHLD


def test_invalid_exit_signals() -> None:
    @FAST
    @given(exit_signals("clone3", valid=False))
    def invalid(sig: int) -> None:
        assert predict_errno(0, api="clone3", exit_signal=sig, privileged=True) != 0

    invalid()
    with pytest.raises(ValueError, match="every exit signal"):
        exit_signals("clone", valid=False)


@FAST
@given(clone_calls(valid=True, privileged=True))
def test_clone_calls(call: CloneCall) -> None:
    assert call.api in APIS
    if call.api == "clone":
        assert call.word == int(call.flags) | call.exit_signal
        assert predict_errno(call.word, privileged=True) == 0
    else:
        assert (
            predict_errno(call.flags, api="clone3", exit_signal=call.exit_signal, privileged=True)
            == 0
        )


@FAST
@given(share_specs())
def test_share_specs_keep_the_closure(share: frozenset[str]) -> None:
    assert "parent" not in share
    if "thread" in share:
        assert "sighand" in share
    if "sighand" in share:
        assert "vm" in share


@FAST
@given(share_specs(forklike=True))
def test_forklike_share_specs(share: frozenset[str]) -> None:
    assert not share & {"vm", "sighand", "thread", "parent"}


@FAST
@given(namespace_specs(privileged=False))
def test_unprivileged_namespace_specs_include_user(new: frozenset[str]) -> None:
    assert not new or "user" in new


@pytest.mark.parametrize("privileged", PRIVILEGES)
def test_spawn_specs_are_accepted(privileged: bool) -> None:
    @FAST
    @given(spawn_specs(privileged=privileged))
    def accepted(spec: tuple[frozenset[str], frozenset[str]]) -> None:
        share, new = spec
        flags = resolve_flags(share or "process", new or None)
        sig = 0 if flags & (F.THREAD | F.PARENT) else signal.SIGCHLD
        assert predict_errno(flags, api="clone3", exit_signal=sig, privileged=privileged) == 0

    accepted()


def test_namespace_specs_shrink_to_nothing() -> None:
    assert minimal(namespace_specs(), lambda s: True) == frozenset()
    assert minimal(share_specs(), lambda s: True) == frozenset()


# What a user writes in their own tests:
@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(flags=pyclone.strategies.clone_flags(valid=False), sig=st.sampled_from([0, 17]))
def test_user_style_rejected_sets_raise_oserror(flags: F, sig: int) -> None:
    with pytest.raises((OSError, pyclone.UnsupportedFlags)):
        pyclone.clone(lambda: 0, flags | sig)
