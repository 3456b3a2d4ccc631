"""Python callables in CLONE_VM children (pyclone.borrowed, the borrowed interpreter).

The cases that end normally (return, raise, SystemExit, child_exit,
child_exec) and the refusals run here, with two busy Python threads in
this process and the ``healthy`` check around them.  Cases that abandon
a thread state or could hang are in tests/test_borrowed_abnormal.py.
"""

from __future__ import annotations

import contextvars
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pyclone
from pyclone import (
    CLONE_FILES,
    CLONE_FS,
    CLONE_IO,
    CLONE_NEWPID,
    CLONE_SETTLS,
    CLONE_SIGHAND,
    CLONE_SYSVSEM,
    CLONE_THREAD,
    CLONE_VFORK,
    CLONE_VM,
    UnsupportedFlags,
    child_exec,
    child_exit,
)
from pyclone.borrowed import vm_supported

from conftest import WAIT, Health
from vm_worker import EXPECTED  # the behaviours and what each should end with

VMV = CLONE_VM | CLONE_VFORK
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SH = "/bin/sh"
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _needs_vm(request: pytest.FixtureRequest) -> None:
    if not vm_supported() and request.node.name != "test_refused_where_unsupported":
        pytest.skip(
            "this interpreter cannot run Python in CLONE_VM children (free-threaded or "
            "not 3.10-3.15); test_refused_where_unsupported checks the refusal"
        )


# -- helpers -----------------------------------------------------------------


# glibc installs its set*id signal handler when the first thread starts: do
# that now, so the health snapshots around the busy threads compare equal.
_warm = threading.Thread(target=int)
_warm.start()
_warm.join()


@pytest.fixture
def busy() -> Iterator[None]:
    """Two Python threads computing in this process for the whole test."""
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += sum(i * i for i in range(200))

    threads = [threading.Thread(target=spin) for _ in range(2)]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()


def reap(pid: int) -> int:
    """waitpid with a deadline (WAIT): a hang fails the test."""
    r, status = 0, 0
    deadline = time.monotonic() + WAIT
    while r != pid:
        r, status = os.waitpid(pid, os.WNOHANG | pyclone._pyclone.WALL)
        if r != pid:
            assert time.monotonic() < deadline, f"task {pid} did not end"
            time.sleep(0.001)
    return os.waitstatus_to_exitcode(status)


# -- the seed sample ---------------------------------------------------------


def _seed_child(buf: bytearray, seen: list[str]) -> int:
    seen.append(bytes(buf).split(b"\0", 1)[0].decode())
    buf[:17] = b"hello from child\0"
    return 0


@pytest.mark.parametrize("flags", [0, VMV], ids=["copy", "vm"])
def test_seed_sample_clone(healthy: Health, flags: int) -> None:
    buf = bytearray(100)
    buf[:17] = b"hello from parent"
    seen: list[str] = []
    pid = pyclone.clone(lambda: _seed_child(buf, seen), flags | signal.SIGCHLD)
    assert reap(pid) == 0
    text = bytes(buf).split(b"\0", 1)[0].decode()
    if flags & CLONE_VM:
        assert seen == ["hello from parent"]  # the child appended to our list
        assert text == "hello from child"
    else:
        assert seen == []  # the child's append went to its own copy
        assert text == "hello from parent"


def _seed_task(buf: bytearray) -> str:
    seen = bytes(buf).split(b"\0", 1)[0].decode()
    buf[:17] = b"hello from child\0"
    return seen


@pytest.mark.parametrize("share", ["process", "vfork", ["vm"]], ids=["copy", "vfork", "vm+flag"])
def test_seed_sample_spawn_task(healthy: Health, share: Any) -> None:
    buf = bytearray(100)
    buf[:17] = b"hello from parent"
    extra = CLONE_VFORK if share == ["vm"] else 0
    with pyclone.spawn_task(_seed_task, (buf,), share=share, flags=extra) as task:
        assert task.result(WAIT) == "hello from parent"
        assert task.returncode == 0
    text = bytes(buf).split(b"\0", 1)[0].decode()
    assert text == ("hello from parent" if share == "process" else "hello from child")


