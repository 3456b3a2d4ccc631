"""Sandbox(disable_userns=, assert_userns_disabled=, userns_block_fd=, parent_fds=) and the
refused labels: user namespaces inside the sandbox, as root and as uid 65534."""

from __future__ import annotations

import errno
import os
import select

import pytest

from pyclone import Sandbox, SandboxError
from pyclone._pyclone import unshare
from pyclone.flags import CloneFlag
from pyclone.sandbox._labels import NOT_ON_THIS_SYSTEM, selinux_enabled
from pyclone.task import Task

from conftest import WAIT
from sandbox_helpers import NOBODY, WHO, run_as

USER = {"user", "mnt"}


def _errno_of_a_new_user_namespace() -> int:
    try:
        unshare(CloneFlag.NEWUSER)
    except OSError as exc:
        return exc.errno or 0
    return 0


def _disabled() -> tuple[int, str]:
    task = Sandbox(new=USER | {"pid"}, disable_userns=True).spawn(_errno_of_a_new_user_namespace)
    code = task.result(WAIT)
    done = Sandbox(new=USER, disable_userns=True).run(
        ["cat", "/proc/self/uid_map"], capture_output=True
    )
    return code, done.stdout.decode()


@WHO
def test_disable_userns_makes_a_new_user_namespace_fail_with_enospc(who: str) -> None:
    code, uid_map = run_as(who, _disabled)
    assert code == errno.ENOSPC
    uid = 0 if who == "root" else NOBODY
    assert uid_map.split() == [str(uid), str(uid), "1"]


def _assert_fails() -> tuple[str, int | None, str]:
    try:
        Sandbox(new=USER, assert_userns_disabled=True).run(["true"])
    except SandboxError as exc:
        return exc.step, exc.errno, str(exc.strerror)
    return "", None, "ran"


@WHO
def test_assert_userns_disabled_names_its_step(who: str) -> None:
    step, err, text = run_as(who, _assert_fails)
    assert (step, err) == ("assert_userns_disabled", None)
    assert text == "creation of new user namespaces was not disabled as requested"


def _assert_inside_disabled() -> int:
    outer = Sandbox(new=USER, uid=0, gid=0, cap_add="ALL", disable_userns=True)

    def inner() -> int:
        # uid 0 of the nested namespace, every capability: only a mount namespace
        done = Sandbox(new={"mnt"}, assert_userns_disabled=True).run(["true"])
        return done.returncode

    return int(outer.spawn(inner).result(WAIT))


def _nested_sandbox_inside_disabled() -> tuple[str, int | None]:
    def inner() -> tuple[str, int | None]:
        try:
            Sandbox(new=USER).run(["true"])
        except SandboxError as exc:
            return exc.step, exc.errno
        return "", None

    result: tuple[str, int | None] = (
        Sandbox(new=USER, disable_userns=True).spawn(inner).result(WAIT)
    )
    return result


@WHO
def test_a_sandbox_inside_a_disabled_one_fails_at_its_clone(who: str) -> None:
    assert run_as(who, _nested_sandbox_inside_disabled) == ("clone", errno.ENOSPC)


@WHO
def test_assert_userns_disabled_passes_inside_a_disabled_sandbox(who: str) -> None:
    assert run_as(who, _assert_inside_disabled) == 0


def _blocked() -> tuple[str, bool]:
    block_r, block_w = os.pipe()
    report_r, report_w = os.pipe()
    seen_end = []

    def on_start(task: Task) -> None:
        # the child closed its copy before the gate: the reader sees the end now
        os.close(report_w)
        seen_end.append(select.select([report_r], [], [], WAIT)[0] == [report_r])
        euid = os.geteuid()
        with open(f"/proc/{task.pid}/uid_map", "w") as f:
            f.write(f"0 {euid} 1\n")
        with open(f"/proc/{task.pid}/setgroups", "w") as f:
            f.write("deny")
        with open(f"/proc/{task.pid}/gid_map", "w") as f:
            f.write(f"0 {os.getegid()} 1\n")
        os.write(block_w, b"x")

    try:
        done = Sandbox(new=USER, userns_block_fd=block_r).run(
            ["sh", "-c", "id -u; id -g"],
            capture_output=True,
            on_start=on_start,
            parent_fds=[report_w],
        )
    finally:
        for fd in (block_r, block_w, report_r):
            os.close(fd)
    return done.stdout.decode(), seen_end == [True]


@WHO
def test_userns_block_fd_waits_for_the_maps_its_writer_writes(who: str) -> None:
    out, seen_end = run_as(who, _blocked)
    assert out == "0\n0\n"
    assert seen_end


@pytest.mark.parametrize(
    "options, message",
    [
        ({"new": {"mnt"}, "disable_userns": True}, "disable_userns needs the sandbox's own"),
        (
            {"new": USER, "disable_userns": True, "uid_map": [(0, 100000, 10)]},
            "uid_map must map one id",
        ),
        ({"new": {"mnt"}, "userns_block_fd": 0}, "userns_block_fd waits for a new user"),
        (
            {"new": USER, "userns_block_fd": 0, "gid_map": [(0, 0, 1)]},
            "userns_block_fd leaves the id maps",
        ),
        (
            {"new": USER, "userns_block_fd": 0, "disable_userns": True},
            "disable_userns is not compatible with userns_block_fd",
        ),
        ({"new": USER, "userns_block_fd": -1}, "userns_block_fd must be a non-negative"),
    ],
)
def test_bad_combinations_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Sandbox(**options)  # type: ignore[arg-type]


def test_wrong_types_are_refused() -> None:
    with pytest.raises(TypeError, match="disable_userns must be True or False"):
        Sandbox(disable_userns=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="assert_userns_disabled must be True or False"):
        Sandbox(assert_userns_disabled="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exec_label must be a str"):
        Sandbox(exec_label=b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["exec_label", "file_label"])
def test_labels_are_refused_with_the_reason(name: str) -> None:
    reason = "labeling not supported by pyclone" if selinux_enabled() else NOT_ON_THIS_SYSTEM
    with pytest.raises(ValueError, match=f"{name}='unconfined_t' cannot be applied: {reason}"):
        Sandbox(**{name: "unconfined_t"})  # type: ignore[arg-type]
    assert getattr(Sandbox(), name) is None


def test_parent_fds_are_checked_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="parent_fds must be a non-negative descriptor"):
        Sandbox(new=USER).run(["true"], parent_fds=[-1])
    with pytest.raises(TypeError, match="parent_fds must be a descriptor"):
        Sandbox(new=USER).run(["true"], parent_fds=["3"])  # type: ignore[list-item]
