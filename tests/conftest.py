"""Shared fixtures: a parent-health snapshot taken around every test that asks for it,
and helpers the tests share (forked runs, reaping, an interpreter uid 65534 can run)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import faulthandler
import functools
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pyclone import _pyclone

#: Upper bound for any wait in the tests (seconds): a hang is a failure, not a stall.
WAIT = 20.0


_GLIBC_INTERNAL = (1 << 31) | (1 << 32)


def _status_fields() -> dict[str, str]:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("SigBlk", "SigIgn", "SigCgt"):
                # glibc installs handlers for its internal signals 32 and 33
                # (SIGCANCEL, SIGSETXID) when the process starts its first thread
                fields[key] = f"{int(value, 16) & ~_GLIBC_INTERNAL:016x}"
    return fields


def _zombies() -> list[int]:
    """Children of this process that are zombies (from /proc/self/task/*/children)."""
    children: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                children.update(int(pid) for pid in f.read().split())
        except OSError:
            continue
    found = []
    for pid in sorted(children):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "Z":
            found.append(pid)
    return found


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class Health:
    """What a spawn must leave unchanged in the parent."""

    tstate: int
    fds: frozenset[int]
    threads: int
    python_threads: int
    signals: tuple[tuple[str, str], ...]
    cwd: str
    umask: int

    @classmethod
    def take(cls) -> Health:
        return cls(
            tstate=_pyclone._tstate_id(),
            fds=frozenset(int(fd) for fd in os.listdir("/proc/self/fd")),
            threads=len(os.listdir("/proc/self/task")),
            python_threads=threading.active_count(),
            signals=tuple(sorted(_status_fields().items())),
            cwd=os.getcwd(),
            umask=_umask(),
        )


def check_interpreter() -> None:
    """Assert the interpreter's own structures are intact (research section 6).

    Holding the GIL by this thread's PyGILState slot; every frame object
    reachable by the collector can be walked through ``f_back`` with its
    line number and locals; ``sys._current_frames()`` and
    ``faulthandler.dump_traceback(all_threads=True)`` work.  A thread state
    or frame chain left dangling by a child crashes here.
    """
    assert ctypes.pythonapi.PyGILState_Check() == 1
    for obj in gc.get_objects():
        if isinstance(obj, types.FrameType):
            frame: types.FrameType | None = obj
            while frame is not None:
                assert frame.f_lineno is None or frame.f_lineno >= 0
                frame.f_locals  # noqa: B018 - reading is the check
                frame = frame.f_back
    frames = sys._current_frames()
    assert threading.get_ident() in frames
    with tempfile.TemporaryFile() as out:
        faulthandler.dump_traceback(out, all_threads=True)
        out.seek(0)
        assert b"most recent call first" in out.read()


def _without_alarm(signals: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``signals`` with SIGALRM's caught bit cleared (pytest-timeout's handler)."""
    bit = 1 << (signal.SIGALRM - 1)
    return tuple(
        (key, f"{int(value, 16) & ~bit:016x}" if key == "SigCgt" else value)
        for key, value in signals
    )


def check_health(before: Health, *, test_failed: bool = False) -> None:
    """Assert the parent is as it was: same thread state, fds, threads, signals, cwd, umask.

    After a failed test, pytest-timeout has already removed its SIGALRM
    handler (it stops its timer when a test fails), so SIGALRM's handler is
    not compared then: the failure, not a leak, is what to report.
    """
    gc.collect()
    check_interpreter()
    after = Health.take()
    # A thread that was joined may still be leaving the kernel's task list for a
    # few microseconds (pthread_join semantics): give it time before judging.
    deadline = time.monotonic() + 2.0
    while after.threads > before.threads and time.monotonic() < deadline:
        time.sleep(0.001)
        after = Health.take()
    # listdir's own descriptor may differ between the two snapshots
    assert after.fds - before.fds <= {max(after.fds)}, f"leaked fds {after.fds - before.fds}"
    assert after.tstate == before.tstate
    # fewer is fine: a thread of an earlier test was still leaving at the first snapshot
    assert after.threads <= before.threads, "threads left running"
    assert after.python_threads == before.python_threads
    if test_failed:
        assert _without_alarm(after.signals) == _without_alarm(before.signals)
    else:
        assert after.signals == before.signals
    assert after.cwd == before.cwd
    assert after.umask == before.umask
    assert _zombies() == [], "zombie children left behind"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Mark a test whose call failed, for :func:`healthy`'s check after it."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def healthy(request: pytest.FixtureRequest) -> Iterator[Health]:
    """Snapshot the parent before the test and check it is unchanged after."""
    before = Health.take()
    yield before
    check_health(before, test_failed=request.node.stash.get(_CALL_FAILED, False))


def become_nobody() -> None:
    """Drop to uid/gid 65534 like a process a normal user started.

    A process that changed ids is not dumpable (its /proc files, its
    children's uid_map among them, then stay root's); a real login of
    65534 is, so make it so again.
    """
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    _pyclone.prctl(4, 1)  # PR_SET_DUMPABLE


def require_root(reason: str = "needs root (CAP_SYS_ADMIN in the initial user namespace)") -> None:
    """Skip unless running as root."""
    if os.geteuid() != 0:
        pytest.skip(reason)


def userns_available() -> bool:
    """Can this process create a user namespace?  Checked against the kernel."""
    import pyclone

    try:
        with pyclone.spawn_task(lambda: 0, new="user") as task:
            return task.wait(WAIT) == 0
    except OSError:
        return False


def reap(pid: int, timeout: float = WAIT, *, options: int = 0) -> int:
    """Wait (with a timeout) for child ``pid`` and return its wait status.

    Uses a pidfd to wait with a deadline; on timeout the child is killed,
    reaped, and the test fails.
    """
    import select

    flags = options | _pyclone.WALL
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, flags)
            pytest.fail(f"child {pid} did not end within {timeout} s")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, flags)
    return status


def run_forked(fn: Callable[[], object], timeout: float = WAIT) -> object:
    """Run ``fn()`` in a forked child of the test and return what it returns.

    For tests that change process-wide state the test process must keep
    (a seccomp filter, dropped privileges, signal masks) or whose tasks
    would be reaped by the test's parent (CLONE_PARENT).  The child's
    return value comes back pickled; an exception in it fails the test
    with the child's traceback.  The child is always reaped.
    """
    import pickle
    import select
    import traceback

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(r)
        try:
            try:
                outcome: tuple[str, object] = ("ok", fn())
            except BaseException:
                outcome = ("error", traceback.format_exc())
            try:
                data = pickle.dumps(outcome)
            except Exception:
                data = pickle.dumps(("error", f"unpicklable result {outcome!r}"))
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                break
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    status = reap(pid, timeout)
    assert os.waitstatus_to_exitcode(status) == 0, f"forked child ended with status {status}"
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "error":
        pytest.fail(f"in the forked child:\n{value}")
    return value


#: The directory the pyclone under test is imported from (the checkout, for an editable install).
PYCLONE_PATH = os.path.dirname(os.path.dirname(os.path.realpath(_pyclone.__file__)))


def fresh_python(code: str, timeout: float = WAIT * 3) -> str:
    """Run ``code`` in a new ``-I -S`` interpreter (nothing loaded beyond start-up) that
    imports the pyclone under test; assert it exits 0 and return its stdout."""
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys\nsys.path[:0] = sys.argv[1:]\n{code}",
            PYCLONE_PATH,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Watchdog(Exception):
    """What :func:`watchdog`'s SIGALRM handler raises."""


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise :class:`Watchdog` in this thread if the block lasts more than ``seconds``.

    For the waits a test makes without a timeout on purpose: the handler
    raising ends them, as any signal handler that raises does.
    """

    def fire(signum: int, frame: object) -> None:
        raise Watchdog(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sigwait_info(signum: int, timeout: float = WAIT) -> tuple[int, int, int, int] | None:
    """sigtimedwait(2) for a blocked ``signum``: (si_signo, si_code, si_pid, si_value) or None.

    :func:`signal.sigtimedwait` does not expose ``si_value``, so this calls
    the C library directly (x86_64/aarch64 siginfo layout: si_pid at 16,
    si_value at 24 for queued signals).
    """
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    sigset = (ctypes.c_ulong * 16)()
    sigset[(signum - 1) // 64] |= 1 << ((signum - 1) % 64)
    info = ctypes.create_string_buffer(128)

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    ts = Timespec(int(timeout), int((timeout % 1) * 1e9))
    got = libc.sigtimedwait(ctypes.byref(sigset), info, ctypes.byref(ts))
    if got < 0:
        return None
    signo, _errno, code = struct.unpack_from("<iii", info.raw, 0)
    pid = struct.unpack_from("<i", info.raw, 16)[0]
    value = struct.unpack_from("<q", info.raw, 24)[0]
    return signo, code, pid, value


NOBODY = 65534

#: What the copy of an interpreter for uid 65534 leaves out of the standard library.
_STDLIB_UNNEEDED = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages")


@functools.cache
def unprivileged_python() -> str:
    """An interpreter uid 65534 can run, of this one's version and build (debug or not).

    The base interpreter of this one (a virtual environment's ``bin/python``
    only links to it) when uid 65534 can run it and read its standard
    library, as it can /usr/bin's.  Otherwise (pyenv's live under /root,
    which only root may enter) a copy made once per session in a
    world-readable temporary directory: the executable, its libpython and the
    standard library, hard-linked where the file system allows.  It has none
    of this interpreter's site-packages, so the caller puts a copy of pyclone
    that uid 65534 can read on ``PYTHONPATH``.  Skips the test if neither runs.
    """
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    base = os.path.join(sys.base_prefix, "bin", version + sys.abiflags)
    if not os.access(base, os.X_OK):
        base = os.path.realpath(sys.executable)
    if os.geteuid() != 0 or _runs_as_nobody(base):
        return base
    copy = _world_readable_copy(base, version)
    if not _runs_as_nobody(copy):
        pytest.skip(f"no interpreter like {sys.executable} that uid {NOBODY} can run")
    return copy


def _runs_as_nobody(python: str) -> bool:
    """Does ``python`` start as uid 65534 and say it is this interpreter's version and build?"""
    want = f"{sys.version_info[:2]} {sys.abiflags!r}"
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[:2], repr(sys.abiflags))"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == want


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _world_readable_copy(base: str, version: str) -> str:
    """Copy ``base``'s interpreter to a temporary prefix; return a script that runs it.

    The executable finds its standard library next to itself (``../lib``),
    but its libpython through the build's absolute RUNPATH, under the
    directory uid 65534 cannot enter: the script points LD_LIBRARY_PATH,
    which takes precedence over RUNPATH, at the copy.
    """
    prefix = tempfile.mkdtemp(prefix="pyclone-python-")
    atexit.register(shutil.rmtree, prefix, ignore_errors=True)
    os.chmod(prefix, 0o755)
    home = os.path.dirname(os.path.dirname(base))
    os.makedirs(os.path.join(prefix, "bin"), mode=0o755)
    os.makedirs(os.path.join(prefix, "lib"), mode=0o755)
    executable = os.path.join(prefix, "bin", os.path.basename(base))
    _link_or_copy(base, executable)
    for name in os.listdir(os.path.join(home, "lib")):
        if name.startswith(f"lib{version}"):
            _link_or_copy(os.path.join(home, "lib", name), os.path.join(prefix, "lib", name))
    shutil.copytree(
        os.path.join(home, "lib", version),
        os.path.join(prefix, "lib", version),
        ignore=lambda _dir, names: [n for n in names if n in _STDLIB_UNNEEDED],
        copy_function=_link_or_copy,
        symlinks=True,
    )
    for dirpath, _dirnames, _filenames in os.walk(prefix):
        os.chmod(dirpath, 0o755)
    script = os.path.join(prefix, "bin", "python")
    with open(script, "w") as f:
        f.write(
            "#!/bin/sh\n"
            f"LD_LIBRARY_PATH={prefix}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}} "
            f'exec {executable} "$@"\n'
        )
    os.chmod(script, 0o755)
    return script
