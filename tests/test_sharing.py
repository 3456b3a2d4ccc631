"""shared_resources() and Task.shared_resources() against the live kernel."""

from __future__ import annotations

import importlib
import os
import time
import traceback
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings

import pyclone
from pyclone import CloneFlag as F
from pyclone import sharing
from pyclone.sharing import NAMESPACES, prime, shared_resources
from pyclone.spec import NAMESPACES as NEW_NAMES
from pyclone.spec import SHARE_NAMES
from pyclone.strategies import spawn_specs

from conftest import WAIT, Health, become_nobody, reap, require_root

_KCMP = {"vm", "files", "fs", "sighand"}


def _gated(share: object = "process", new: object = None) -> tuple[pyclone.Task, tuple[int, int]]:
    """A task that blocks until :func:`_release` (a byte through a pipe).

    Both ends stay open here until then: under CLONE_FILES closing the read
    end would close it for the task too.
    """
    r, w = os.pipe()

    def child() -> int:
        os.read(r, 1)
        return 0

    try:
        task = pyclone.spawn_task(child, share=share, new=new)  # type: ignore[arg-type]
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    return task, (r, w)


def _release(task: pyclone.Task, pipe: tuple[int, int]) -> None:
    r, w = pipe
    try:
        os.write(w, b"x")
        assert task.wait(WAIT) == 0
        task.close()
    finally:
        os.close(r)
        os.close(w)


def _expected(share: frozenset[str], new: frozenset[str]) -> frozenset[str]:
    flags = F(0)
    for name in share:
        flags |= SHARE_NAMES[name]
    shared = {name for name in ("vm", "files", "fs", "sighand", "io", "sysvsem") if name in share}
    unshared = {"mnt" if n == "mount" else n for n in new}
    if "vm" in share:
        # with CLONE_VM, CLONE_NEWTIME changes only the task's time_for_children:
        # the task itself stays in its creator's time namespace
        unshared.discard("time")
    shared |= {ns for ns in NAMESPACES if ns not in unshared}
    return frozenset(shared)


def test_a_task_shares_everything_with_itself() -> None:
    me = os.getpid()
    got = shared_resources(me, me)
    assert _KCMP | set(NAMESPACES) <= got or not os.path.exists("/proc/self/ns/time")


def test_fork_shares_namespaces_only(healthy: Health) -> None:
    task, w = _gated()
    try:
        got = task.shared_resources()
    finally:
        _release(task, w)
    assert got & _KCMP == set()
    assert got >= {"user", "pid", "mnt", "net", "uts", "ipc"}


def test_io_and_sysvsem_need_a_primed_creator(healthy: Health) -> None:
    """kcmp calls two NULL pointers the same: without priming, no claim is made."""

    def unprimed() -> int:
        # a fresh fork: nothing is primed in this process yet
        if sharing.primed():
            return 2
        task, w = _gated(share={"io", "sysvsem"})
        try:
            before = task.shared_resources()
        finally:
            _release(task, w)
        if before & {"io", "sysvsem"}:
            return 3
        prime()
        task, w = _gated(share={"io", "sysvsem"})
        try:
            with_io = task.shared_resources()
        finally:
            _release(task, w)
        task, w = _gated()
        try:
            without = task.shared_resources()
        finally:
            _release(task, w)
        return 0 if {"io", "sysvsem"} <= with_io and not without & {"io", "sysvsem"} else 4

    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = unprimed()
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(reap(pid)) == 0


def test_zombie_and_reaped_tasks_are_refused(healthy: Health) -> None:
    task = pyclone.spawn_task(lambda: 0, share={"files", "fs"})
    try:
        deadline = time.monotonic() + WAIT
        while sharing._state(task.pid) != "Z":  # exited, not yet reaped
            assert time.monotonic() < deadline
            time.sleep(0.001)
        # the pitfall: kcmp on the zombie says the fd table is not shared
        assert pyclone.kcmp(os.getpid(), task.pid, pyclone._pyclone.KCMP_FILES) != 0
        with pytest.raises(ProcessLookupError, match="zombie"):
            task.shared_resources()
    finally:
        task.wait(WAIT)
        task.close()
    with pytest.raises(ProcessLookupError, match="has ended"):
        task.shared_resources()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        shared_resources("1", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        shared_resources(0, os.getpid())
    with pytest.raises(ProcessLookupError):
        shared_resources(os.getpid(), 2**22 + 12345)


def test_unprivileged_caller_may_inspect_its_user_namespace_child() -> None:
    require_root("dropping to uid 65534 needs root first")

    def inside() -> int:
        become_nobody()  # dumpable again, as kcmp's ptrace check needs
        task, w = _gated(new={"user", "net"})
        try:
            got = task.shared_resources()
        finally:
            _release(task, w)
        want = {"pid", "mnt", "uts", "ipc", "cgroup", "time"} & set(NAMESPACES)
        return 0 if got == want else 3

    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = inside()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(reap(pid)) == 0


@settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=spawn_specs(forklike=True))
def test_task_shares_exactly_what_its_flags_ask_for(
    spec: tuple[frozenset[str], frozenset[str]],
) -> None:
    """Property: Task.shared_resources() is what spawn_task's flags ask for (fork-like tasks)."""
    share, new = spec
    if not sharing.primed():
        prime()
    task, w = _gated(share=share or "process", new=new or None)
    try:
        got = task.shared_resources()
    finally:
        _release(task, w)
    assert got == _expected(share, new), (sorted(share), sorted(new))


@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=spawn_specs())
def test_action_tasks_share_exactly_what_their_flags_ask_for(
    spec: tuple[frozenset[str], frozenset[str]],
) -> None:
    """Property, with vm/sighand/thread too: an action child runs with any flags."""
    actions = _actions()
    if not sharing.primed():
        prime()
    share, new = spec
    try:
        task = pyclone.spawn_task(actions.sleep(WAIT), share=share or "process", new=new or None)
    except pyclone.UnsupportedFlags:
        reject()  # pyclone's own refusal (e.g. CLONE_SIGHAND|CLONE_NEWPID with an action)
    try:
        got = task.shared_resources()
    finally:
        task.kill()
        task.wait(WAIT)
        task.close()
    assert got == _expected(share, new), (sorted(share), sorted(new))


def _actions() -> Any:
    try:
        return importlib.import_module("pyclone.actions")
    except ImportError:
        pytest.skip(
            "tasks with CLONE_VM/CLONE_THREAD need a pyclone.actions child "
            "(pyclone refuses a Python callable there); pyclone.actions is not available"
        )


def test_namespace_names_match_spawn_names() -> None:
    assert {"mnt" if n == "mount" else n for n in NEW_NAMES} == set(NAMESPACES)
