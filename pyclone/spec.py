"""Turn ``share=`` and ``new=`` names into clone flags."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeAlias

from .flags import CloneFlag

__all__ = [
    "NAMESPACES",
    "PRESETS",
    "SHARE_NAMES",
    "NamespaceName",
    "NewSpec",
    "ShareName",
    "SharePreset",
    "ShareSpec",
    "resolve_flags",
]

#: The ``share=`` presets, as a type: a misspelt preset is a type error, not only a ValueError.
SharePreset: TypeAlias = Literal["process", "thread", "vfork"]
#: The names ``share=`` combines (alone, or in an iterable).
ShareName: TypeAlias = Literal["vm", "fs", "files", "sighand", "sysvsem", "io", "thread", "parent"]
#: The names ``new=`` takes (alone, or in an iterable), besides ``"all"``.
NamespaceName: TypeAlias = Literal[
    "user", "pid", "mnt", "mount", "net", "uts", "ipc", "cgroup", "time"
]

#: What each ``share=`` name makes the task share with its creator.
SHARE_NAMES: dict[str, CloneFlag] = {
    "vm": CloneFlag.VM,
    "fs": CloneFlag.FS,
    "files": CloneFlag.FILES,
    "sighand": CloneFlag.SIGHAND,
    "sysvsem": CloneFlag.SYSVSEM,
    "io": CloneFlag.IO,
    "thread": CloneFlag.THREAD,
    "parent": CloneFlag.PARENT,
}

#: Presets for ``share=``: fork's semantics, pthread_create's sharing, and vfork's.
PRESETS: dict[str, CloneFlag] = {
    "process": CloneFlag(0),
    "thread": (
        CloneFlag.VM
        | CloneFlag.FS
        | CloneFlag.FILES
        | CloneFlag.SIGHAND
        | CloneFlag.SYSVSEM
        | CloneFlag.THREAD
    ),
    "vfork": CloneFlag.VM | CloneFlag.VFORK,
}

#: What each ``new=`` name gives the task a namespace of its own for.
NAMESPACES: dict[str, CloneFlag] = {
    "user": CloneFlag.NEWUSER,
    "pid": CloneFlag.NEWPID,
    "mnt": CloneFlag.NEWNS,
    "mount": CloneFlag.NEWNS,
    "net": CloneFlag.NEWNET,
    "uts": CloneFlag.NEWUTS,
    "ipc": CloneFlag.NEWIPC,
    "cgroup": CloneFlag.NEWCGROUP,
    "time": CloneFlag.NEWTIME,
}

#: What ``share=`` accepts: one preset or share name, or an iterable of share names.
#: The names are checked again at run time, for callers without a type checker.
ShareSpec: TypeAlias = SharePreset | ShareName | Iterable[ShareName]
#: What ``new=`` accepts: a namespace name, an iterable of them, ``"all"``, or None.
NewSpec: TypeAlias = (
    NamespaceName | Literal["all"] | Iterable[NamespaceName | Literal["all"]] | None
)


def _names(spec: str | Iterable[str], what: str) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    try:
        names = list(spec)
    except TypeError:
        raise TypeError(f"{what} must be a name or an iterable of names, not {spec!r}") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what} names must be strings, not {name!r}")
    return names


def share_flags(share: ShareSpec) -> CloneFlag:
    """The flags for a ``share=`` preset or iterable of names."""
    names = _names(share, "share")
    if len(names) == 1 and names[0] in PRESETS:
        return PRESETS[names[0]]
    result = CloneFlag(0)
    for name in names:
        if name not in SHARE_NAMES:
            valid = ", ".join(sorted(SHARE_NAMES))
            presets = ", ".join(sorted(PRESETS))
            raise ValueError(
                f"unknown share name {name!r}: valid names are {valid} (or one preset: {presets})"
            )
        result |= SHARE_NAMES[name]
    return result


def new_flags(new: NewSpec) -> CloneFlag:
    """The flags for a ``new=`` name, iterable of names, ``"all"`` or None."""
    if new is None:
        return CloneFlag(0)
    result = CloneFlag(0)
    for name in _names(new, "new"):
        if name == "all":
            for flag in NAMESPACES.values():
                result |= flag
        elif name in NAMESPACES:
            result |= NAMESPACES[name]
        else:
            valid = ", ".join(sorted(NAMESPACES))
            raise ValueError(f"unknown namespace name {name!r}: valid names are {valid}, or 'all'")
    return result


def resolve_flags(share: ShareSpec = "process", new: NewSpec = None, flags: int = 0) -> CloneFlag:
    """Combine ``share``, ``new`` and raw ``flags`` into one clone3 flags word.

    >>> from pyclone.spec import resolve_flags
    >>> resolve_flags(share={"vm", "fs"}, new="uts")
    <CloneFlag.VM|FS|NEWUTS: 67109632>
    """
    key = None
    if type(share) is str and (new is None or type(new) is str) and type(flags) is int:
        # the common spellings are hashable: skip the IntFlag arithmetic
        key = (share, new, flags)
        cached = _RESOLVED.get(key)
        if cached is not None:
            return cached
    if not isinstance(flags, int):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    if flags < 0 or flags >> 64:
        raise ValueError(f"flags must fit in 64 unsigned bits, not {flags:#x}")
    result = share_flags(share) | new_flags(new) | CloneFlag(flags)
    if key is not None and len(_RESOLVED) < 256:
        _RESOLVED[key] = result
    return result


# resolve_flags results for hashable arguments (the tables above are constant)
_RESOLVED: dict[tuple[str, str | None, int], CloneFlag] = {}
