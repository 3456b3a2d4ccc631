"""``pyclone run``: bubblewrap-style options made into a Sandbox; its exit status."""

from __future__ import annotations

import argparse
import errno as errno_mod
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import _pyclone
from .._helpformat import RawDescriptionHelpFormatter
from . import _cli_errors, _cli_seccomp, _cli_status, _cli_userns
from ._cli_ops import add_filesystem_options, check_modifiers, filesystem
from ._hold import read_to_end
from ._mounts import operations
from ._names import DEFAULT_NEW
from ._run import run_command
from ._spec import Sandbox
from ._status import SandboxError

_HELP = """\
Run COMMAND in a sandbox built from Linux namespaces, like bubblewrap (bwrap).
Options use bwrap's spelling.  As in bwrap, the filesystem options are
applied in command-line order (a later one covers an earlier one on the
same or a parent destination), --perms and --size apply to the option right
after them, and the other options can be given in any order.  The ids
inside are the caller's (--uid/--gid choose others), an unprivileged caller
keeps no capability (--cap-add grants some), root keeps its own (--cap-drop
removes some) and never one its bounding set lacks; the root is a new,
empty one holding only what the filesystem options put there.
Differences from bwrap:
a mount namespace is always created, a new terminal session is the default
(--no-new-session keeps the caller's terminal, and with it TIOCSTI),
--memory-max, --pids-max, --seccomp-deny and --distinct-exit-codes are
pyclone's own, and a descriptor given by number (--info-fd, --sync-fd, ...)
must be open.  The exit status is COMMAND's (128+N if signal N killed it),
or 1 when anything went wrong before it ran, as bwrap's
(--distinct-exit-codes tells those failures apart).

example (bwrap --unshare-all --ro-bind /usr /usr ... sh):
  pyclone run --unshare-all --ro-bind /usr /usr \\
      --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \\
      --proc /proc --dev /dev --tmpfs /tmp -- sh -c 'id -u; hostname'
"""


_PARSING = """\
Parsing follows bwrap: options end at the first argument that is not one (or
at --); options are never abbreviated; --args FD reads more options, NUL
separated, from file descriptor FD at that place.
"""


class _RunParser(argparse.ArgumentParser):
    """bwrap's parsing rules on top of argparse: ``--args FD`` and unknown options."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        self._diagnostics_from(words)
        expanded = self._expand(words, in_file=False)
        self._diagnostics_from(expanded)
        check_modifiers(expanded, self._arity, self.error)
        parsed, extras = super().parse_known_args(expanded, namespace)
        if extras:
            # The top-level parser would report these with its own usage line, which does
            # not say that ``run`` refused them (bwrap: "Unknown option --foo").
            self.error(f"Unknown option {extras[0]}")
        return parsed, extras

    def _diagnostics_from(self, args: list[str]) -> None:
        """Read the options that shape errors before parsing (an error may come first)."""
        options = self._options(args)
        self.level_prefix = "--level-prefix" in options
        self.distinct_exit_codes = "--distinct-exit-codes" in options

    def error(self, message: str) -> NoReturn:
        """argparse's usage and message (after ``<3>`` with --level-prefix), bwrap's status."""
        self.print_usage(sys.stderr)
        prefix = getattr(self, "level_prefix", False)
        text = _cli_errors.diagnostic(self.prog, f"error: {message}", level_prefix=prefix)
        distinct = getattr(self, "distinct_exit_codes", False)
        self.exit(_cli_errors.failure_status(distinct, _cli_errors.USAGE), text + "\n")

    def _options(self, args: list[str]) -> list[str]:
        """The option words of ``args`` (not their values), up to the command."""
        out: list[str] = []
        i = 0
        while i < len(args) and args[i] != "--" and args[i].startswith("-"):
            out.append(args[i])
            i += 1 + self._arity(args[i])
        return out

    def _arity(self, arg: str) -> int:
        """How many values follow option ``arg`` on a bwrap-style command line."""
        for action in self._actions:
            if arg in action.option_strings:
                nargs = action.nargs
                if isinstance(nargs, int):
                    return nargs
                return 1 if nargs is None else 0
        return 0  # unknown (argparse names it) or ``--opt=value``

    def _expand(self, args: list[str], *, in_file: bool) -> list[str]:
        """``args`` with each ``--args FD`` replaced by the options FD holds."""
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--" or not arg.startswith("-"):
                if in_file:
                    # bwrap reads only options from the file; what follows is dropped.
                    return out
                out.extend(args[i:])
                return out
            if arg == "--args":
                if in_file:
                    self.error("--args not supported in arguments file")
                if i + 1 >= len(args):
                    self.error("--args takes an argument")
                out.extend(self._expand(self._read_args(args[i + 1]), in_file=True))
                i += 2
                continue
            width = 1 + self._arity(arg)
            out.extend(args[i : i + width])
            i += width
        return out

    def _read_args(self, text: str) -> list[str]:
        """The NUL-separated arguments of file descriptor ``text`` (read to EOF, closed)."""
        if not text.isdigit():
            self.error(f"Invalid fd: {text}")
        fd = int(text)
        try:
            data = read_to_end(fd)
            os.close(fd)
        except OSError as exc:
            self.error(f"Can't read --args data: {exc.strerror}")
        if data.endswith(b"\0"):
            data = data[:-1]
        return [os.fsdecode(word) for word in data.split(b"\0")] if data else []


class _LastChdirWins(argparse.Action):
    """``--chdir``: a repeated one replaces the earlier one, with bwrap's warning."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is not None:
            prefix = getattr(parser, "level_prefix", False)
            text = "Only the last --chdir option will take effect"
            line = _cli_errors.diagnostic(
                parser.prog, text, level_prefix=prefix, level=_cli_errors.LOG_WARNING
            )
            print(line, file=sys.stderr)
        setattr(namespace, self.dest, values)


