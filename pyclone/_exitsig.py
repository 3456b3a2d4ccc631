"""The exit-signal policy: refuse an exit signal whose arrival would end or stop the caller.

When a task ends, the kernel sends its exit signal to the creator.  If the
creator's disposition of that signal is the default and the default action
terminates, dumps core or stops (SIGTERM, SIGUSR1, SIGHUP, SIGALRM, the
real-time signals, SIGSTOP, ...), the task's end kills or stops the caller.
:func:`check_exit_signal` refuses such a signal with a :class:`ValueError`
that names it and the fix, unless the caller opts in with
``allow_fatal_exit_signal=True`` (for a caller that blocks the signal and
collects it with :func:`signal.sigtimedwait`, say).  The disposition is read
from the kernel, so handlers installed from C count, and signals the
:mod:`signal` module cannot name (32, 33) are judged too.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable

from . import _pyclone
from .flags import CloneFlag

__all__ = ["DEFAULT_ACTIONS", "check_exit_signal", "default_action", "exit_signal_danger"]

_SIG_DFL = 0
_SIG_IGN = 1

#: The default action of each standard signal (signal(7)); 32..64 terminate.
DEFAULT_ACTIONS: dict[int, str] = {
    signal.SIGHUP: "terminate",
    signal.SIGINT: "terminate",
    signal.SIGQUIT: "dump core",
    signal.SIGILL: "dump core",
    signal.SIGTRAP: "dump core",
    signal.SIGABRT: "dump core",
    signal.SIGBUS: "dump core",
    signal.SIGFPE: "dump core",
    signal.SIGKILL: "terminate",
    signal.SIGUSR1: "terminate",
    signal.SIGSEGV: "dump core",
    signal.SIGUSR2: "terminate",
    signal.SIGPIPE: "terminate",
    signal.SIGALRM: "terminate",
    signal.SIGTERM: "terminate",
    16: "terminate",  # SIGSTKFLT (the signal module has no name for it on every version)
    signal.SIGCHLD: "ignore",
    signal.SIGCONT: "continue",
    signal.SIGSTOP: "stop",
    signal.SIGTSTP: "stop",
    signal.SIGTTIN: "stop",
    signal.SIGTTOU: "stop",
    signal.SIGURG: "ignore",
    signal.SIGXCPU: "dump core",
    signal.SIGXFSZ: "dump core",
    signal.SIGVTALRM: "terminate",
    signal.SIGPROF: "terminate",
    signal.SIGWINCH: "ignore",
    signal.SIGIO: "terminate",
    signal.SIGPWR: "terminate",
    signal.SIGSYS: "dump core",
}

# Signals whose default action leaves the receiver running.
_HARMLESS_DEFAULT = frozenset(
    s for s, act in DEFAULT_ACTIONS.items() if act in ("ignore", "continue")
)
# What each default action does to the caller, for the messages.
_EFFECT = {
    "terminate": "terminate the caller",
    "dump core": "kill the caller with a core dump",
    "stop": "stop the caller",
}
_THREAD_OR_PARENT = int(CloneFlag.THREAD | CloneFlag.PARENT)
_SIGHAND = int(CloneFlag.SIGHAND)


def default_action(signum: int) -> str:
    """The kernel's default action for ``signum`` (1..64): terminate, dump core, stop, ...."""
    return DEFAULT_ACTIONS.get(signum, "terminate")


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, ``SIGRTMIN+3`` for 37, ``signal 32`` for what has no name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        pass
    if signal.SIGRTMIN < signum <= signal.SIGRTMAX:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
    return f"signal {signum}"


def exit_signal_danger(signum: int, *, becomes_default: bool = False) -> str | None:
    """Why ``signum`` arriving now would end or stop the caller, or None when it is safe.

    ``becomes_default``: the task itself resets the (shared) disposition to
    ``SIG_DFL`` before it ends, so judge the default action whatever the
    disposition is now.
    """
    if signum in _HARMLESS_DEFAULT:
        return None
    name = signal_name(signum)
    action = _EFFECT[default_action(signum)]
    if signum in (signal.SIGKILL, signal.SIGSTOP):
        return f"{name} can have no handler and cannot be ignored: it would {action}"
    if becomes_default:
        return (
            f"the task resets {name} to SIG_DFL in the handler table it shares with the "
            f"caller, and {name}'s default action would then {action}"
        )
    disposition = _pyclone._signal_disposition(signum)
    if disposition == _SIG_IGN:
        return None
    if disposition == _SIG_DFL:
        return f"the caller's disposition of {name} is SIG_DFL, which would {action}"
    if signum == signal.SIGINT and signal.getsignal(signum) is signal.default_int_handler:
        return (
            "the caller's SIGINT handler is Python's default one, which would raise "
            "KeyboardInterrupt in it"
        )
    return None


def check_exit_signal(
    exit_signal: int,
    flags: int,
    *,
    allow: bool,
    signal_steps: Iterable[tuple[str, int]] = (),
    what: str = "exit_signal={name}",
) -> None:
    """Raise :class:`ValueError` if the task's exit signal would end or stop the caller.

    ``exit_signal`` is the signal number (for clone(2), the flags' low
    byte); ``flags`` the clone flags (with CLONE_THREAD or CLONE_PARENT the
    kernel sends the creator no signal of this task's choosing, so nothing
    is checked).  ``allow`` is the caller's ``allow_fatal_exit_signal``.
    ``signal_steps`` lists an action's ``(op, signum)`` signal steps: under
    CLONE_SIGHAND a ``default_signal`` step on the exit signal counts.
    ``what`` spells the argument in the message (``{name}``: the signal).
    Values outside 1..64 are left to the other checks (the kernel refuses
    them in clone3, and sends nothing for them from clone(2)).
    """
    if type(allow) is not bool:
        raise TypeError(f"allow_fatal_exit_signal must be a bool, not {type(allow).__name__}")
    if allow or isinstance(exit_signal, bool) or not isinstance(exit_signal, int):
        return  # a wrong type is the other checks' to report
    if not 1 <= exit_signal <= 64 or exit_signal == signal.SIGCHLD:
        return
    bits = int(flags)
    if bits & _THREAD_OR_PARENT:
        return
    resets = bits & _SIGHAND != 0 and any(
        op == "default_signal" and sig == exit_signal for op, sig in signal_steps
    )
    why = exit_signal_danger(exit_signal, becomes_default=resets)
    if why is None:
        return
    name = signal_name(exit_signal)
    if resets:
        fix = "drop that step, or use SIGCHLD or 0"
    elif exit_signal in (signal.SIGKILL, signal.SIGSTOP):
        fix = "use SIGCHLD or 0"
    else:
        fix = (
            f"install a handler first (signal.signal({_spelled(exit_signal)}, handler)) "
            "or ignore it, or use SIGCHLD or 0"
        )
    raise ValueError(
        f"{what.format(name=name)} is refused: the kernel sends it to the caller when the "
        f"task ends, and {why}; {fix} (or pass allow_fatal_exit_signal=True if you block "
        "and collect it yourself)"
    )


def _spelled(signum: int) -> str:
    try:
        return f"signal.{signal.Signals(signum).name}"
    except ValueError:
        return str(signum)
