"""Checks of each Sandbox option: the right type and value, returned in normal form.

Each check raises ``TypeError`` for a wrong type and ``ValueError`` for a wrong
value, and returns lists as (sorted where order does not matter) tuples.
"""

from __future__ import annotations

import itertools
import os
import resource
from collections.abc import Iterable, Mapping
from typing import Any

from ..spec import NAMESPACES
from ._names import CAPABILITIES, DEFAULT_NEW, RLIMITS

IdMap = tuple[tuple[int, int, int], ...]
PathPairs = tuple[tuple[str, str], ...]
StrPath = str | os.PathLike[str]
PathPairsArg = Iterable[tuple[StrPath, StrPath]] | Mapping[StrPath, StrPath]
_MAX_ID = (1 << 32) - 1


def check_path(value: Any, what: str, *, absolute: bool = True) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike), not {value!r}")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str path, not {text!r}")
    if not text or "\0" in text:
        raise ValueError(f"{what} must be a non-empty path without NUL bytes, not {text!r}")
    if absolute:
        if not text.startswith("/"):
            raise ValueError(f"{what} must be an absolute path inside the sandbox, not {text!r}")
        text = os.path.normpath(text)
        if text.startswith("//"):
            text = "/" + text.lstrip("/")
    return text


def check_pairs(value: Any, what: str, *, src_absolute: bool) -> PathPairs:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        value = list(value.items())
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of (source, destination) pairs, not {value!r}")
    out = []
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"{what} entries must be (source, destination) pairs, not {item!r}")
        src = check_path(item[0], f"{what} source", absolute=src_absolute)
        dest = check_path(item[1], f"{what} destination")
        out.append((src, dest))
    return tuple(out)


def check_paths(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a path or a list of paths, not {value!r}")
    return tuple(check_path(v, what) for v in value)


def check_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    if not 0 <= value < _MAX_ID:
        raise ValueError(f"{what} must be between 0 and {_MAX_ID - 1}, not {value}")
    return value


def check_idmap(value: Any, what: str) -> IdMap | None:
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, int) for v in value):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of (inside, outside, count) triples")
    lines = []
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise TypeError(
                f"{what} entries must be (inside, outside, count) triples, not {item!r}"
            )
        inside = check_id(item[0], f"{what} inside id")
        outside = check_id(item[1], f"{what} outside id")
        count = check_id(item[2], f"{what} count")
        if count == 0:
            raise ValueError(f"{what} count must be positive, not 0 in {item!r}")
        if inside + count > _MAX_ID or outside + count > _MAX_ID:
            raise ValueError(f"{what} range {item!r} runs past id {_MAX_ID - 1}")
        lines.append((inside, outside, count))
    if not lines:
        raise ValueError(f"{what} must have at least one (inside, outside, count) range")
    if len(lines) > 340:
        raise ValueError(f"{what} has {len(lines)} ranges; the kernel allows at most 340")
    for kind, index in (("inside", 0), ("outside", 1)):
        spans = sorted((line[index], line[index] + line[2]) for line in lines)
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(f"{what} has overlapping {kind} ranges; the kernel refuses that")
    return tuple(lines)


def check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")


def check_new(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"new must be a namespace name or an iterable of names, not {value!r}")
    names = set()
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"new names must be strings, not {name!r}")
        if name == "all":
            names |= set(DEFAULT_NEW) | {"time"}
        elif name == "mount":
            names.add("mnt")
        elif name in NAMESPACES:
            names.add(name)
        else:
            valid = ", ".join(sorted(n for n in NAMESPACES if n != "mount"))
            raise ValueError(f"unknown namespace name {name!r}: valid names are {valid}, or 'all'")
    return frozenset(names)


def check_caps(value: Any, what: str = "cap_drop") -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"{what} must be 'ALL' or capability names, not {value!r}")
    out = set()
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"{what} names must be strings, not {name!r}")
        key = name.lower().removeprefix("cap_")
        if key == "all":
            out.add("ALL")
        elif key in CAPABILITIES:
            out.add(key)
        else:
            raise ValueError(f"unknown capability {name!r}: use 'ALL' or names like CAP_NET_RAW")
    return frozenset({"ALL"}) if "ALL" in out else frozenset(out)


def check_rlimits(value: Any) -> tuple[tuple[str, int, int], ...]:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        items = []
        for item in value:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError(f"rlimits entries must be (name, soft, hard), not {item!r}")
            items.append((item[0], tuple(item[1:]) if len(item) == 3 else item[1]))
    else:
        raise TypeError(f"rlimits must be a mapping of name to limit, not {value!r}")
    out = []
    for name, limit in items:
        if not isinstance(name, str):
            raise TypeError(f"rlimit names must be strings, not {name!r}")
        key = name.lower().removeprefix("rlimit_")
        if key not in RLIMITS:
            raise ValueError(
                f"unknown rlimit {name!r}: valid names are {', '.join(sorted(RLIMITS))}"
            )
        pair = limit if isinstance(limit, (tuple, list)) else (limit, limit)
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise TypeError(f"rlimit {name!r} must be an int or a (soft, hard) pair, not {limit!r}")
        soft, hard = (resource.RLIM_INFINITY if v == -1 else v for v in pair)
        if soft < 0 or hard < 0:
            raise ValueError(f"rlimit {name!r} values must be non-negative (or -1: unlimited)")
        if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
            raise ValueError(f"rlimit {name!r}: soft limit {soft} exceeds hard limit {hard}")
        out.append((key, soft, hard))
    return tuple(sorted(out))


def check_setenv(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        value = list(value.items())
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"setenv must be a mapping of names to values, not {value!r}")
    out = {}
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"setenv entries must be (name, value) pairs, not {item!r}")
        name, val = item
        check_names([name], "setenv")
        if not isinstance(val, str) or "\0" in val:
            raise TypeError(f"setenv value for {name!r} must be a str without NUL, not {val!r}")
        out[name] = val
    return tuple(sorted(out.items()))


def check_names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of names, not {value!r}")
    out = []
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"{what} names must be strings, not {name!r}")
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"{what} name {name!r} must be non-empty, without '=' or NUL")
        out.append(name)
    return tuple(dict.fromkeys(out))


def check_fds(value: Any, name: str = "pass_fds") -> tuple[int, ...]:
    if not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of descriptors, not {value!r}")
    out = []
    for fd in value:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"{name} must be a descriptor (int), not {fd!r}")
        if fd < 0:
            raise ValueError(f"{name} must be a non-negative descriptor, not {fd}")
        out.append(fd)
    return tuple(sorted(set(out)))