class _Version(argparse.Action):
    """``--version``: pyclone's version, looked up when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        # The package sets __version__ after importing this module, so it is read from the
        # loaded package when asked for rather than imported (which would be a cycle).
        version = getattr(sys.modules[__name__.partition(".")[0]], "__version__", "unknown")
        print(f"pyclone {version}")  # on stdout, as bwrap and argparse's version do
        parser.exit(0)


def add_parser(subparsers: Any) -> None:
    """Add ``run`` to the ``pyclone`` command line."""
    # add_parser builds every subparser from this attribute (add_subparsers' documented
    # parser_class); only ``run`` needs bwrap's parsing rules, so it is swapped for it alone.
    default_class = subparsers._parser_class
    subparsers._parser_class = _RunParser
    try:
        p = subparsers.add_parser(
            "run",
            help="run a command in a sandbox (bubblewrap-style options)",
            description=_HELP + "\n" + _PARSING,
            formatter_class=RawDescriptionHelpFormatter,
            usage="%(prog)s [OPTIONS...] [--] COMMAND [ARGS...]",
            allow_abbrev=False,
        )
    finally:
        subparsers._parser_class = default_class
    p.add_argument("--version", action=_Version, help="print pyclone's version and exit")
    p.add_argument(
        "--args",
        metavar="FD",
        help="parse NUL-separated options read from file descriptor FD, here",
    )
    _add_namespace_options(p.add_argument_group("namespaces"))
    _add_filesystem_options(
        p.add_argument_group("filesystem (all in a new root, empty but for these)")
    )
    _add_process_options(p.add_argument_group("process"))
    _cli_status.add_options(p.add_argument_group("given namespaces, locks and status"))
    _cli_userns.add_options(p.add_argument_group("user namespaces inside, labels"))
    _add_limit_options(p.add_argument_group("limits (pyclone)"))
    _cli_seccomp.add_options(p.add_argument_group("system call filters"))
    p.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="COMMAND", help="command and arguments"
    )
    p.set_defaults(func=main)


def _add_namespace_options(ns: Any) -> None:
    ns.add_argument(
        "--unshare-all", action="store_true", help="unshare user, ipc, pid, net, uts, cgroup"
    )
    ns.add_argument(
        "--share-net", action="store_true", help="keep the host network (with --unshare-all)"
    )
    for name in ("user", "ipc", "pid", "net", "uts", "cgroup", "time"):
        ns.add_argument(
            f"--unshare-{name}", action="store_true", help=f"create a new {name} namespace"
        )
    for name in ("user", "cgroup"):
        ns.add_argument(
            f"--unshare-{name}-try",
            action="store_true",
            help=f"create a new {name} namespace if the kernel allows it",
        )
    ns.add_argument("--uid", type=int, metavar="UID", help="uid inside (default: the caller's)")
    ns.add_argument("--gid", type=int, metavar="GID", help="gid inside (default: the caller's)")
    ns.add_argument("--hostname", metavar="NAME", help="hostname inside (needs --unshare-uts)")
    ns.add_argument("--as-pid-1", action="store_true", help="COMMAND is pid 1 (no init process)")
    ns.add_argument(
        "--forward-signals",
        action="store_true",
        help="pass HUP, INT, QUIT, TERM, USR1, USR2, WINCH, CONT and ALRM sent to this "
        "process on to the sandbox (its init, or COMMAND with --as-pid-1)",
    )


def _add_filesystem_options(fs: Any) -> None:
    add_filesystem_options(fs)
    fs.add_argument("--chdir", action=_LastChdirWins, metavar="DIR", help="change directory to DIR")


class _Once(argparse.Action):
    """``--argv0``: given at most once (bwrap refuses a second one)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} used multiple times")
        setattr(namespace, self.dest, values)


