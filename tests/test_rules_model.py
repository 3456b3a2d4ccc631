"""The rule model on its own: known rejections, explain, rule_for_errno, the docs tables."""

from __future__ import annotations

import errno
import signal

import pytest

import pyclone
from pyclone import CloneFlag as F
from pyclone import rules
from pyclone.flags import SINGLE_FLAGS
from pyclone.rules import RULES, CallerState, explain, failing_rule, predict_errno

from conftest import Health

#: Known rejections: (flags, api, exit_signal, privileged, errno, rule name).
KNOWN = [
    (F.SIGHAND, "clone", 17, True, errno.EINVAL, "CLONE_SIGHAND requires CLONE_VM"),
    (F.THREAD | F.VM, "clone", 17, True, errno.EINVAL, "CLONE_THREAD requires CLONE_SIGHAND"),
    (F.NEWNS | F.FS, "clone", 17, True, errno.EINVAL, "CLONE_NEWNS conflicts with CLONE_FS"),
    (F.NEWUSER | F.FS, "clone", 17, False, errno.EINVAL, "CLONE_NEWUSER conflicts with CLONE_FS"),
    (
        F.NEWUSER | F.THREAD | F.SIGHAND | F.VM,
        "clone",
        0,
        False,
        errno.EINVAL,
        "CLONE_THREAD conflicts with CLONE_NEWUSER",
    ),
    (
        F.NEWPID | F.THREAD | F.SIGHAND | F.VM,
        "clone3",
        0,
        True,
        errno.EINVAL,
        "CLONE_THREAD conflicts with CLONE_NEWPID",
    ),
    (
        F.NEWIPC | F.SYSVSEM,
        "clone",
        17,
        True,
        errno.EINVAL,
        "CLONE_NEWIPC conflicts with CLONE_SYSVSEM",
    ),
    (
        F.NEWIPC | F.SYSVSEM,
        "clone",
        17,
        False,
        errno.EPERM,
        "new namespaces need CAP_SYS_ADMIN (or CLONE_NEWUSER with them)",
    ),
    (F.DETACHED, "clone3", 17, True, errno.EINVAL, "clone3 rejects CLONE_DETACHED"),
    (
        F.THREAD | F.SIGHAND | F.VM,
        "clone3",
        17,
        True,
        errno.EINVAL,
        "clone3: CLONE_THREAD and CLONE_PARENT require exit_signal 0",
    ),
    (
        F.PARENT,
        "clone3",
        signal.SIGUSR1,
        False,
        errno.EINVAL,
        "clone3: CLONE_THREAD and CLONE_PARENT require exit_signal 0",
    ),
    (
        F.SIGHAND | F.VM | F.CLEAR_SIGHAND,
        "clone3",
        17,
        True,
        errno.EINVAL,
        "CLONE_CLEAR_SIGHAND conflicts with CLONE_SIGHAND",
    ),
    (
        F.PIDFD | F.PARENT_SETTID,
        "clone",
        17,
        True,
        errno.EINVAL,
        "clone(2): CLONE_PIDFD and CLONE_PARENT_SETTID share one return slot",
    ),
    (
        F.PIDFD | F.DETACHED,
        "clone",
        17,
        True,
        errno.EINVAL,
        "CLONE_PIDFD conflicts with CLONE_DETACHED",
    ),
    (
        F(0),
        "clone3",
        65,
        True,
        errno.EINVAL,
        "clone3: exit_signal must be 0 or a valid signal (at most 64)",
    ),
    (F(1 << 40), "clone3", 17, True, errno.EINVAL, "clone3: unknown flag bits (34-63)"),
    (
        F(signal.SIGCHLD),
        "clone3",
        17,
        True,
        errno.EINVAL,
        "clone3: the exit signal goes in exit_signal, not in flags bits 0x01-0x7f",
    ),
    (
        F.NEWTIME,
        "clone3",
        17,
        False,
        errno.EPERM,
        "new namespaces need CAP_SYS_ADMIN (or CLONE_NEWUSER with them)",
    ),
]


@pytest.mark.parametrize(("flags", "api", "sig", "privileged", "err", "name"), KNOWN)
def test_explain_names_the_rule(
    flags: F, api: str, sig: int, privileged: bool, err: int, name: str
) -> None:
    assert predict_errno(flags, api=api, exit_signal=sig, privileged=privileged) == err
    rule = failing_rule(flags, api=api, exit_signal=sig, privileged=privileged)
    assert rule is not None and rule.name == name
    text = explain(flags, api=api, exit_signal=sig, privileged=privileged)
    assert name in text
    assert errno.errorcode[err] in text.splitlines()[-1]
    assert text.splitlines()[-1].startswith("rejected: ")


def test_explain_accepts_and_describes_each_flag() -> None:
    text = explain(F.VM | F.FS | F.FILES | F.SIGHAND | signal.SIGCHLD, privileged=True)
    assert text.splitlines()[-1] == "accepted: the kernel would create the task"
    for name in ("CLONE_VM", "CLONE_FS", "CLONE_FILES", "CLONE_SIGHAND", "SIGCHLD"):
        assert name in text


