"""CloneFlag, the fork/pthread presets and flag spelling."""

from __future__ import annotations

import signal

import pytest

import pyclone
from pyclone import CloneFlag, flag_names

# The kernel's values (include/uapi/linux/sched.h), written out independently.
KERNEL_VALUES = {
    "CSIGNAL": 0x000000FF,
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_VM": 0x00000100,
    "CLONE_FS": 0x00000200,
    "CLONE_FILES": 0x00000400,
    "CLONE_SIGHAND": 0x00000800,
    "CLONE_PIDFD": 0x00001000,
    "CLONE_PTRACE": 0x00002000,
    "CLONE_VFORK": 0x00004000,
    "CLONE_PARENT": 0x00008000,
    "CLONE_THREAD": 0x00010000,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_SYSVSEM": 0x00040000,
    "CLONE_SETTLS": 0x00080000,
    "CLONE_PARENT_SETTID": 0x00100000,
    "CLONE_CHILD_CLEARTID": 0x00200000,
    "CLONE_DETACHED": 0x00400000,
    "CLONE_UNTRACED": 0x00800000,
    "CLONE_CHILD_SETTID": 0x01000000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
    "CLONE_IO": 0x80000000,
    "CLONE_CLEAR_SIGHAND": 0x100000000,
    "CLONE_INTO_CGROUP": 0x200000000,
}


@pytest.mark.parametrize("name", sorted(KERNEL_VALUES))
def test_constant_has_kernel_value(name: str) -> None:
    value = KERNEL_VALUES[name]
    assert getattr(pyclone._pyclone, name) == value
    assert getattr(pyclone, name) == value
    member = name.removeprefix("CLONE_")
    assert CloneFlag[member] == value
    assert name in pyclone.__all__


def test_every_member_is_a_known_constant() -> None:
    names = {("CLONE_" + m if m != "CSIGNAL" else m) for m in CloneFlag.__members__}
    assert names == set(KERNEL_VALUES)


def test_unknown_bits_are_kept() -> None:
    word = (1 << 40) | int(CloneFlag.VM)
    assert int(CloneFlag(word)) == word


def test_fork_flags_are_glibcs() -> None:
    assert pyclone.FORK_FLAGS == (
        pyclone.CLONE_CHILD_SETTID | pyclone.CLONE_CHILD_CLEARTID | signal.SIGCHLD
    )
    assert pyclone.FORK_FLAGS & CloneFlag.CSIGNAL == signal.SIGCHLD


def test_pthread_flags_are_glibcs() -> None:
    expected = 0
    for name in (
        "VM",
        "FS",
        "FILES",
        "SYSVSEM",
        "SIGHAND",
        "THREAD",
        "SETTLS",
        "PARENT_SETTID",
        "CHILD_CLEARTID",
    ):
        expected |= KERNEL_VALUES["CLONE_" + name]
    assert pyclone.PTHREAD_FLAGS == expected
    assert isinstance(pyclone.PTHREAD_FLAGS, CloneFlag)


@pytest.mark.parametrize(
    ("flags", "api", "spelled"),
    [
        (0, "clone", "0"),
        (CloneFlag.VM | signal.SIGCHLD, "clone", "CLONE_VM|SIGCHLD"),
        (CloneFlag.NEWTIME | CloneFlag.NEWPID, "clone3", "CLONE_NEWTIME|CLONE_NEWPID"),
        (CloneFlag.FS | 70, "clone", "CLONE_FS|signal 70"),
        (1 << 40, "clone3", hex(1 << 40)),
    ],
)
def test_flag_names(flags: int, api: str, spelled: str) -> None:
    assert flag_names(flags, api=api) == spelled


def test_negative_flags_are_refused_everywhere_flags_enter() -> None:
    # a negative int has every high bit set: read as a flags word it would be every flag
    with pytest.raises(ValueError, match="non-negative"):
        flag_names(-1)
    with pytest.raises(ValueError, match="non-negative"):
        flag_names(-1, api="clone3")
    with pytest.raises(ValueError, match="flags must be a non-negative int"):
        pyclone.clone(lambda: 0, -1)
    with pytest.raises(ValueError, match="flags must be a non-negative int"):
        pyclone.clone3(lambda: 0, -(1 << 63))
    with pytest.raises(ValueError, match="flags"):
        pyclone.spawn_task(lambda: 0, flags=-1)
    # CloneFlag arithmetic keeps to non-negative words, so its results are accepted
    assert flag_names(CloneFlag.VM & ~CloneFlag.FS, api="clone3") == "CLONE_VM"
    with pytest.raises(TypeError, match="flags must be an int"):
        pyclone.clone(lambda: 0, 17.0)  # type: ignore[arg-type]