def test_seed_sample_spawn_task_writes(healthy: Health) -> None:
    buf = bytearray(b"hello from parent")
    with pyclone.spawn_task(
        buf.__setitem__, (slice(None), b"hello from child"), share="vfork"
    ) as t:
        assert t.result(WAIT) is None
    assert buf == b"hello from child"


def test_demo_vm_prints_exactly_two_lines() -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    for args, last in ((["vm"], "hello from child"), ([], "hello from parent")):
        out = subprocess.run(
            [sys.executable, "-m", "pyclone", "demo", *args],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=env,
            check=True,
        )
        assert out.stdout.splitlines() == [
            'Child sees buf = "hello from parent"',
            f'Child exited with status 0. buf = "{last}"',
        ]


# -- behaviours that end normally, in this process -------------------------

SAFE = ["return", "raise", "sysexit", "child_exit", "child_exec", "recursion"]
FLAG_SETS = {
    "vm|vfork": VMV,
    "+files|fs": VMV | CLONE_FILES | CLONE_FS,
    "+sighand": VMV | CLONE_SIGHAND,
    "+sysvsem|io": VMV | CLONE_SYSVSEM | CLONE_IO,
}


def _behave(name: str, log: list[str]) -> Any:
    if name == "return":
        value = object()
        log.append("returned")
        return value
    if name == "raise":
        raise KeyError("from the child")
    if name == "sysexit":
        raise SystemExit(5)
    if name == "child_exit":
        try:
            child_exit(6)
        finally:
            log.append("unwound")
    if name == "child_exec":
        child_exec(SH, ["sh", "-c", "exit 7"])
    if name == "recursion":

        def down(n: int) -> int:
            return down(n + 1) + 1

        return down(0)
    raise AssertionError(name)


@pytest.mark.parametrize("flags", list(FLAG_SETS.values()), ids=list(FLAG_SETS))
@pytest.mark.parametrize("behaviour", SAFE)
def test_behaviour_spawn_task(healthy: Health, busy: None, behaviour: str, flags: int) -> None:
    log: list[str] = []
    before = pyclone.abandoned_thread_states()
    with pyclone.spawn_task(_behave, (behaviour, log), flags=flags) as task:
        code = task.wait(WAIT)
        assert code == EXPECTED[behaviour][0]
        if behaviour == "return":
            assert task.result() is not None
            assert log == ["returned"]
        elif behaviour in ("raise", "recursion"):
            with pytest.raises(pyclone.ChildError) as info:
                task.result()
            kind = KeyError if behaviour == "raise" else RecursionError
            assert isinstance(info.value.exception, kind)
            assert info.value.__cause__ is info.value.exception
        else:
            with pytest.raises(pyclone.ChildError, match="without returning a result"):
                task.result()
    if behaviour == "child_exit":
        assert log == ["unwound"]
    assert pyclone.abandoned_thread_states() == before


@pytest.mark.parametrize("behaviour", SAFE)
def test_behaviour_clone_and_clone3(healthy: Health, busy: None, behaviour: str) -> None:
    log: list[str] = []
    before = pyclone.abandoned_thread_states()
    expected = 0 if behaviour == "return" else EXPECTED[behaviour][0]
    pid = pyclone.clone(lambda: _behave(behaviour, log) and 0, VMV | signal.SIGCHLD)
    assert reap(pid) == expected
    pid, pidfd = pyclone.clone3(lambda: _behave(behaviour, log) and 0, VMV, pidfd=True)
    assert pidfd is not None
    os.close(pidfd)
    assert reap(pid) == expected
    assert pyclone.abandoned_thread_states() == before


def test_result_is_the_object_itself(healthy: Health) -> None:
    mine = {"a": [1, 2]}

    def child() -> dict[str, list[int]]:
        mine["a"].append(3)
        return mine

    with pyclone.spawn_task(child, share="vfork") as task:
        assert task.result(WAIT) is mine
    assert mine == {"a": [1, 2, 3]}


