"""Hypothesis strategies for clone flag sets, ``spawn_task`` specs and exit signals.

Import it on demand (``import pyclone.strategies``): it needs
`hypothesis <https://hypothesis.readthedocs.io>`_, which pyclone itself does
not.  Flag sets are drawn flag by flag, each flag its own boolean, so a
failing example shrinks to the fewest flags, and each shrinks to false on
its own.  A flag is in a set one time in two, except the flags the kernel
refuses on their own (for clone3: CLONE_DETACHED, CLONE_THREAD,
CLONE_SIGHAND; for an unprivileged caller every new namespace but the user
one), which are in one set in eight: they would otherwise hide, behind
their own refusal, whatever the other flags do together.

``valid=True``/``False`` keeps only the flag sets the kernel accepts/rejects,
as :func:`pyclone.predict_errno` says for the given caller.  Accepted sets
are built by dropping, rule by rule, the flags that make the kernel refuse
(:attr:`pyclone.rules.Rule.repair`), so every accepted set can be drawn and
none is wasted.  ``target=`` also keeps out what pyclone itself refuses
(:func:`pyclone.refused`).  Drawn flag sets print in failing examples as
``CloneFlag.FS | CloneFlag.NEWNS``, which is valid Python.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ._strategies_hypothesis import strategies as st
from .flags import SINGLE_FLAGS, CloneFlag
from .rules import CallerState, _call, _first_failure, refused
from .spec import NAMESPACES, SHARE_NAMES

__all__ = [
    "CLONE3_FLAGS",
    "CLONE_FLAGS",
    "UNBLOCKABLE_EXIT_SIGNALS",
    "CloneCall",
    "clone_calls",
    "clone_flags",
    "exit_signals",
    "namespace_specs",
    "share_specs",
    "spawn_specs",
]

F = CloneFlag

#: The flags drawn for clone(2): every flag of the legacy 32-bit word.
CLONE_FLAGS: tuple[CloneFlag, ...] = tuple(
    m for m in SINGLE_FLAGS if int(m) >> 8 and not int(m) >> 32
)

#: The flags drawn for clone3(2).  CLONE_INTO_CGROUP is left out: its outcome
#: depends on the cgroup descriptor, which a flag set does not carry.
CLONE3_FLAGS: tuple[CloneFlag, ...] = tuple(m for m in SINGLE_FLAGS if m is not F.INTO_CGROUP)

#: Exit signals a test process cannot block, so they act on it when a child
#: ends: SIGKILL, SIGSTOP, and glibc's internal 32 and 33 (SIGCANCEL,
#: SIGSETXID), which sigprocmask() silently refuses to block.
UNBLOCKABLE_EXIT_SIGNALS: frozenset[int] = frozenset(
    {int(signal.SIGKILL), int(signal.SIGSTOP), 32, 33}
)


def _members(pool: Iterable[CloneFlag] | None, api: str) -> tuple[CloneFlag, ...]:
    if api not in ("clone", "clone3"):
        raise ValueError(f"api must be 'clone' or 'clone3', not {api!r}")
    default = CLONE_FLAGS if api == "clone" else CLONE3_FLAGS
    members = default if pool is None else tuple(F(m) for m in pool)
    for m in members:
        if api == "clone" and (int(m) >> 32 or int(m) & 0xFF):
            raise ValueError(f"{m!r} is not a clone(2) flag (the low byte is the exit signal)")
    return members


def _caller(privileged: bool | CallerState | None) -> CallerState:
    if privileged is None:
        return CallerState.current()  # read once, when the strategy is built
    caller = _call(0, "clone3", 0, privileged).caller
    assert isinstance(caller, CallerState)
    return caller


def clone_flags(
    api: str = "clone",
    *,
    valid: bool | None = None,
    exit_signal: int | None = None,
    privileged: bool | CallerState | None = None,
    flags: Iterable[CloneFlag] | None = None,
    min_size: int = 0,
    max_size: int | None = None,
    target: str | None = None,
) -> st.SearchStrategy[CloneFlag]:
    """Flag sets for ``api`` ("clone" or "clone3"), without an exit signal.

    Each set is an OR of members of ``flags`` (default :data:`CLONE_FLAGS`
    or :data:`CLONE3_FLAGS`), each drawn on its own, with between
    ``min_size`` and ``max_size`` members.  ``valid=True`` keeps the
    sets the kernel accepts, ``valid=False`` those it rejects, for
    ``exit_signal`` (clone3: default SIGCHLD; it matters for CLONE_THREAD and
    CLONE_PARENT) and the caller described by ``privileged`` (as in
    :func:`pyclone.predict_errno`; None reads this process's state once,
    when the strategy is built).  ``target`` ("callable" or "action") keeps
    the sets :func:`pyclone.refused` lets through for that child with
    :func:`pyclone.clone` or :func:`pyclone.clone3`.  For clone(2) add the
    exit signal to the word yourself: the kernel never checks it.

    >>> from hypothesis import given
    >>> @given(clone_flags(valid=False))
    ... def test_rejected(flags): ...
    """
    members = _members(flags, api)
    caller = _caller(privileged)
    sig = 0 if api == "clone" else (int(signal.SIGCHLD) if exit_signal is None else exit_signal)
    if target not in (None, "callable", "action"):
        raise ValueError(f"target must be None, 'callable' or 'action', not {target!r}")
    if valid and _first_failure(_call(0, api, sig, caller)) is not None:
        raise ValueError(f"no flag set is accepted by {api} with exit_signal={sig}")
    rare = frozenset(m for m in members if _first_failure(_call(int(m), api, sig, caller)))
    words: st.SearchStrategy[CloneFlag] = _flag_sets(
        members, rare, _Repair(api, sig, caller) if valid else None
    )
    if min_size or max_size is not None:
        top = len(members) if max_size is None else max_size
        words = words.filter(lambda f: min_size <= len(_bits(f)) <= top)
    if valid is False:
        words = words.filter(lambda f: _first_failure(_call(int(f), api, sig, caller)) is not None)
    if target is not None:
        chosen = target
        signal_arg = sig if api == "clone3" else None
        words = words.filter(
            lambda f: refused(int(f), api=api, exit_signal=signal_arg, target=chosen) is None
        )
    return words


#: A common flag's "is it in the set": true one time in two, shrinking to false.
_BIT = st.booleans()


@st.composite
def _rare_bit(draw: st.DrawFn) -> bool:
    """True one time in eight; each of the three draws shrinks to false, and so the result."""
    return draw(_BIT) and draw(_BIT) and draw(_BIT)


_RARE_BIT = _rare_bit()


class _Repair(NamedTuple):
    """Drop flags, rule by rule, until the kernel would accept the set."""

    api: str
    exit_signal: int
    caller: CallerState

    def __call__(self, flags: int) -> int:
        while True:
            rule = _first_failure(_call(flags, self.api, self.exit_signal, self.caller))
            if rule is None or not flags & rule.repair:
                return flags
            flags &= ~rule.repair


@st.composite
def _flag_sets(
    draw: st.DrawFn,
    members: tuple[CloneFlag, ...],
    rare: frozenset[CloneFlag],
    repair: _Repair | None,
) -> CloneFlag:
    # Composed here rather than with .map(): a failing example then prints
    # the flag set itself, not the mapping function applied to booleans.
    word = 0
    for m in members:
        if draw(_RARE_BIT if m in rare else _BIT):
            word |= int(m)
    return F(word if repair is None else repair(word))


def _repair(flags: int, api: str, exit_signal: int, caller: CallerState) -> int:
    """Drop flags, rule by rule, until the kernel would accept the set."""
    return _Repair(api, exit_signal, caller)(flags)


def _bits(flags: int) -> list[int]:
    return [1 << i for i in range(64) if flags >> i & 1]


def _pretty_flags(obj: CloneFlag, printer: Any, cycle: bool) -> None:
    """Print a flag set as Python that rebuilds it: ``CloneFlag.FS | CloneFlag.NEWNS``."""
    value = int(obj)
    names = [f"CloneFlag.{m.name}" for m in SINGLE_FLAGS if value & int(m)]
    rest = value & ~sum(int(m) for m in SINGLE_FLAGS)
    printer.text(" | ".join(names + ([f"CloneFlag({rest:#x})"] if rest else [])) or "CloneFlag(0)")


try:  # hypothesis's printer for failing examples; without it flags print as their repr
    from hypothesis.vendor.pretty import for_type_by_name
except ImportError:  # pragma: no cover - a hypothesis without the vendored printer
    pass
else:
    for_type_by_name(CloneFlag.__module__, CloneFlag.__qualname__, _pretty_flags)


def exit_signals(
    api: str = "clone", *, valid: bool | None = None, blockable: bool = False
) -> st.SearchStrategy[int]:
    """Exit signals for ``api``; they shrink towards SIGCHLD, then 0.

    clone(2) takes any byte 0-255 and never checks it (a value that is not
    a signal means no signal at exit); clone3(2) accepts 0-64 and rejects
    more with EINVAL.  ``valid=False`` gives only rejected values (clone3:
    65-255; clone(2) has none).  ``blockable=True`` leaves out
    :data:`UNBLOCKABLE_EXIT_SIGNALS`, which would stop or kill a test
    process that creates such children.
    """
    if api not in ("clone", "clone3"):
        raise ValueError(f"api must be 'clone' or 'clone3', not {api!r}")
    top = 255 if api == "clone" else 64
    if valid is False:
        if api == "clone":
            raise ValueError("clone(2) accepts every exit signal byte")
        values = st.integers(65, 255)
    else:
        upper = top if valid else 255
        values = st.integers(0, upper)
    first = st.sampled_from([int(signal.SIGCHLD), 0])
    result = st.one_of(first, values) if valid is not False else values
    if blockable:
        result = result.filter(lambda s: s not in UNBLOCKABLE_EXIT_SIGNALS)
    return result


class CloneCall(NamedTuple):
    """One request: the API, its flags (without exit signal) and exit signal.

    :attr:`word` is the clone(2) flags word with the exit signal in its low byte.
    """

    api: str
    flags: CloneFlag
    exit_signal: int

    @property
    def word(self) -> int:
        """The clone(2) word: ``flags | exit_signal``."""
        return int(self.flags) | self.exit_signal


@st.composite
def _calls(
    draw: st.DrawFn,
    api: str | None,
    valid: bool | None,
    privileged: bool | CallerState | None,
    blockable: bool,
) -> CloneCall:
    chosen = draw(st.sampled_from(("clone", "clone3"))) if api is None else api
    sig = draw(exit_signals(chosen, valid=True, blockable=blockable))
    flags = draw(clone_flags(chosen, valid=valid, exit_signal=sig, privileged=privileged))
    return CloneCall(chosen, flags, sig)


def clone_calls(
    api: str | None = None,
    *,
    valid: bool | None = None,
    privileged: bool | CallerState | None = None,
    blockable: bool = False,
) -> st.SearchStrategy[CloneCall]:
    """Whole requests: a :class:`CloneCall` with an API, flags and exit signal.

    ``api=None`` draws both.  The exit signal is one the API accepts, so
    ``valid`` is about the flags with that signal; ``blockable`` as in
    :func:`exit_signals`.
    """
    caller = _caller(privileged)
    return _calls(api, valid, caller, blockable)


def share_specs(
    *, forklike: bool = False, valid: bool = True, parent: bool = False
) -> st.SearchStrategy[frozenset[str]]:
    """``share=`` arguments for :func:`pyclone.spawn_task`: sets of share names.

    ``valid=True`` (the default) keeps the kernel's closure rules: thread
    needs sighand, sighand needs vm.  ``forklike=True`` leaves out what
    needs a shared address space (vm, sighand, thread), i.e. what a Python
    callable child can run in.  ``"parent"`` is drawn only with
    ``parent=True``: such a task is its creator's sibling and is reaped by
    the creator's parent (run under a subreaper).  Sets shrink towards the
    empty set (fork).  Combined with ``new=``, use :func:`spawn_specs`.
    """
    names = sorted(SHARE_NAMES)
    if not parent:
        names.remove("parent")
    if forklike:
        names = [n for n in names if n not in ("vm", "sighand", "thread")]
    return _name_sets(tuple(names), _close if valid else None)


def _close(spec: frozenset[str]) -> frozenset[str]:
    """Keep the kernel's closure rules: thread needs sighand, sighand needs vm."""
    if "sighand" in spec and "vm" not in spec:
        spec -= {"sighand"}
    if "thread" in spec and "sighand" not in spec:
        spec -= {"thread"}
    return spec


