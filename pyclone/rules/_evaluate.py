"""Evaluating a request against the rule model: the errno, the failing rule, the words.

:func:`predict_errno`, :func:`failing_rule` and :func:`explain` walk the
predicted rules of :data:`pyclone.rules.RULES` in order; the first failing
one decides.  :func:`rule_for_errno` words the OSError of a real call.
"""

from __future__ import annotations

import os
import signal

from ..flags import SINGLE_FLAGS, flag_names
from ._caller import CallerState
from ._effects import _EFFECTS
from ._model import _CLONE3_KNOWN, _PREDICTED, F, Rule
from ._request import _MASK64, Call, _call


def failing_rule(
    flags: int,
    *,
    api: str = "clone",
    exit_signal: int | None = None,
    privileged: bool | CallerState | None = None,
) -> Rule | None:
    """The first kernel check that rejects this request, or None if it passes.

    Arguments as for :func:`predict_errno`.
    """
    call = _call(flags, api, exit_signal, privileged)
    return _first_failure(call)


def _first_failure(call: Call) -> Rule | None:
    for rule in _PREDICTED:
        if rule.fails(call):
            return rule
    return None


def predict_errno(
    flags: int,
    *,
    api: str = "clone",
    exit_signal: int | None = None,
    privileged: bool | CallerState | None = None,
) -> int:
    """The errno the kernel returns for this request, or 0 if it would accept it.

    ``api="clone"``: ``flags`` is the clone(2) word, exit signal in its low
    byte (or given as ``exit_signal``); the kernel ignores the upper 32
    bits.  ``api="clone3"``: ``flags`` is the 64-bit clone_args.flags and
    ``exit_signal`` is separate (None means SIGCHLD).  ``privileged=None``
    reads the calling thread's state (:meth:`CallerState.current`);
    True/False assume a root caller with every capability / an unprivileged
    one without any; a :class:`CallerState` is taken as given.

    >>> from pyclone import CloneFlag as F
    >>> predict_errno(F.SIGHAND)
    22
    >>> predict_errno(F.NEWNET, privileged=False)
    1
    >>> predict_errno(F.NEWUSER | F.NEWNET, privileged=False)
    0
    """
    rule = failing_rule(flags, api=api, exit_signal=exit_signal, privileged=privileged)
    return 0 if rule is None else rule.errno


def rule_for_errno(err: int, flags: int, *, api: str, exit_signal: int | None) -> str | None:
    """The name of the rule that explains ``err`` for this request, or None.

    Used to word the :class:`OSError` that :func:`pyclone.clone` raises: the
    model is asked with the caller's real state, and its rule is named only
    when it predicts exactly this errno.  Never raises.
    """
    try:
        rule = failing_rule(flags, api=api, exit_signal=exit_signal)
    except Exception:
        return None
    if rule is None or rule.errno != err:
        return None
    return rule.name


def _signal_name(sig: int) -> str:
    if sig == 0:
        return "0 (no signal)"
    try:
        return f"{signal.Signals(sig).name} ({sig})"
    except ValueError:
        return str(sig)


def explain(
    flags: int,
    *,
    api: str = "clone",
    exit_signal: int | None = None,
    privileged: bool | CallerState | None = None,
) -> str:
    """Say in words what the request asks for and whether the kernel accepts it.

    One line per flag (what it shares or creates), the exit signal, and the
    verdict: the rule that rejects the request, with its errno, or that the
    kernel would accept it.  Arguments as for :func:`predict_errno`.

    >>> from pyclone import CloneFlag as F
    >>> print(explain(F.SIGHAND | 17, privileged=True))
    clone(CLONE_SIGHAND, exit_signal=17) by a privileged caller:
      CLONE_SIGHAND: shares the signal handlers
      exit signal: SIGCHLD (17)
    rejected: EINVAL (Invalid argument): CLONE_SIGHAND requires CLONE_VM [P4, ...]
    """
    call = _call(flags, api, exit_signal, privileged)
    if privileged is None:
        who = f"this caller ({call.caller.describe()})"
    elif privileged is True:
        who = "a privileged caller"
    elif privileged is False:
        who = "an unprivileged caller"
    else:
        who = f"a caller with {call.caller.describe()}"
    spelled = flag_names(call.flags, api="clone3")
    lines = [f"{api}({spelled}, exit_signal={call.exit_signal}) by {who}:"]
    for bit in SINGLE_FLAGS:
        if call.flags & int(bit):
            effect, where, _ = _EFFECTS[bit]
            note = " [clone3 only]" if where == "clone3" else ""
            lines.append(f"  CLONE_{bit.name}: {effect}{note}")
    unknown = call.flags & ~_CLONE3_KNOWN & _MASK64
    if unknown:
        lines.append(f"  {unknown:#x}: bits unknown to this model")
    if api == "clone" and flags >> 32:
        lines.append(f"  {flags >> 32 << 32:#x}: ignored, clone(2) keeps only the low 32 bits")
    ignored = " (the low byte is ignored)" if api == "clone" else ""
    if call.any(F.THREAD):
        lines.append(f"  exit signal: none, a thread is not waited for{ignored}")
    elif call.any(F.PARENT):
        lines.append(f"  exit signal: the creator's own, sent to the creator's parent{ignored}")
    elif 0 < call.exit_signal <= 64:
        lines.append(f"  exit signal: {_signal_name(call.exit_signal)}")
    elif call.exit_signal == 0:
        lines.append("  exit signal: none (wait with __WALL)")
    elif api == "clone":
        lines.append(
            f"  exit signal: {call.exit_signal} is not a signal: none is sent (wait with __WALL)"
        )
    rule = _first_failure(call)
    if rule is None:
        lines.append("accepted: the kernel would create the task")
    else:
        lines.append(
            f"rejected: {rule.errno_name} ({os.strerror(rule.errno)}): {rule.name} "
            f"[{rule.id}, {rule.function}, since {rule.since}]"
        )
    return "\n".join(lines)