def _add_process_options(pr: Any) -> None:
    pr.add_argument("--argv0", action=_Once, metavar="VALUE", help="argv[0] of COMMAND")
    pr.add_argument(
        "--level-prefix",
        action="store_true",
        help="put syslog's level before each diagnostic (<3> errors, <4> warnings)",
    )
    pr.add_argument(
        "--distinct-exit-codes",
        action="store_true",
        help="exit 2 for a refused command line, 125 when the setup failed, 126 when "
        "COMMAND could not be executed, 127 when it was not found (pyclone's; default: "
        "1 for each, as bwrap)",
    )
    pr.add_argument(
        "--die-with-parent", action="store_true", help="kill the sandbox when this process dies"
    )
    pr.add_argument(
        "--new-session",
        dest="new_session",
        action="store_const",
        const=True,
        default=True,
        help="create a new terminal session (setsid; the default, see --no-new-session)",
    )
    pr.add_argument(
        "--no-new-session",
        dest="new_session",
        action="store_const",
        const=False,
        help="keep the caller's terminal session, as bwrap does without --new-session "
        "(the sandbox can then push input into the terminal with TIOCSTI)",
    )
    pr.add_argument(
        "--cap-drop",
        action="append",
        default=[],
        metavar="CAP",
        help="drop capability CAP (or ALL) from those root keeps",
    )
    pr.add_argument(
        "--cap-add",
        action="append",
        default=[],
        metavar="CAP",
        help="keep capability CAP (or ALL) inside",
    )
    pr.add_argument(
        "--setenv",
        nargs=2,
        action="append",
        default=[],
        metavar=("VAR", "VALUE"),
        help="set VAR to VALUE",
    )
    pr.add_argument("--unsetenv", action="append", default=[], metavar="VAR", help="unset VAR")
    pr.add_argument("--clearenv", action="store_true", help="start from an empty environment")


def _add_limit_options(lim: Any) -> None:
    lim.add_argument(
        "--memory-max", type=_size, metavar="BYTES", help="memory limit (K, M, G suffixes)"
    )
    lim.add_argument("--pids-max", type=int, metavar="N", help="limit on tasks in the sandbox")
    lim.add_argument(
        "--seccomp-deny",
        action="append",
        default=[],
        metavar="SYSCALL",
        help="make SYSCALL fail with EPERM",
    )


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(digits) * scale


def sandbox_from_args(args: argparse.Namespace) -> Sandbox:
    """The :class:`Sandbox` a ``pyclone run`` command line describes."""
    new = {"mnt"}
    if os.geteuid() != 0:
        new.add("user")  # as bwrap does for unprivileged callers
    if args.unshare_all:
        new |= DEFAULT_NEW
        if args.share_net:
            new.discard("net")
    for name in ("user", "ipc", "pid", "net", "uts", "cgroup", "time"):
        if getattr(args, f"unshare_{name}"):
            new.add(name)
    if args.unshare_user_try and _user_namespaces_enabled():
        new.add("user")
    if args.unshare_cgroup_try and os.path.exists("/proc/self/ns/cgroup"):
        new.add("cgroup")
    new = _cli_status.namespaces(args, new)
    return Sandbox(
        new=new,
        new_root=True,  # as in bwrap: nothing of the host's tree unless asked for
        uid=args.uid,
        gid=args.gid,
        hostname=args.hostname,
        init=not args.as_pid_1,
        argv0=args.argv0,
        forward_signals=args.forward_signals,
        **filesystem(args),
        chdir=args.chdir,
        start_dirs=_start_dirs(args) if args.chdir is None else (),
        export_pwd=True,  # bwrap sets PWD to where the command starts, over --clearenv
        # bwrap passes on every descriptor it inherited without close-on-exec
        # (`bwrap ... cat <&5` reads the caller's 5); it closes only those its
        # options consume, and so do the options here
        close_fds=False,
        die_with_parent=args.die_with_parent,
        new_session=args.new_session,
        cap_drop=args.cap_drop,
        cap_add=args.cap_add,
        # export_pwd sets PWD after these, so what they say of it does not matter
        setenv=[tuple(p) for p in args.setenv if p[0] != "PWD"],
        unsetenv=[name for name in args.unsetenv if name != "PWD"],
        clearenv=args.clearenv,
        memory_max=args.memory_max,
        pids_max=args.pids_max,
        seccomp_deny=args.seccomp_deny,
        **_cli_status.sandbox_options(args),
        **_cli_seccomp.sandbox_options(args),
        **_cli_userns.sandbox_options(args),
    )


