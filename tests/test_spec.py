"""share= and new= names, and the Literal types that name them for type checkers."""

from __future__ import annotations

import typing

import pytest

from pyclone import CloneFlag, spawn_task
from pyclone.spec import (
    NAMESPACES,
    PRESETS,
    SHARE_NAMES,
    NamespaceName,
    ShareName,
    SharePreset,
    new_flags,
    resolve_flags,
    share_flags,
)


def test_presets() -> None:
    assert share_flags("process") == 0
    assert share_flags("vfork") == CloneFlag.VM | CloneFlag.VFORK
    thread = share_flags("thread")
    assert thread & CloneFlag.THREAD and thread & CloneFlag.SIGHAND and thread & CloneFlag.VM


def test_single_name_and_iterables() -> None:
    assert share_flags("vm") == CloneFlag.VM
    assert share_flags(["fs", "files"]) == CloneFlag.FS | CloneFlag.FILES
    assert share_flags(()) == 0
    assert set(SHARE_NAMES) == {"vm", "fs", "files", "sighand", "sysvsem", "io", "thread", "parent"}
    assert set(PRESETS) == {"process", "thread", "vfork"}


def test_namespaces() -> None:
    assert new_flags(None) == 0
    assert new_flags("mount") == new_flags("mnt") == CloneFlag.NEWNS
    everything = new_flags("all")
    for flag in NAMESPACES.values():
        assert everything & flag
    assert resolve_flags("process", {"uts", "pid"}, 0x100) == (
        CloneFlag.NEWUTS | CloneFlag.NEWPID | CloneFlag.VM
    )


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid names are files, fs, io, parent"):
        share_flags({"memory"})
    with pytest.raises(ValueError, match="valid names are cgroup, ipc, mnt, mount"):
        new_flags(["pids"])


def test_bad_types() -> None:
    with pytest.raises(TypeError):
        share_flags(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        new_flags([1])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        resolve_flags(flags="vm")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        resolve_flags(flags=1 << 64)
    with pytest.raises(ValueError):
        resolve_flags(flags=-1)


@pytest.mark.parametrize(
    ("literal", "table"),
    [(SharePreset, PRESETS), (ShareName, SHARE_NAMES), (NamespaceName, NAMESPACES)],
)
def test_literal_names_are_the_table_keys(literal: object, table: dict[str, object]) -> None:
    assert sorted(typing.get_args(literal)) == sorted(table)


def test_every_literal_name_resolves() -> None:
    for preset in typing.get_args(SharePreset):
        resolve_flags(share=preset)
    for name in typing.get_args(ShareName):
        resolve_flags(share=[name])
    for name in typing.get_args(NamespaceName):
        resolve_flags(new=[name])


def test_a_misspelt_name_is_still_refused_at_run_time() -> None:
    # the Literal types only help a type checker; untyped callers get the ValueError
    share: typing.Any = "thred"
    with pytest.raises(ValueError, match="unknown share name 'thred'"):
        spawn_task(int, share=share)
    new: typing.Any = {"pid", "utz"}
    with pytest.raises(ValueError, match="unknown namespace name 'utz'"):
        resolve_flags(new=new)
