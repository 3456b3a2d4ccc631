"""pyclone.strategies: failing examples print as readable Python and shrink to the fewest names."""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import TypeVar

import pytest
from hypothesis import Phase, find, given, seed, settings
from hypothesis.strategies import SearchStrategy
from hypothesis.vendor.pretty import pretty

import pyclone
from pyclone import CloneFlag as F
from pyclone.strategies import (
    CLONE3_FLAGS,
    clone_flags,
    namespace_specs,
    share_specs,
    spawn_specs,
)

T = TypeVar("T")
SEEDS = range(10)
QUIET = settings(database=None, deadline=None)
#: For find(): no explain phase (it only slows a search that needs no report).
FIND = settings(database=None, max_examples=2000, phases=[Phase.generate, Phase.shrink])


def _failure_report(test: object) -> str:
    with pytest.raises(AssertionError) as info:
        test()  # type: ignore[operator]
    return "\n".join(getattr(info.value, "__notes__", []))


def test_a_failing_flag_set_prints_as_python() -> None:
    @QUIET
    @seed(0)
    @given(flags=clone_flags())
    def planted(flags: F) -> None:
        assert not (flags & F.NEWNS and flags & F.FS)

    report = _failure_report(planted)
    assert "flags=CloneFlag.FS | CloneFlag.NEWNS," in report
    assert "lambda" not in report and "zip(" not in report and "<" not in report


def test_a_failing_spawn_spec_prints_the_sets() -> None:
    @QUIET
    @seed(0)
    @given(spec=spawn_specs(privileged=True))
    def planted(spec: tuple[frozenset[str], frozenset[str]]) -> None:
        assert "pid" not in spec[1]

    assert "spec=(frozenset(), frozenset({'pid'}))," in _failure_report(planted)


def test_flag_sets_print_so_that_eval_rebuilds_them() -> None:
    for value in (F(0), F.VM, F.FS | F.NEWNS | F.CLEAR_SIGHAND, F(1 << 40) | F.VM):
        text = pretty(value)
        assert eval(text, {"CloneFlag": F}) == value, text
    assert pretty(F(0)) == "CloneFlag(0)"
    assert pretty(F.VM | F.FS) == "CloneFlag.VM | CloneFlag.FS"


def _find(strategy: SearchStrategy[T], condition: Callable[[T], object], rng: int) -> T:
    return find(strategy, condition, settings=FIND, random=Random(rng))


@pytest.mark.parametrize("rng", SEEDS)
def test_spawn_specs_shrink_to_one_namespace(rng: int) -> None:
    specs = spawn_specs(privileged=True)
    assert _find(specs, lambda spec: "pid" in spec[1], rng) == (frozenset(), {"pid"})
    both = _find(specs, lambda spec: "files" in spec[0] and "net" in spec[1], rng)
    assert both == ({"files"}, {"net"})


@pytest.mark.parametrize("rng", SEEDS)
def test_name_sets_shrink_to_what_the_condition_needs(rng: int) -> None:
    assert _find(namespace_specs(privileged=True), lambda s: "pid" in s, rng) == {"pid"}
    assert _find(namespace_specs(privileged=False), lambda s: "pid" in s, rng) == {"pid", "user"}
    assert _find(share_specs(), lambda s: "sighand" in s, rng) == {"sighand", "vm"}


@pytest.mark.parametrize("rng", range(3))
def test_flag_sets_shrink_to_the_pair(rng: int) -> None:
    pair = F.NEWNS | F.FS
    assert _find(clone_flags("clone3"), lambda f: f & pair == pair, rng) == pair
    rare = F.DETACHED | F.NEWPID  # a rarely drawn flag shrinks like any other
    assert _find(clone_flags("clone3"), lambda f: f & rare == rare, rng) == rare


def test_flags_the_kernel_refuses_alone_are_drawn_less_often() -> None:
    counts = {F.DETACHED: 0, F.SIGHAND: 0, F.FS: 0, F.NEWNS: 0}
    total = 0

    @settings(database=None, max_examples=200, phases=[Phase.generate])
    @seed(3)
    @given(clone_flags("clone3", privileged=True))
    def tally(flags: F) -> None:
        nonlocal total
        total += 1
        for flag in counts:
            counts[flag] += bool(flags & flag)

    tally()
    rare = (counts[F.DETACHED] + counts[F.SIGHAND]) / (2 * total)
    common = (counts[F.FS] + counts[F.NEWNS]) / (2 * total)
    assert rare < 0.25 < common, (rare, common)


@pytest.mark.parametrize("api", ["clone", "clone3"])
@pytest.mark.parametrize("target", ["callable", "action"])
def test_target_keeps_what_pyclone_runs(api: str, target: str) -> None:
    @settings(database=None, max_examples=100, deadline=None)
    @seed(4)
    @given(clone_flags(api, target=target))
    def runnable(flags: F) -> None:
        sig = None if api == "clone" else 17
        assert pyclone.refused(flags, api=api, exit_signal=sig, target=target) is None

    runnable()
    with pytest.raises(ValueError, match="target"):
        clone_flags(target="thread")


def test_valid_target_sets_are_accepted_and_run() -> None:
    pool = [f for f in CLONE3_FLAGS if f is not F.PARENT]

    @settings(database=None, max_examples=30, deadline=None)
    @seed(5)
    @given(clone_flags("clone3", valid=True, target="callable", flags=pool, privileged=True))
    def runs(flags: F) -> None:
        assert pyclone.predict_errno(flags, api="clone3", privileged=True) == 0
        assert pyclone.refused(flags, api="clone3") is None

    runs()
