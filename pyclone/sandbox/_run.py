"""Launching a sandbox and waiting for it: the parent's side of ``spawn`` and ``run``.

The parent prepares what the child cannot (the seccomp filter, the cgroup,
the status pipe), clones it through :mod:`pyclone.task` with the namespaces
of the description, writes the id maps while the child waits on the gate,
then reads the child's setup report before returning the task.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .. import errors
from .. import task as task_mod
from .._checks import positional_args
from ..cgroup import Cgroup
from ..flags import CloneFlag
from ..task import Task
from ._caps import kept_caps, sets_inheritable
from ._checks import check_fds
from ._description import Description
from ._forward import forwarding
from ._hold import held_fds
from ._join import clone_flags, joins
from ._mounts import operations
from ._setup import Plan, cap_last
from ._status import SandboxError, await_status, parent_step
from ._userns import write_maps

#: The largest result a sandboxed callable may send back by default, in bytes.
DEFAULT_RESULT_LIMIT = 64 << 20


def spawn(
    sb: Description,
    target: Callable[..., Any] | Sequence[str],
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    allow_threads: bool = False,
    on_start: Callable[[Task], None] | None = None,
    parent_fds: Iterable[int] = (),
    result_limit: int | None = DEFAULT_RESULT_LIMIT,
) -> Task:
    """:meth:`Sandbox.spawn`: prepare in the parent, launch, return once set up."""
    command = _check_target(target)
    _check_result_limit(result_limit)
    args = positional_args(args)
    parent = check_fds(parent_fds, "parent_fds")
    stdio = tuple(
        _fileno(s, n) for s, n in ((stdin, "stdin"), (stdout, "stdout"), (stderr, "stderr"))
    )
    for fd in (*sb.pass_fds, *held_fds(sb)):
        os.fstat(fd)  # an EBADF here beats a puzzling one in the child
    seccomp_filter = _seccomp_filter(sb) if sb.seccomp_deny else None
    cgroup = _open_cgroup(sb)
    # the bind sources relative to the caller's directory, made absolute here
    ops = operations(sb, os.getcwd()) if sb._flags & CloneFlag.NEWNS else []
    status_r, status_w = os.pipe()
    last = cap_last()
    caps = kept_caps(sb, last)
    life_r, life_w = os.pipe() if sb.die_with_parent else (-1, -1)
    plan = Plan(
        sandbox=sb,
        command=command,
        target=None if command is not None else target,  # type: ignore[arg-type]
        args=args,
        kwargs=dict(kwargs or {}),
        stdio=stdio,
        status_fd=status_w,
        status_r=status_r,
        life_r=life_r,
        life_w=life_w,
        ops=ops,
        cap_last=last,
        caps=caps,
        caps_inheritable=sets_inheritable(sb),
        seccomp=seccomp_filter,
        parent_fds=parent,
    )
    try:
        task = _launch(sb, plan, cgroup, allow_threads, on_start, result_limit)
    except BaseException:
        if cgroup is not None:
            cgroup.__exit__(None, None, None)
        raise
    finally:
        os.close(status_r)
        if life_w >= 0:
            os.close(life_w)
    if cgroup is not None:
        # Removed once the task object goes away (run() removes it at once).
        weakref.finalize(task, _close_cgroup, cgroup)
        task.cgroup = cgroup  # type: ignore[attr-defined]
    return task


def _launch(
    sb: Description,
    plan: Plan,
    cgroup: Cgroup | None,
    allow_threads: bool,
    on_start: Callable[[Task], None] | None,
    result_limit: int | None,
) -> Task:
    """Clone the child and read its setup report; kill and reap it if setup failed."""

    # A child that joins namespaces makes its own after the gate: the hook then
    # waits for the end of its setup, so that it sees them.  With userns_block_fd
    # (which excludes joining a user namespace) it runs first, since whoever writes
    # to that descriptor needs the pid to write the maps.
    waits = sb.userns_block_fd is not None
    late = joins(sb) and not waits

    reached: list[bool] = []

    def before_start(task: Task) -> None:
        reached.append(True)
        if sb._flags & CloneFlag.NEWUSER and not waits:
            write_maps(sb, task.pid)
        if on_start is not None and not late:
            on_start(task)
        if sb.userns_block_fd is not None:
            with parent_step("userns_block_fd"):
                os.read(sb.userns_block_fd, 1)  # until data or EOF, as bwrap

    try:
        task = task_mod._spawn(
            plan.child,
            (),
            None,
            clone_flags(sb),
            exit_signal=signal.SIGCHLD,
            before_start=before_start,
            allow_threads=allow_threads,
            cgroup=cgroup,
            # before the gate: the caller's reports must not wait for the child's setup
            child_prepare=plan.close_parent_fds if plan.parent_fds else None,
            # a command's setup reports its failures itself and ends in the exec
            outcome=plan.target is not None,
        )
    except OSError as exc:
        if reached or cgroup is not None or isinstance(exc, SandboxError):
            raise  # the hooks' own errors, or a cgroup placement's
        # the kernel refused the clone itself (its namespaces: ENOSPC past a limit)
        raise SandboxError("clone", exc.errno, exc.strerror or str(exc)) from exc
    finally:
        os.close(plan.status_fd)
        if plan.life_r >= 0:
            os.close(plan.life_r)
    # What the sandbox sends back is not trusted: plain data only, never a pickle
    # that names a callable for this process to call, and never more of it
    # than the caller agreed to hold.
    task._plain_result = True
    task._result_limit = result_limit
    try:
        try:
            await_status(plan.status_r, task)
        finally:
            if on_start is not None and late:
                on_start(task)
    except BaseException:
        task.kill()
        task.wait()
        task.close()
        raise
    return task


def run_command(
    sb: Description,
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    capture_output: bool = False,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    allow_threads: bool = False,
    on_start: Callable[[Task], None] | None = None,
    parent_fds: Iterable[int] = (),
) -> tuple[int, bytes, bytes]:
    """:meth:`Sandbox.run` up to its result: the exit status, and what was captured (else b"")."""
    if _check_target(argv) is None:
        raise TypeError("run() takes a command line; use spawn() for a callable")
    deadline = None
    if timeout is not None:
        deadline = time.monotonic() + timeout
        errors.TimeoutExpired  # noqa: B018  (imports subprocess now, not once the time is up)
    pipes: list[tuple[int, int]] = []
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr cannot be given with capture_output")
        pipes = [os.pipe(), os.pipe()]
        stdout, stderr = pipes[0][1], pipes[1][1]
    with forwarding(sb.forward_signals) as forwarder:
        started = on_start if forwarder is None else _also(forwarder.started, on_start)
        try:
            task = spawn(
                sb,
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                allow_threads=allow_threads,
                on_start=started,
                parent_fds=parent_fds,
            )
        except BaseException:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            raise
        out, err = _finish(task, pipes, deadline, timeout)
    code = task.returncode
    assert code is not None
    return code, out, err


def _also(
    first: Callable[[Task], None], then: Callable[[Task], None] | None
) -> Callable[[Task], None]:
    """An on_start callback that calls ``first``, then ``then`` (the caller's, if any)."""

    def both(task: Task) -> None:
        first(task)
        if then is not None:
            then(task)

    return both


def _finish(
    task: Task, pipes: list[tuple[int, int]], deadline: float | None, timeout: float | None
) -> tuple[bytes, bytes]:
    """Read the captured output, wait for the task (killed on any error), remove its cgroup."""
    out = b""
    err = b""
    with task:
        try:
            if pipes:
                for _, w in pipes:
                    os.close(w)
                out, err = _collect(pipes[0][0], pipes[1][0], deadline, task.pid, timeout)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            task.wait(remaining)
        except BaseException:
            task.kill()
            raise
        finally:
            for r, _ in pipes:
                os.close(r)
        cgroup = getattr(task, "cgroup", None)
        if cgroup is not None:
            _close_cgroup(cgroup)
    return out, err


# -- what the parent prepares ------------------------------------------------------


def _check_target(target: Any) -> tuple[str, ...] | None:
    """The command line, or None for a callable; TypeError otherwise."""
    if callable(target):
        return None
    if isinstance(target, (str, bytes)):
        raise TypeError("give the command as a list of arguments, e.g. ['sh', '-c', 'true']")
    if not isinstance(target, Sequence) or not target:
        raise TypeError(f"target must be a callable or a non-empty command line, not {target!r}")
    argv = tuple(os.fspath(a) for a in target)
    if not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise TypeError(f"command line arguments must be str without NUL, not {target!r}")
    return argv


def _check_result_limit(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"result_limit must be an int (bytes) or None, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"result_limit must be at least 0 bytes, not {value}")


def _fileno(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        fd = value
    elif hasattr(value, "fileno"):
        fd = int(value.fileno())
    else:
        raise TypeError(f"{name} must be a descriptor or a file object, not {value!r}")
    os.fstat(fd)
    return fd


def _seccomp_filter(sb: Description) -> Any:
    # pyseccomp (and libseccomp behind it) is an optional extra, needed only
    # by a sandbox with seccomp_deny: imported when one is spawned.
    try:
        import pyseccomp  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "Sandbox(seccomp_deny=...) needs the pyseccomp package "
            "(pip install 'pyclone[seccomp]') and the libseccomp library"
        ) from exc
    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in sb.seccomp_deny:
        try:
            flt.add_rule(pyseccomp.ERRNO(sb.seccomp_errno), name)
        except Exception as exc:
            raise ValueError(f"seccomp_deny: libseccomp does not know {name!r}: {exc}") from exc
    return flt


def _open_cgroup(sb: Description) -> Cgroup | None:
    if not (sb.memory_max or sb.pids_max or sb.cpu_max):
        return None
    cg = Cgroup(memory_max=sb.memory_max, pids_max=sb.pids_max, cpu_max=sb.cpu_max)
    cg.__enter__()
    return cg


def _close_cgroup(cgroup: Any) -> None:
    with contextlib.suppress(Exception):
        cgroup.__exit__(None, None, None)


def _collect(
    out_fd: int, err_fd: int, deadline: float | None, pid: int, timeout: float | None
) -> tuple[bytes, bytes]:
    """Read the captured stdout and stderr until both end (or the deadline passes)."""
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    open_fds = {out_fd, err_fd}
    while open_fds:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise errors.TimeoutExpired(pid, timeout or 0.0)
        ready, _, _ = select.select(list(open_fds), [], [], remaining)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.discard(fd)
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd])