@st.composite
def _name_sets(
    draw: st.DrawFn,
    names: tuple[str, ...],
    fix: Callable[[frozenset[str]], frozenset[str]] | None,
) -> frozenset[str]:
    # One boolean per name (not st.sets): each name shrinks out on its own,
    # so a failing example keeps only the names it needs.
    chosen = frozenset(n for n in names if draw(_BIT))
    return chosen if fix is None else fix(chosen)


def namespace_specs(
    *, privileged: bool | CallerState | None = None
) -> st.SearchStrategy[frozenset[str]]:
    """``new=`` arguments for :func:`pyclone.spawn_task`: sets of namespace names.

    For an unprivileged caller (as ``privileged`` describes it; None reads
    this process) every non-empty set includes ``"user"``, which grants the
    rest.  Sets shrink towards the empty set.
    """
    names = tuple(sorted(n for n in NAMESPACES if n != "mount"))
    return _name_sets(names, None if _caller(privileged).sys_admin else _with_user)


def _with_user(new: frozenset[str]) -> frozenset[str]:
    return new | {"user"} if new else new


#: Share names that conflict with a new namespace (the kernel's rules P1, P2, P12).
_CONFLICTS: dict[str, frozenset[str]] = {
    "fs": frozenset({"mnt", "user"}),
    "sysvsem": frozenset({"ipc"}),
    "thread": frozenset({"user", "pid"}),
}


def spawn_specs(
    *,
    forklike: bool = False,
    parent: bool = False,
    privileged: bool | CallerState | None = None,
) -> st.SearchStrategy[tuple[frozenset[str], frozenset[str]]]:
    """``(share, new)`` pairs for :func:`pyclone.spawn_task` that the kernel accepts.

    Draws from :func:`share_specs` and :func:`namespace_specs` and drops the
    share names that conflict with the namespaces drawn (fs with a new mount
    or user namespace, sysvsem with a new IPC namespace, thread with a new
    user or pid namespace).
    """

    return _spawn_pairs(
        share_specs(forklike=forklike, parent=parent), namespace_specs(privileged=privileged)
    )


@st.composite
def _spawn_pairs(
    draw: st.DrawFn,
    shares: st.SearchStrategy[frozenset[str]],
    news: st.SearchStrategy[frozenset[str]],
) -> tuple[frozenset[str], frozenset[str]]:
    share, new = draw(shares), draw(news)
    dropped = {name for name, bad in _CONFLICTS.items() if name in share and bad & new}
    return _close(share - dropped), new