def test_child_sees_contextvars_and_its_own_pid(healthy: Health) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("caller")

    def child() -> tuple[str, int, int]:
        value = var.get()
        var.set("child")  # in a copy of the caller's context
        return value, os.getpid(), threading.get_ident()

    with pyclone.spawn_task(child, share="vfork") as task:
        value, pid, ident = task.result(WAIT)
        assert (value, pid) == ("caller", task.pid)
    assert var.get() == "caller"
    assert ident == threading.get_ident()  # the child borrows this thread's identity


def test_signals_blocked_in_child_until_exec(healthy: Health, tmp_path: Any) -> None:
    out = tmp_path / "status"

    def child() -> None:
        with open("/proc/self/status") as f:
            blocked = [line for line in f if line.startswith("SigBlk")]
        out.write_text(blocked[0])
        child_exec(SH, ["sh", "-c", f"exec cat /proc/self/status >> {out}"])

    with pyclone.spawn_task(child, share="vfork") as task:
        assert task.wait(WAIT) == 0
    lines = out.read_text().splitlines()
    child_mask = int(lines[0].split()[1], 16)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1):
        assert child_mask & (1 << (sig - 1)), f"{sig!r} not blocked in the child"
    exec_fields = dict(line.split(":", 1) for line in lines[1:] if line.startswith("Sig"))
    parent = dict(healthy.signals)
    assert exec_fields["SigBlk"].strip() == parent["SigBlk"]  # the caller's mask is back
    assert int(exec_fields["SigCgt"], 16) == 0  # no handler survives into the program


def test_exec_failure_is_an_oserror_naming_the_step(healthy: Health) -> None:
    for api in ("spawn", "clone"):
        with pytest.raises(OSError, match=r"child_exec: execve\('/nonexistent/x'\)") as info:
            if api == "spawn":
                pyclone.spawn_task(child_exec, ("/nonexistent/x", ["x"]), share="vfork")
            else:
                pyclone.clone(lambda: child_exec("/nonexistent/x", ["x"]), VMV | signal.SIGCHLD)
        assert info.value.errno == errno.ENOENT


def test_child_exec_passes_argv_and_env(healthy: Health, tmp_path: Any) -> None:
    out = tmp_path / "out"
    script = f'printf "%s|%s" "$1" "$PYCLONE_T" > {out}'
    with pyclone.spawn_task(
        child_exec, (SH, ["sh", "-c", script, "sh", "arg one"], {"PYCLONE_T": "v"}), share="vfork"
    ) as task:
        assert task.wait(WAIT) == 0
    assert out.read_text() == "arg one|v"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("/bin/sh", []), ValueError),
        (("/bin/sh", "sh"), TypeError),
        (("/bin/sh", ["sh\0"]), ValueError),
        (("/bin/sh", ["sh"], {"A=B": "c"}), ValueError),
    ],
)
def test_child_exec_checks_arguments_first(healthy: Health, args: Any, error: Any) -> None:
    with pytest.raises(error):
        child_exec(*args)


def test_helpers_outside_a_child(healthy: Health) -> None:
    with pytest.raises(RuntimeError, match="outside a task created by pyclone"):
        child_exit(0)
    with pytest.raises(RuntimeError, match="outside a task created by pyclone"):
        child_exec(SH, ["sh", "-c", "exit 0"])
    with pytest.raises(TypeError):
        child_exit("1")  # type: ignore[arg-type]


def test_helpers_in_a_fork_like_child(healthy: Health) -> None:
    pid = pyclone.clone(lambda: child_exit(3), signal.SIGCHLD)
    assert reap(pid) == 3
    pid = pyclone.clone(lambda: child_exec(SH, ["sh", "-c", "exit 4"]), signal.SIGCHLD)
    assert reap(pid) == 4


def test_thread_start_in_child_is_refused(healthy: Health) -> None:
    def child() -> None:
        threading.Thread(target=print).start()

    with (
        pyclone.spawn_task(child, share="vfork") as task,
        pytest.raises(pyclone.ChildError) as info,
    ):
        task.result(WAIT)
    assert isinstance(info.value.exception, RuntimeError)
    assert "cannot start a thread in a CLONE_VM child" in str(info.value.exception)


# -- refusals ------------------------------------------------------------------


