"""The property: any accepted flag set runs any sequence of actions (real kernel)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyclone
from pyclone import ActionError, CloneFlag, UnsupportedFlags, actions, spawn_task

from actions_support import CHILD, HELLO, seed_buffer, text, wait_thread_gone
from conftest import WAIT, Health, check_health, reap

# -- the property: random accepted flag sets x actions ---------------------------------------

BITS = [
    CloneFlag.VM,
    CloneFlag.VFORK,
    CloneFlag.FS,
    CloneFlag.FILES,
    CloneFlag.SIGHAND,
    CloneFlag.THREAD,
    CloneFlag.SYSVSEM,
    CloneFlag.IO,
    CloneFlag.PTRACE,
    CloneFlag.UNTRACED,
    CloneFlag.NEWNS,
    CloneFlag.NEWUTS,
    CloneFlag.NEWIPC,
    CloneFlag.NEWNET,
    CloneFlag.NEWPID,
    CloneFlag.NEWUSER,
    CloneFlag.NEWCGROUP,
]

STEPS = ["exit", "write", "sleep", "chdir", "bad_chdir", "bad_close", "exec", "bad_exec", "ignore"]


@pytest.fixture
def busy_threads() -> Iterator[None]:
    """Two Python threads that keep running while the property spawns."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    workers = [threading.Thread(target=spin) for _ in range(2)]
    for worker in workers:
        worker.start()
    yield
    stop.set()
    for worker in workers:
        worker.join(WAIT)


def build(steps: list[str], buf: bytearray) -> actions.Action:
    cwd = os.getcwd()
    table = {
        "exit": lambda: actions.exit(5),
        "write": lambda: actions.write(buf, CHILD),
        "sleep": lambda: actions.sleep(0.001),
        "chdir": lambda: actions.chdir(cwd),  # harmless even with CLONE_FS
        "bad_chdir": lambda: actions.chdir("/nonexistent"),
        "bad_close": lambda: actions.close(987_654),
        "exec": lambda: actions.exec("/bin/true", ["true"]),
        "bad_exec": lambda: actions.exec("/nope", ["/nope"]),
        "ignore": lambda: actions.ignore_signal(signal.SIGURG),
    }
    return actions.sequence(*(table[step]() for step in steps))


def run_case(api: str, action: actions.Action, flags: CloneFlag, exit_signal: int) -> None:
    """Spawn and wait; every outcome is a status or a clean exception."""
    if api == "spawn_task":
        with spawn_task(action, flags=flags, exit_signal=exit_signal) as task:
            with contextlib.suppress(ActionError):  # a failed step, reported
                task.wait(WAIT)
        if flags & CloneFlag.THREAD:
            wait_thread_gone(task.pid)
        return
    if api == "clone":
        pid = pyclone.clone(action, int(flags) | exit_signal)
    else:
        pid, _ = pyclone.clone3(action, flags, exit_signal=exit_signal)
    if flags & CloneFlag.THREAD:
        wait_thread_gone(pid)
    else:
        reap(pid)


@pytest.mark.usefixtures("busy_threads")
@settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    bits=st.sets(st.sampled_from(BITS), max_size=6),
    steps=st.lists(st.sampled_from(STEPS), max_size=4),
    exit_signal=st.sampled_from([signal.SIGCHLD, 0]),
    api=st.sampled_from(["spawn_task", "clone", "clone3"]),
)
def test_any_accepted_flag_set_runs_any_action(
    bits: set[CloneFlag], steps: list[str], exit_signal: int, api: str
) -> None:
    check_case(bits, steps, exit_signal, api)


def check_case(bits: set[CloneFlag], steps: list[str], exit_signal: int, api: str) -> None:
    """One example: whatever happens, the parent is as it was."""
    flags = CloneFlag(0)
    for bit in bits:
        flags |= bit
    buf = seed_buffer()
    before = Health.take()
    # the kernel's EINVAL/EPERM, pyclone's refusals, a failed vfork step: clean exceptions
    with contextlib.suppress(OSError, UnsupportedFlags):
        run_case(api, build(steps, buf), flags, exit_signal)
    if not flags & CloneFlag.VM:
        assert text(buf) == HELLO[:-1]
    check_health(before)


@pytest.fixture
def slow_selected(request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("1000 random cases (about 8 minutes): select them with -m slow")


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.usefixtures("slow_selected", "busy_threads")
@settings(
    derandomize=True,
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    bits=st.sets(st.sampled_from(BITS), max_size=8),
    steps=st.lists(st.sampled_from(STEPS), max_size=6),
    exit_signal=st.sampled_from([signal.SIGCHLD, 0]),
    api=st.sampled_from(["spawn_task", "clone", "clone3"]),
)
def test_any_accepted_flag_set_runs_any_action_long(
    bits: set[CloneFlag], steps: list[str], exit_signal: int, api: str
) -> None:
    check_case(bits, steps, exit_signal, api)
