"""Shared helpers of the sandbox tests: running a check as uid 65534, the bwrap-like sandbox.

Isolation checks run as root and, where the kernel allows it, as uid 65534
(a forked child that drops its ids and reports back through a pipe).
"""

from __future__ import annotations

import atexit
import contextlib
import encodings.idna  # noqa: F401  (uid 65534 cannot import from /root's stdlib later)
import fcntl
import functools
import os
import pickle
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from pyclone import Sandbox

from conftest import WAIT, become_nobody, require_root, unprivileged_python

NOBODY = 65534
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: bwrap's example sandbox (--unshare-all, a read-only /usr, /proc, /dev, /tmp), as one expression
BWRAP_LIKE = dict(
    new="all",
    ro_bind=[("/usr", "/usr")],
    symlink=[("usr/bin", "/bin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64")],
    proc="/proc",
    dev="/dev",
    tmpfs=["/tmp"],
)
BWRAP_ARGS = [
    "--unshare-all",
    "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/bin", "/bin",
    "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64",
    "--proc", "/proc",
    "--dev", "/dev",
    "--tmpfs", "/tmp",
]  # fmt: skip


# -- running a check as an unprivileged user ------------------------------------


def read_until_eof(fd: int, deadline: float) -> bytes:
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no answer from the unprivileged child in time")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(data)
        data += chunk


def reap_before(pid: int, deadline: float) -> int:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not end in time")
        time.sleep(0.01)


def in_fork(fn: Callable[..., Any], *args: Any, who: str = "root") -> Any:
    """Run fn(*args) in a forked child (as uid 65534 if ``who`` is "nobody"); return its value.

    The child, not the test process, then becomes whatever fn makes it (a
    subreaper, the parent of stray tasks), so the test process stays clean.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            if who == "nobody":
                become_nobody()
            outcome: tuple[Any, ...] = ("ok", fn(*args))
        except BaseException as exc:
            outcome = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        try:
            data = pickle.dumps(outcome)
        except Exception as exc:
            data = pickle.dumps(("error", f"unpicklable: {exc}", ""))
        with contextlib.suppress(OSError):
            os.write(w, data)
        os._exit(0)
    os.close(w)
    deadline = time.monotonic() + WAIT
    try:
        data = read_until_eof(r, deadline)
    finally:
        os.close(r)
        reap_before(pid, deadline)
    outcome = pickle.loads(data)
    if outcome[0] == "error":
        raise AssertionError(f"as {who}: {outcome[1]}\n{outcome[2]}")
    return outcome[1]


def as_nobody(fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a forked child running as uid/gid 65534; return its value."""
    return in_fork(fn, *args, who="nobody")


def _userns_probe() -> bool:
    try:
        return Sandbox(new="user", no_new_privs=False).spawn(lambda: 0).result(WAIT) == 0
    except OSError:
        return False


_NOBODY_USERNS: bool | None = None


def require_nobody_userns() -> None:
    """Skip unless uid 65534 can create user namespaces here."""
    global _NOBODY_USERNS
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to uid 65534 for the unprivileged run")
    if _NOBODY_USERNS is None:
        _NOBODY_USERNS = bool(as_nobody(_userns_probe))
    if not _NOBODY_USERNS:
        pytest.skip("unprivileged user namespaces are disabled on this kernel")


def run_as(who: str, fn: Callable[..., Any], *args: Any) -> Any:
    if who == "root":
        require_root()
        return fn(*args)
    require_nobody_userns()
    return as_nobody(fn, *args)


WHO = pytest.mark.parametrize("who", ["root", "nobody"])


@contextlib.contextmanager
def shared_dir(owner: int = NOBODY, mode: int = 0o755) -> Iterator[str]:
    """A temporary directory owned by ``owner`` (so uid 65534 can use it)."""
    path = tempfile.mkdtemp(prefix="pyclone-sandbox-")
    try:
        os.chown(path, owner, owner)
        os.chmod(path, mode)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def setuid_root_copy(program: str, directory: str) -> str:
    """A copy of ``program`` in ``directory``, owned by root with the setuid bit set."""
    copy = os.path.join(directory, os.path.basename(program))
    shutil.copy(program, copy)
    os.chown(copy, 0, 0)
    os.chmod(copy, 0o4755)
    return copy


# -- the command line, pyclone's and bwrap's ---------------------------------------

_TREE: list[str] = []


def readable_tree() -> str:
    """A copy of the built package that uid 65534 can read, for its PYTHONPATH (made once)."""
    if not _TREE:
        path = tempfile.mkdtemp(prefix="pyclone-tree-")
        atexit.register(shutil.rmtree, path, True)
        shutil.copytree(os.path.join(ROOT_DIR, "pyclone"), os.path.join(path, "pyclone"))
        for dirpath, _dirnames, filenames in os.walk(path):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
        _TREE.append(path)
    return _TREE[0]


def require_bwrap() -> str:
    """bwrap's path; skips the comparison when it is not installed (CI installs it)."""
    path = shutil.which("bwrap")
    if path is None:
        pytest.skip("bwrap is not installed: nothing to compare with")
    return path


@functools.cache
def bwrap_version() -> tuple[int, ...]:
    """The installed bwrap's version, as numbers (``bwrap --version``: "bubblewrap 0.8.0")."""
    out = subprocess.run(
        [require_bwrap(), "--version"], capture_output=True, text=True, timeout=WAIT, check=False
    ).stdout
    return tuple(int(part) for part in out.split()[-1].split(".") if part.isdigit())


def run_tool(
    who: str, tool: str, *args: str, data: Sequence[bytes] = ()
) -> subprocess.CompletedProcess[str]:
    """``pyclone run ARGS`` (tool "pyclone") or ``bwrap ARGS`` (tool "bwrap") as root or 65534.

    Each of ``data`` is readable from descriptor 3, 4, ... of the command.
    """
    if who == "nobody":
        require_nobody_userns()
        extra: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    else:
        require_root()
        extra = {}
    if tool == "bwrap":
        argv = [require_bwrap(), *args]
        env = dict(os.environ)
    else:
        python = unprivileged_python() if who == "nobody" else sys.executable
        argv = [python, "-m", "pyclone", "run", *args]
        env = dict(os.environ, PYTHONPATH=readable_tree() if who == "nobody" else ROOT_DIR)
    fds: list[int] = []
    try:
        for chunk in data:
            r, w = os.pipe()
            os.write(w, chunk)  # small: fits in the pipe
            os.close(w)
            # above 3, 4, ... so that the shell's moves below never clobber one another
            fds.append(fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 100))
            os.close(r)
        if fds:
            moves = " ".join(f"{n}<&{fd} {fd}<&-" for n, fd in enumerate(fds, start=3))
            argv = ["bash", "-c", f'exec "$@" {moves}', "bash", *argv]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=env,
            cwd="/",
            check=False,
            pass_fds=fds,
            **extra,
        )
    finally:
        for fd in fds:
            os.close(fd)


def wait_until(predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds; fail the case (naming ``what``) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def lock_is_held(path: str) -> bool:
    """Does another process hold a POSIX lock on ``path``?  (``F_GETLK``: takes no lock.)

    Upstream's lockf-n.py probes by taking the lock, which can make a bwrap
    starting at that moment fail (so upstream restarts it in a loop); asking
    with F_GETLK never races with the sandbox.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    finally:
        os.close(fd)
    return bool(struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK)


def gone(pid: int) -> bool:
    """Has ``pid`` ended (gone, or a zombie its new parent has yet to reap)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True