def _noop() -> int:
    return 0


def test_vm_without_vfork_is_refused(healthy: Health) -> None:
    for call in (
        lambda: pyclone.clone(_noop, CLONE_VM | signal.SIGCHLD),
        lambda: pyclone.clone3(_noop, CLONE_VM),
        lambda: pyclone.spawn_task(_noop, share=["vm"]),
    ):
        with pytest.raises(UnsupportedFlags, match=r"add CLONE_VFORK.*pyclone\.actions"):
            call()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"flags": VMV | CLONE_SIGHAND | CLONE_NEWPID}, "CLONE_SIGHAND|CLONE_NEWPID"),
        ({"flags": VMV | CLONE_THREAD | CLONE_SIGHAND, "exit_signal": 0}, "CLONE_THREAD"),
        ({"flags": VMV | CLONE_SETTLS}, "CLONE_SETTLS"),
        ({"flags": VMV, "set_tid": [12345]}, "set_tid"),
        ({"flags": VMV | pyclone.CLONE_NEWTIME}, "CLONE_NEWTIME"),
        ({"flags": VMV | pyclone.CLONE_CLEAR_SIGHAND}, "above the low 32"),
    ],
)
def test_unsafe_combinations_are_refused(healthy: Health, kwargs: Any, match: str) -> None:
    flags = kwargs.pop("flags")
    with pytest.raises(UnsupportedFlags, match=match.replace("|", r"\|")):
        pyclone.clone3(_noop, flags, **kwargs)
    with pytest.raises(UnsupportedFlags, match=match.replace("|", r"\|")):
        pyclone._pyclone.clone3(_noop, flags, **kwargs)  # the C layer checks too


def test_stack_size(healthy: Health) -> None:
    with pytest.raises(ValueError, match="too small"):
        pyclone.clone(_noop, VMV | signal.SIGCHLD, 256 * 1024)
    # a stack of its own, 8 MiB: deep C and Python recursion end in RecursionError
    for depth_test in ("json", "python"):

        def child(kind: str = depth_test) -> int:
            try:
                if kind == "json":
                    json.loads("[" * 100_000)
                else:
                    _behave("recursion", [])
            except RecursionError:
                return 42
            return 0

        pid = pyclone.clone(child, VMV | signal.SIGCHLD, 8 * MIB)
        assert reap(pid) == 42
        pid = pyclone.clone(child, VMV | signal.SIGCHLD)  # the default stack of its own
        assert reap(pid) == 42


def test_before_start_is_refused_with_vfork(healthy: Health) -> None:
    from pyclone.task import _spawn

    with pytest.raises(UnsupportedFlags, match="suspended"):
        _spawn(_noop, (), None, pyclone.CloneFlag(VMV), before_start=lambda task: None)


def test_refused_where_unsupported() -> None:
    """On free-threaded builds and unknown versions class B is refused, never attempted."""
    if vm_supported():
        assert sys.version_info[:2] in ((3, 10), (3, 11), (3, 12), (3, 13), (3, 14), (3, 15))
        return
    with pytest.raises(UnsupportedFlags, match="CLONE_VM with a Python callable"):
        pyclone.clone(_noop, VMV | signal.SIGCHLD)


def test_small_thread_stack_is_not_the_childs(healthy: Health) -> None:
    """From a thread with a 512 KiB stack, the child still gets 8 MiB of its own (or more)."""
    outcome: list[Any] = []

    def deep() -> int:
        try:
            json.loads("[" * 100_000)
        except RecursionError:
            return 42
        return 0

    def caller() -> None:
        for size in (0, 8 * MIB):
            box: list[int] = []

            def child(box: list[int] = box) -> int:
                box.append(os.getpid())
                return deep()

            pid = pyclone.clone(child, VMV | signal.SIGCHLD, size)
            outcome.append((reap(pid), box == [pid]))

    old = threading.stack_size(512 * 1024)
    try:
        t = threading.Thread(target=caller)
        t.start()
    finally:
        threading.stack_size(old)
    t.join(WAIT)
    assert not t.is_alive()
    assert outcome == [(42, True), (42, True)]