def _die_with_parent() -> None:
    """This process too dies with its parent (as bwrap does), taking the sandbox with it.

    The sandbox's own PR_SET_PDEATHSIG follows this process; without this
    one a killed caller of ``pyclone run`` would leave it running.
    """
    parent = os.getppid()
    _pyclone.prctl(_pyclone.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _user_namespaces_enabled() -> bool:
    """bwrap's test for ``--unshare-user-try``: the kernel has user namespaces, not disabled."""
    if not os.path.exists("/proc/self/ns/user"):
        return False
    if _read_setting("/sys/module/user_namespace/parameters/enable").startswith("N"):
        return False  # RHEL 7's module switch
    return _read_setting("/proc/sys/user/max_user_namespaces") != "0"


def _read_setting(path: str) -> str:
    """A kernel setting's text, stripped; empty when the file is absent or unreadable."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_dirs(args: argparse.Namespace) -> tuple[str, ...]:
    """Where bwrap starts the command without --chdir: the caller's directory, else $HOME.

    Each is tried in the new root in turn (``/`` when neither is there); $HOME is
    the command's, after --clearenv, --unsetenv and --setenv.
    """
    env = {} if args.clearenv else dict(os.environ)
    for name in args.unsetenv:
        env.pop(name, None)
    env.update(dict(args.setenv))
    dirs = (_caller_dir(), env.get("HOME", ""))
    return tuple(d for d in dirs if d.startswith("/") and "\0" not in d)


def _caller_dir() -> str:
    """The caller's directory as get_current_dir_name(3) names it ($PWD if it is that one)."""
    try:
        here = os.stat(".")
        pwd = os.environ.get("PWD", "")
        if pwd.startswith("/") and os.path.samestat(os.stat(pwd), here):
            return pwd
    except OSError:
        pass
    try:
        return os.getcwd()
    except OSError:
        return ""  # removed: bwrap's old_cwd cannot be entered either


def _undo_locale_coercion() -> None:
    """Drop the LC_CTYPE that the interpreter itself added to this process's environment.

    In the C locale CPython sets ``LC_CTYPE=C.UTF-8`` for itself and its
    children at start-up (PEP 538); bwrap's command would not get it.  It
    counts as added when the environment this program was started with
    (``/proc/self/environ``, which setenv(3) does not change) had none.
    """
    if "LC_CTYPE" not in os.environ:
        return
    try:
        with open("/proc/self/environ", "rb") as f:
            initial = f.read().split(b"\0")
    except OSError:
        return  # cannot tell: keep it
    if not any(entry.startswith(b"LC_CTYPE=") for entry in initial):
        del os.environ["LC_CTYPE"]


def main(args: argparse.Namespace) -> int:
    """``pyclone run``: build the sandbox, run the command, return its status."""
    _undo_locale_coercion()
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    prog = args.prog

    def say(text: str) -> None:
        print(_cli_errors.diagnostic(prog, text, level_prefix=args.level_prefix), file=sys.stderr)

    def failed(kind: int) -> int:
        return _cli_errors.failure_status(args.distinct_exit_codes, kind)

    if not command:
        say("no COMMAND given (see --help)")
        return failed(_cli_errors.USAGE)
    try:
        sandbox = sandbox_from_args(args)
        reports = _cli_status.Reports.from_args(args)
    except (TypeError, ValueError, ImportError) as exc:
        say(str(exc))
        return failed(_cli_errors.USAGE)
    if args.die_with_parent:
        _die_with_parent()
    try:
        code, _, _ = run_command(
            sandbox,
            command,
            on_start=lambda task: reports.started(sandbox, task),
            parent_fds=reports.fds(),
        )
    except SandboxError as exc:
        ops = operations(sandbox, _caller_dir() or "/")
        say(_cli_errors.message(exc, ops, sandbox.hostname))
        if exc.step == "exec":
            missing = exc.errno == errno_mod.ENOENT
            return failed(_cli_errors.NOT_FOUND if missing else _cli_errors.CANNOT_EXECUTE)
        return failed(_cli_errors.SETUP_FAILED)
    except (OSError, RuntimeError, ValueError, ImportError) as exc:
        # e.g. pyclone.CgroupUnavailable (a RuntimeError) for --memory-max
        say(str(exc))
        return failed(_cli_errors.SETUP_FAILED)
    code = 128 - code if code < 0 else code
    reports.exited(code)
    return code
