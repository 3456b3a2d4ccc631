"""The Sandbox class: a checked sandbox description that can be started.

The options and their checks are :mod:`._description`'s; this class adds
:meth:`Sandbox.spawn` and :meth:`Sandbox.run`, which hand over to the launch
in :mod:`._run`, so that the launch and the child's setup can read a
description without importing what starts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..task import Task
from . import _run
from ._description import FIELDS, Description

if TYPE_CHECKING:
    import subprocess


class Sandbox(Description):
    """A reusable description of a sandbox: namespaces, filesystem view and limits.

    Every option is checked when the object is built (``TypeError`` for a
    wrong type, ``ValueError`` for a wrong value); lists are stored as
    tuples, so a Sandbox is hashable and picklable.  What each option does,
    in kernel terms:

    ``new``
        namespaces created with clone3 (``user``, ``pid``, ``mnt``, ``net``,
        ``uts``, ``ipc``, ``cgroup``, ``time``; ``"all"`` for every one).
        The default is bwrap's ``--unshare-all`` set plus ``mnt``.
    ``uid``, ``gid``
        the ids inside.  With a user namespace and no explicit maps the
        caller's euid/egid are mapped to them (default: the caller's own
        ids, as in bwrap); with explicit maps the task switches to them
        (default 0) with setresgid/setresuid before any other step.
        Without a user namespace (root only) the task switches to them with
        setresgid/setresuid after setup, dropping supplementary groups.
    ``uid_map``, ``gid_map``
        explicit ``(inside, outside, count)`` ranges written to
        ``/proc/PID/uid_map`` and ``gid_map`` by the parent before the child
        runs (several ranges need CAP_SETUID/CAP_SETGID over the parent user
        namespace).  ``/proc/PID/setgroups`` is always set to ``deny`` first,
        as the kernel requires of unprivileged gid maps.
    ``init``
        with a pid namespace (or ``lock_file``, ``sync_fd``): a minimal init
        is pid 1 (or the target's parent); it forks the target,
        reaps orphans, forwards HUP, INT, QUIT, TERM, USR1, USR2, WINCH,
        CONT and ALRM to it, and exits with its status (``128 + N`` when
        signal N killed it).  ``init=False`` makes the target itself pid 1.
    ``hostname``, ``domainname``
        sethostname(2)/setdomainname(2) in the new uts namespace.
    mounts
        the mount namespace is first made private (``MS_REC|MS_PRIVATE`` on
        ``/``).  With ``bind``, ``ro_bind``, ``dev_bind``, ``symlink`` or
        ``dev`` (or ``new_root=True``) a new root is assembled in an empty
        tmpfs and entered with pivot_root(2), the old root detached
        (``MNT_DETACH``); otherwise ``proc``, ``tmpfs`` and binds are
        mounted over the existing tree (whose mount points must exist).
        ``proc``: a new procfs (of the sandbox's pid namespace), or the
        host's /proc bound where the kernel refuses a new one (EPERM: an
        unprivileged sandbox without a pid namespace), with ``sys``,
        ``sysrq-trigger``, ``irq`` and ``bus`` bound read-only over
        themselves; ``dev``: a tmpfs with null, zero, full, random, urandom
        and tty bind-mounted (nosuid) from the host, a new devpts instance
        at ``pts`` with ``ptmx``, and a tmpfs at ``shm``; ``tmpfs``: empty
        tmpfs (mode 0755); ``bind``/``ro_bind``/``dev_bind``: recursive bind
        mounts of host paths, each mount (submounts too) remounted
        ``nosuid``, and ``nodev`` except for ``dev_bind``, ``ro_bind`` ones
        also ``MS_RDONLY``, keeping the flags the kernel locks; a file
        mount point is created with mode 0444; ``symlink``: ``(target,
        link)``.  These run parents first (by depth of the destination),
        mount points are created in the new root as needed.
    ``ops``
        filesystem operations applied after those, in the given order, as
        bwrap applies its command line (a later one covers an earlier one on
        the same or a parent destination): ``pyclone.sandbox.FsOp(kind,
        dest, source, mode, data, size, fd)`` entries or tuples, of the kinds
        above and ``bind_try``, ``ro_bind_try``, ``dev_bind_try`` (nothing
        when the source is missing), ``bind_fd``, ``ro_bind_fd`` (what
        descriptor ``fd`` is open on; the sandbox's copy is then closed),
        ``mqueue``, ``dir``, ``file``, ``bind_data``, ``ro_bind_data`` (a file
        of ``data`` bound there, unlinked), ``chmod`` and ``remount_ro`` (the
        mount at ``dest`` only); bind sources are resolved in the host's tree
        before the first operation, as bwrap resolves them;
        ``mode`` defaults as in bwrap (0755 for
        ``dir`` and ``tmpfs``, 0666 for ``file``, 0600 for the data binds),
        created parents get 0755 less what ``mode`` denies the group and
        others, and the umask is 0 until the command runs.  The overlay kinds
        ``overlay``, ``tmp_overlay`` and ``ro_overlay`` mount overlayfs over
        the host directories ``lower`` (lowest first, symbolic links resolved
        before the new root is entered), with the options bwrap gives
        (``,`` and ``:`` in paths escaped, ``userxattr``, which a user
        namespace needs); an ``overlay`` writes to ``source`` with
        ``workdir``, a ``tmp_overlay`` to a tmpfs no one else sees.
    ``net``
        a new network namespace holds only ``lo``, which is brought up
        (SIOCSIFFLAGS).
    ``die_with_parent``
        PR_SET_PDEATHSIG(SIGKILL), then a check that the creator is still
        alive (it may have died before the prctl).  The signal comes when
        the creating *thread* ends.
    ``no_new_privs``
        PR_SET_NO_NEW_PRIVS: execve never grants privileges (setuid bits and
        file capabilities are ignored).  On by default, as in bwrap.
    ``cap_drop``, ``cap_add``
        the capabilities the program keeps, by bwrap's rule: a root caller
        keeps its effective set, anyone else none at all (whatever the new
        user namespace gave); ``cap_drop`` (``"ALL"`` or names) is taken
        away first, then ``cap_add`` (``"ALL"`` or names) given.  Nothing the
        caller's bounding set lacks is ever kept.  As the last privileged
        step the bounding set is cut to the kept ones (PR_CAPBSET_DROP), the
        ambient set cleared, and the effective and permitted sets set to
        them (capset); the inheritable and ambient sets get them too for an
        unprivileged caller or when either option is given, so that they
        survive the exec of a non-root program.  The init (pid 1) keeps none.
    ``rlimits``
        ``{"nofile": (soft, hard), "core": 0, ...}`` set with setrlimit.
    ``new_session``
        setsid(2) before the init forks (the default), so that no process of
        the sandbox has the caller's terminal as its controlling terminal:
        the TIOCSTI ioctl, which pushes input into the controlling terminal
        (CVE-2017-5226), then fails with EPERM.  bwrap keeps the terminal
        unless given --new-session; ``new_session=False`` does the same
        (for an interactive shell with job control), at that risk where the
        kernel still allows TIOCSTI (``dev.tty.legacy_tiocsti=1``).
    ``clearenv``, ``setenv``, ``unsetenv``
        the environment of the command (or ``os.environ`` of the callable).
    ``close_fds``, ``pass_fds``
        close every inherited descriptor but 0, 1, 2 and ``pass_fds`` (for a
        callable also its result pipe and the descriptors behind
        ``sys.stdin``/``stdout``/``stderr``).
    ``chdir``, ``start_dirs``, ``export_pwd``
        working directory inside: ``chdir`` (its failure is an error), else
        the first of ``start_dirs`` the sandbox can enter (``pyclone run``
        gives the caller's directory and ``$HOME``, as bwrap tries them),
        else ``/`` after a new root and the caller's directory otherwise.
        With ``export_pwd`` the environment's ``PWD`` is set to it, after
        ``clearenv``, ``unsetenv`` and ``setenv``; by default it is left alone.
    ``memory_max``, ``pids_max``, ``cpu_max``
        limits applied with :class:`pyclone.Cgroup` (needs ``pyclone.cgroup``):
        bytes, tasks, and CPUs (a number, or a ``(quota_us, period_us)``
        pair).  The sandbox starts inside a new child cgroup of the caller's,
        removed when :meth:`run` returns (after :meth:`spawn`: when the Task
        is garbage-collected).
    ``lock_file``, ``sync_fd``
        paths (as the sandbox sees them) on which the init takes a read lock
        (``F_SETLK``), and a descriptor it keeps open, until the sandbox
        ends; either gives the sandbox an init even without a pid namespace
        (the target then dies with it, by PR_SET_PDEATHSIG), and neither
        reaches the command.  ``lock_file`` needs ``init=True``; with
        ``init=False`` the command holds ``sync_fd``.
    ``block_fd``
        a descriptor the sandbox reads one byte from (or EOF) once it has
        closed what it was not given, before the command runs.
    ``userns``, ``pidns``
        descriptors of namespaces (``/proc/PID/ns/user``, ``.../pid``) the
        sandbox joins instead of creating them: the child is cloned without
        namespaces, joins ``userns`` (``new`` must not hold ``"user"``) and
        creates those of ``new`` in it, then enters ``pidns`` (and a new pid
        namespace under it if ``new`` holds ``"pid"``) through a fork; the
        process left behind, the Task's, relays signals and the exit
        status, and what it forked dies with it.  The caller never joins.
    ``userns2``
        a user namespace the sandbox moves into once its mounts are made,
        before its ids and capabilities are settled (bwrap's ``--userns2``).
    ``disable_userns``, ``assert_userns_disabled``
        (with ``"user"`` in ``new``) once the mounts are made,
        ``user.max_user_namespaces`` of the sandbox's user namespace is set
        to 1 and the sandbox moves into a nested one that maps its own uid
        and gid to themselves: it cannot raise the limit back, and a further
        user namespace fails with ENOSPC.  ``assert_userns_disabled`` then
        tries to create one and fails the setup (step
        ``assert_userns_disabled``, no errno) if that works.  As bwrap's
        ``--disable-userns`` and ``--assert-userns-disabled``.
    ``userns_block_fd``
        (with ``"user"`` in ``new``, no ``uid_map``/``gid_map``) the id maps
        are left to whoever writes to this descriptor: the parent runs
        ``on_start`` (which gets the pid), then reads one byte (or EOF) from
        it before the child starts its setup; ``uid``/``gid``, if given, are
        then switched to.  bwrap's ``--userns-block-fd``.
    ``exec_label``, ``file_label``
        SELinux labels: refused (``ValueError``), as pyclone applies none.
    ``seccomp_deny``, ``seccomp_errno``
        a seccomp filter, built with libseccomp through the ``pyseccomp``
        package (extra ``pyclone[seccomp]``), that makes the named system
        calls fail with ``seccomp_errno`` (default EPERM).
    ``argv0``
        the ``argv[0]`` the command gets (bwrap's ``--argv0``); the program
        is still looked up by the command line's first word.
    ``forward_signals``
        while :meth:`run` waits (in the main thread), the caller passes on
        HUP, INT, QUIT, TERM, USR1, USR2, WINCH, CONT and ALRM it receives
        to the sandbox's first process (bwrap's ``--forward-signals``): the
        init, which forwards them to the target, or the target itself with
        ``init=False`` (as pid 1 it gets only those it has a handler for).
        The caller's handlers come back when :meth:`run` returns.
    ``seccomp_programs``
        caller-built classic-BPF seccomp programs (bwrap's ``--seccomp`` and
        ``--add-seccomp-fd``): one ``bytes`` or a sequence of them, each the
        raw ``struct sock_filter`` array (8 bytes an instruction, 1 to 4096
        of them) that ``seccomp_export_bpf`` writes.  They are loaded in
        order, after ``seccomp_deny``'s filter, as the last step before the
        command runs (so they need not allow the setup's system calls, only
        the status report's ``write`` and the ``execve``), and by the init
        too.  Loading needs ``no_new_privs`` (the default) unless the sandbox
        keeps ``CAP_SYS_ADMIN``; the kernel checks each program (EINVAL names
        the step ``seccomp_programs``).
    """

    def replace(self, **changes: Any) -> Sandbox:
        """A copy with the options in ``changes`` replaced, checked as when built.

        ``TypeError`` names an option that does not exist; the other errors
        are the constructor's.  The original is left as it was.
        """
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise TypeError(f"replace() got unknown options: {', '.join(unknown)}")
        return self.__class__(**{name: getattr(self, name) for name in FIELDS} | changes)

    # -- running -----------------------------------------------------------

    def spawn(
        self,
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
        result_limit: int | None = _run.DEFAULT_RESULT_LIMIT,
    ) -> Task:
        """Start ``target`` in the sandbox and return its :class:`Task`.

        ``target`` is a command line (a sequence of strings, searched in the
        sandbox's ``PATH``) or a Python callable run as
        ``target(*args, **kwargs)`` whose value comes back through
        :meth:`Task.result` as plain data only (builtin types and
        exceptions: the sandbox writes that pipe, and unpickling anything
        else could run its code in the caller).  A result larger than
        ``result_limit`` bytes once pickled (64 MiB by default; None for no
        limit) is refused unread: ``result()`` raises
        :class:`pyclone.ChildError` with its size, and the caller never
        holds more than the limit of what the sandbox sends.  It does not
        apply to a command line, which sends no result.
        ``stdin``/``stdout``/``stderr`` are descriptors (or objects with
        ``fileno()``) for the sandbox's 0, 1 and 2.

        Returns once every setup step succeeded and the command has been
        executed (or the callable is about to run).  ``allow_threads``
        is :func:`pyclone.spawn_task`'s opt-in for a multi-threaded caller.
        ``on_start(task)`` is called in the parent once the child exists
        (its namespaces created, its id maps written) and before it starts
        its setup: ``task.pid`` and ``/proc/PID/ns`` are then the sandbox's
        (``pyclone run --info-fd`` writes them there); if it raises, the
        child is killed and reaped and the exception propagates.
        ``parent_fds`` are descriptors the child closes first, before its
        setup: those only the caller writes to, such as a report ``on_start``
        writes (``pyclone run``'s ``--info-fd``, which bwrap's sandbox
        closes so), whose reader then sees their end once the caller closes
        them, even while the sandbox waits on ``userns_block_fd``.
        Raises
        :class:`SandboxError` naming the failed step otherwise, after
        killing and reaping what had been started.  ``forward_signals``
        is for :meth:`run` (ValueError here): the caller forwards while it waits;
        ``argv0`` for a command line (ValueError with a callable).
        """
        if self.forward_signals:
            raise ValueError("forward_signals works while run() waits: use run(), not spawn()")
        if self.argv0 is not None and callable(target):
            raise ValueError("argv0 is for a command line: a callable target is not executed")
        return _run.spawn(
            self,
            target,
            args,
            kwargs,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            allow_threads=allow_threads,
            on_start=on_start,
            parent_fds=parent_fds,
            result_limit=result_limit,
        )

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        capture_output: bool = False,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        check: bool = False,
        allow_threads: bool = False,
        on_start: Callable[[Task], None] | None = None,
        parent_fds: Iterable[int] = (),
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command in the sandbox and wait for it, like :func:`subprocess.run`.

        Returns a :class:`subprocess.CompletedProcess` (``returncode``
        negative when a signal killed the sandbox's pid 1, ``128 + N`` when
        it killed the target under the default init).  With
        ``capture_output`` its ``stdout`` and ``stderr`` are bytes.  On
        ``timeout`` the sandbox is killed and :class:`pyclone.TimeoutExpired`
        raised; with ``check`` a non-zero status raises
        :class:`subprocess.CalledProcessError`.  ``on_start`` and
        ``parent_fds`` are as for :meth:`spawn`.  The command starts with
        SIGPIPE and SIGXFSZ at their default actions (the interpreter ignores
        both for itself; :mod:`subprocess` and bwrap give them back too).
        """
        code, out, err = _run.run_command(
            self,
            argv,
            timeout=timeout,
            capture_output=capture_output,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            allow_threads=allow_threads,
            on_start=on_start,
            parent_fds=parent_fds,
        )
        import subprocess  # for its result type only: pyclone run needs the status alone

        done = subprocess.CompletedProcess(
            list(argv), code, out if capture_output else None, err if capture_output else None
        )
        if check:
            done.check_returncode()
        return done