def test_first_failing_check_decides() -> None:
    # THREAD alone breaks P3 and (with exit signal) V4; clone3 checks V4 first.
    assert failing_rule(F.THREAD, api="clone3", exit_signal=17, privileged=True).id == "V4"
    assert failing_rule(F.THREAD, api="clone3", exit_signal=0, privileged=True).id == "P3"
    # NEWIPC|SYSVSEM: the privilege check (P11) comes before the conflict (P12).
    assert predict_errno(F.NEWIPC | F.SYSVSEM, privileged=False) == errno.EPERM
    assert predict_errno(F.NEWIPC | F.SYSVSEM, privileged=True) == errno.EINVAL
    # and CLONE_NEWUSER grants what P11 asks for
    assert predict_errno(F.NEWUSER | F.NEWIPC | F.SYSVSEM, privileged=False) == errno.EINVAL


def test_legacy_word() -> None:
    # The kernel keeps the low 32 bits and takes the low byte as exit signal.
    assert predict_errno((1 << 40) | F.CLEAR_SIGHAND | 17, privileged=True) == 0
    assert predict_errno(0x80, privileged=False) == 0  # exit signal 128, not CLONE_NEWTIME
    assert predict_errno(F.PARENT | signal.SIGUSR1, privileged=True) == 0
    assert predict_errno(F.PARENT, exit_signal=10, privileged=True) == 0
    assert predict_errno(F.DETACHED | 17, privileged=True) == 0
    assert "ignored" in explain((1 << 33) | 17, privileged=True)


def test_clone3_defaults_to_sigchld() -> None:
    assert predict_errno(F.PARENT, api="clone3", privileged=True) == errno.EINVAL
    assert predict_errno(F.PARENT, api="clone3", exit_signal=0, privileged=True) == 0
    assert predict_errno(F.NEWTIME, api="clone3", exit_signal=64, privileged=True) == 0


def test_caller_state_rules() -> None:
    init = CallerState(sys_admin=True, real_root=True, sys_resource=True, pid_ns_init=True)
    assert predict_errno(F.PARENT, privileged=init) == errno.EINVAL
    moved = CallerState(True, True, True, pid_ns_for_children_differs=True)
    assert predict_errno(F.THREAD | F.SIGHAND | F.VM, privileged=moved) == errno.EINVAL
    chrooted = CallerState(True, True, True, chrooted=True)
    assert predict_errno(F.NEWUSER, privileged=chrooted) == errno.EPERM
    unmapped = CallerState(False, False, False, ids_mapped=False)
    assert predict_errno(F.NEWUSER, privileged=unmapped) == errno.EPERM
    assert "chrooted" in explain(F.NEWUSER, privileged=chrooted)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="api"):
        predict_errno(0, api="fork")
    with pytest.raises(TypeError):
        predict_errno("VM")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64"):
        predict_errno(1 << 64)
    with pytest.raises(ValueError, match="low byte"):
        predict_errno(17, exit_signal=10)
    with pytest.raises(ValueError):
        predict_errno(0, exit_signal=256)
    with pytest.raises(TypeError):
        predict_errno(0, privileged="root")  # type: ignore[arg-type]


def test_rule_for_errno() -> None:
    name = rules.rule_for_errno(errno.EINVAL, F.SIGHAND | 17, api="clone", exit_signal=17)
    assert name == "CLONE_SIGHAND requires CLONE_VM"
    # a different errno than the model predicts: no rule is named
    assert rules.rule_for_errno(errno.ENOMEM, F.SIGHAND | 17, api="clone", exit_signal=17) is None
    assert rules.rule_for_errno(errno.EAGAIN, 17, api="clone", exit_signal=17) is None
    assert rules.rule_for_errno(errno.EINVAL, 0, api="nonsense", exit_signal=0) is None


def test_oserror_names_the_rule(healthy: Health) -> None:
    with pytest.raises(OSError) as info:
        pyclone.clone(lambda: 0, F.NEWNS | F.FS | signal.SIGCHLD)
    assert info.value.errno == errno.EINVAL
    assert str(info.value).endswith(": CLONE_NEWNS conflicts with CLONE_FS")


def test_rules_are_data() -> None:
    ids = [rule.id for rule in RULES]
    # the kernel's order: clone3 args, clone3_args_valid, kernel_clone, copy_process
    order = [{"C": 0, "V": 1, "K": 2, "P": 3}[i[0]] for i in ids]
    assert order == sorted(order)
    numbers = [int(i[1:]) for i in ids if i[0] == "P"]
    assert numbers == sorted(numbers)
    for rule in RULES:
        assert rule.name and rule.function and rule.since and rule.text
        assert rule.errno in errno.errorcode
        assert rule.predicted or rule.inputs
        assert repr(rule).startswith("<pyclone.rules.Rule ")


def test_tables_cover_every_flag() -> None:
    rows = list(rules.flag_rows())
    assert [r.value for r in rows] == sorted(int(m) for m in SINGLE_FLAGS)
    table = rules.flag_table()
    for member in SINGLE_FLAGS:
        assert f"CLONE_{member.name}" in table
    assert "CLONE_SIGHAND requires CLONE_VM" in rules.rules_table()
    assert "(" not in rules.rules_table(predicted_only=True).split("\n", 3)[3][:4]
