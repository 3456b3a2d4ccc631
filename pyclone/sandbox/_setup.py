"""The child's side of a sandbox: the setup steps from the new namespaces to the exec.

Everything the child needs is captured in a :class:`Plan` in the parent
before the clone; the steps run in plain Python over thin syscalls (mount,
pivot_root, prctl, capset) and each failure is reported as the step it was.
"""

from __future__ import annotations

import _socket
import contextlib
import fcntl
import os
import resource
import select
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .. import _pyclone, _transport
from .. import task as task_mod
from ..flags import CloneFlag
from ._caps import bound_caps, set_caps
from ._description import Description
from ._fsops import FsOp
from ._hold import after_fork, close_except, init_keeps, take_locks, wants_init
from ._init import await_init, fork_init
from ._join import join_namespaces, joins, switch_userns
from ._mounts import setup_mounts
from ._names import CAPABILITIES, RLIMITS
from ._nested import open_proc, restrict_userns
from ._seccomp import load as load_seccomp
from ._status import StepFailed, StepReporter, report

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class Plan(StepReporter):
    """Everything the child needs, captured in the parent before the clone.

    A plain class (not a dataclass, which would load ``inspect`` for the
    command line): the launch builds it with keywords.
    """

    def __init__(
        self,
        *,
        sandbox: Description,
        command: tuple[str, ...] | None,
        target: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stdio: tuple[int | None, ...],
        status_fd: int,
        status_r: int,
        life_r: int,
        life_w: int,
        cap_last: int,
        caps: int,
        caps_inheritable: bool,
        seccomp: Any,
        parent_fds: tuple[int, ...] = (),
        ops: list[FsOp] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.command = command
        self.target = target
        self.args = args
        self.kwargs = kwargs
        self.stdio = stdio
        self.status_fd = status_fd
        self.status_r = status_r
        self.life_r = life_r
        self.life_w = life_w
        self.cap_last = cap_last
        self.caps = caps
        self.caps_inheritable = caps_inheritable
        self.seccomp = seccomp
        #: The caller's descriptors the child closes first (see ``Sandbox.spawn``).
        self.parent_fds = parent_fds
        self.prefixes = ()
        #: The directory the command starts in once chosen (None: the caller's, unchanged).
        self.started_in: str | None = None
        #: The mount plan, made in the parent (see :func:`._mounts.setup_mounts`).
        self.ops: list[FsOp] = [] if ops is None else ops
        #: In the target under an init: its ready pipe (see :func:`._init.await_init`).
        self.init_ready: int | None = None

    def __repr__(self) -> str:
        return f"<pyclone.sandbox setup plan: command={self.command!r} {self.sandbox!r}>"

    # -- entry point ---------------------------------------------------------

    def child(self) -> Any:
        """Runs in the new task (after the parent wrote the maps)."""
        try:
            os.close(self.status_r)
            if self.life_w >= 0:
                os.close(self.life_w)
            if joins(self.sandbox):
                join_namespaces(self, self.sandbox, self.cap_last)
            proc_fd = open_proc(self, self.sandbox)  # the host's, before the mounts
            self.namespace_setup()
            switch_userns(self, self.sandbox)
            restrict_userns(self, self.sandbox, proc_fd)
            sb = self.sandbox
            if sb.new_session:
                # before the init forks, so that no process of the sandbox
                # keeps the caller's terminal (TIOCSTI injects into it)
                with self.step("setsid"):
                    os.setsid()
            if wants_init(sb):
                locks = take_locks(self, sb)
                self.init_ready = fork_init(
                    self, self.cap_last, init_keeps(sb, locks), sb.seccomp_programs
                )
                with self.step("init"):
                    after_fork(sb, locks)
            self.process_setup()
        except StepFailed:
            os._exit(127)
        if self.target is not None:
            os.close(self.status_fd)
            _transport.plain_results_only()
            return self.target(*self.args, **self.kwargs)
        self.execute()

    def close_parent_fds(self) -> None:
        """Before the gate (``child_prepare``): close the caller's own descriptors."""
        for fd in self.parent_fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # the same one given twice: closed already

    def namespace_setup(self) -> None:
        """The steps that act on the new namespaces, before the init forks."""
        sb = self.sandbox
        # maps written by whoever wrote to userns_block_fd: the ids asked for, if any
        waited = sb.userns_block_fd is not None
        if sb.gid_map or (waited and sb.gid is not None):
            with self.step("setresgid"):
                gid = 0 if sb.gid is None else sb.gid
                os.setresgid(gid, gid, gid)
        if sb.uid_map or (waited and sb.uid is not None):
            with self.step("setresuid"):
                uid = 0 if sb.uid is None else sb.uid
                os.setresuid(uid, uid, uid)
        if sb.die_with_parent:
            with self.step("die_with_parent"):
                _pyclone.prctl(_pyclone.PR_SET_PDEATHSIG, signal.SIGKILL)
                if select.select([self.life_r], [], [], 0)[0]:
                    os._exit(128 + signal.SIGKILL)  # the creator is already gone
                os.close(self.life_r)
        if sb._flags & CloneFlag.NEWNET:
            with self.step("loopback"):
                _loopback_up()
        if sb.hostname is not None:
            with self.step("hostname"):
                _socket.sethostname(sb.hostname)
        if sb.domainname is not None:
            with self.step("domainname"):
                _pyclone.setdomainname(sb.domainname)
        if sb._flags & CloneFlag.NEWNS:
            setup_mounts(self, sb, self.ops)

    # -- per-process steps ------------------------------------------------------

    def process_setup(self) -> None:
        """The steps after the namespaces (and the init), then the ``ok`` report."""
        sb = self.sandbox
        self.session_and_files()
        with self.step("bounding set"):
            bound_caps(self.caps, self.cap_last)
        self.switch_ids()
        self.restrict()
        self.prune_fds()
        if sb.block_fd is not None:
            # after prune_fds: while it waits, the sandbox holds none of the caller's others
            with self.step("block_fd"):
                os.read(sb.block_fd, 1)  # until data or EOF, as bwrap's --block-fd
                if sb.block_fd not in sb.pass_fds:
                    os.close(sb.block_fd)
        if self.init_ready is not None:
            # Late, so that the init's steps overlap the target's; before the
            # caller's filters, which need not allow this read.
            with self.step("init ready"):
                await_init(self.init_ready)
                self.init_ready = None
        if self.command is not None:
            # The interpreter ignores SIGPIPE and SIGXFSZ for itself, and an
            # ignored signal stays ignored across an exec: the command gets
            # their default actions back, as subprocess and bwrap give them
            # (`yes | head -1` ends `yes` by SIGPIPE, not by EPIPE errors).
            # Before the caller's filters, which need not allow rt_sigaction.
            with self.step("signals"):
                for signum in _PYTHON_IGNORES:
                    signal.signal(signum, signal.SIG_DFL)
        if self.seccomp is not None:
            with self.step("seccomp"):
                self.seccomp.load()
        if sb.seccomp_programs:
            # last before the exec, as bwrap loads them: the caller's filters need
            # not allow the setup's system calls (only the report's write, the exec)
            with self.step("seccomp_programs"):
                load_seccomp(sb.seccomp_programs)
        with self.step("report"):
            report(self.status_fd, ("ok",))

    def session_and_files(self) -> None:
        """rlimits and the standard descriptors."""
        sb = self.sandbox
        for name, soft, hard in sb.rlimits:
            with self.step(f"rlimit {name}"):
                resource.setrlimit(RLIMITS[name], (soft, hard))
        for fd, target in zip(self.stdio, (0, 1, 2), strict=True):
            if fd is not None and fd != target:
                with self.step("stdio"):
                    os.dup2(fd, target)

    def start_dir(self) -> None:
        """Change to ``chdir``, else the first of ``start_dirs`` there is, else the default."""
        sb = self.sandbox
        if sb.chdir is not None:
            with self.step("chdir"):
                os.chdir(sb.chdir)
            self.started_in = sb.chdir
            return
        for candidate in sb.start_dirs:
            try:
                os.chdir(candidate)
            except OSError:
                continue  # not there (or not enterable) in the sandbox: the next one
            self.started_in = candidate
            return
        if sb._root_mode():
            with self.step("chdir"):
                os.chdir("/")
            self.started_in = "/"

    def switch_ids(self) -> None:
        """Without a user namespace: the ids inside, with no supplementary groups."""
        sb = self.sandbox
        # a joined user namespace may deny setgroups (as one of bwrap's does)
        joined = sb._flags & CloneFlag.NEWUSER or sb.userns is not None
        if not joined and (sb.uid is not None or sb.gid is not None):
            with self.step("setgroups"):
                os.setgroups([])
        if sb.uid not in (None, 0) and self.caps and not sb._flags & CloneFlag.NEWUSER:
            with self.step("keepcaps"):
                # leaving uid 0 clears the permitted set, which must still
                # hold what cap_add keeps
                _pyclone.prctl(_pyclone.PR_SET_KEEPCAPS, 1)
        if sb.gid is not None and not sb._flags & CloneFlag.NEWUSER:
            with self.step("setresgid"):
                os.setresgid(sb.gid, sb.gid, sb.gid)
        if sb.uid is not None and not sb._flags & CloneFlag.NEWUSER:
            with self.step("setresuid"):
                os.setresuid(sb.uid, sb.uid, sb.uid)

    def restrict(self) -> None:
        """The sandbox's capabilities only, no new privileges; then its directory, environment."""
        sb = self.sandbox
        with self.step("capabilities"):
            set_caps(self.caps, self.caps_inheritable, self.cap_last)
        if sb.no_new_privs:
            with self.step("no_new_privs"):
                _pyclone.prctl(_pyclone.PR_SET_NO_NEW_PRIVS, 1)
        # With the sandbox's own ids and capabilities, as bwrap: a directory
        # only the caller's privileges could enter is not one to start in.
        self.start_dir()
        with self.step("environment"):
            self.environment()

    def prune_fds(self) -> None:
        """Close what the sandbox was not given; make ``pass_fds`` survive the exec."""
        sb = self.sandbox
        passed = sb.pass_fds
        if sb.sync_fd is not None and not wants_init(sb):
            passed += (sb.sync_fd,)  # no init to hold it: the command does, as in bwrap
        if sb.close_fds:
            with self.step("close_fds"):
                keep = {0, 1, 2, self.status_fd, *passed}
                if self.init_ready is not None:
                    keep.add(self.init_ready)  # read (and closed) later
                if sb.block_fd is not None:
                    keep.add(sb.block_fd)  # read (and closed) next
                if self.target is not None:
                    # the callable's result channel, and what sys.std* write to
                    if task_mod._child_result_fd is not None:
                        keep.add(task_mod._child_result_fd)
                    keep |= _std_fds()
                close_except(keep)
        for fd in passed:
            with self.step("pass_fds"):
                os.set_inheritable(fd, True)

    def environment(self) -> None:
        sb = self.sandbox
        if sb.clearenv:
            os.environ.clear()
        for name in sb.unsetenv:
            os.environ.pop(name, None)
        for name, value in sb.setenv:
            os.environ[name] = value
        if sb.export_pwd:
            # after every other environment option, as bwrap sets it
            os.environ["PWD"] = self.started_in or os.getcwd()

    def execute(self) -> NoReturn:
        assert self.command is not None
        try:
            argv = list(self.command)
            if self.sandbox.argv0 is not None:
                argv[0] = self.sandbox.argv0  # the program is still found by its own name
            os.execvpe(self.command[0], argv, dict(os.environ))
        except OSError as exc:
            with contextlib.suppress(StepFailed):
                self.fail("exec", exc.errno, exc.strerror or str(exc), self.command[0], None)
        os._exit(127)


#: The signals CPython sets to SIG_IGN at start-up (a command gets them back: process_setup).
_PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)


def cap_last() -> int:
    """The highest capability number this kernel knows (read in the parent)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


def _loopback_up() -> None:
    """Bring up ``lo``, the only interface of a new network namespace."""
    # _socket, the C module: socket.py would add 3-4 ms of imports (its enums)
    # to every program that loads the sandbox, for one ioctl
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifreq = bytearray(struct.pack("16sH22x", b"lo", 0))
        fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, ifreq, True)
        (flags,) = struct.unpack_from("H", ifreq, 16)
        struct.pack_into("H", ifreq, 16, flags | _IFF_UP)
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, ifreq, True)
    finally:
        sock.close()


def _std_fds() -> set[int]:
    fds = set()
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            fds.add(stream.fileno())
    return fds
