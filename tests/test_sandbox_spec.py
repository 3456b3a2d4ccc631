"""The Sandbox description: options checked at construction, frozen, hashable, picklable."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from pyclone import Sandbox

from sandbox_helpers import BWRAP_LIKE

# -- construction ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"new": "bogus"}, ValueError),
        ({"new": 3}, TypeError),
        ({"uid": -1}, ValueError),
        ({"uid": "0"}, TypeError),
        ({"uid_map": [(0, 1000)]}, TypeError),
        ({"uid_map": [(0, 1000, 0)]}, ValueError),
        ({"uid_map": [(0, 1000, 10), (5, 2000, 10)]}, ValueError),
        ({"uid_map": [(0, 0, 1)], "new": "pid"}, ValueError),
        ({"hostname": "x" * 65}, ValueError),
        ({"hostname": "box", "new": "user"}, ValueError),
        ({"hostname": 5}, TypeError),
        ({"tmpfs": ["relative"]}, ValueError),
        ({"tmpfs": [3]}, TypeError),
        ({"bind": [("/a",)]}, TypeError),
        ({"bind": "/a"}, TypeError),
        ({"ro_bind": [("/usr", "usr")]}, ValueError),
        ({"proc": "/proc", "new": "pid"}, ValueError),
        ({"dev": "/dev", "new_root": False}, ValueError),
        ({"tmpfs": ["/tmp"], "proc": "/tmp"}, ValueError),
        ({"proc": "/"}, ValueError),
        ({"cap_drop": ["CAP_FLY"]}, ValueError),
        ({"rlimits": {"bogus": 1}}, ValueError),
        ({"rlimits": {"nofile": (10, 5)}}, ValueError),
        ({"rlimits": {"nofile": "10"}}, TypeError),
        ({"setenv": {"A=B": "x"}}, ValueError),
        ({"setenv": {"A": 1}}, TypeError),
        ({"setenv": {"A": "1"}, "unsetenv": ["A"]}, ValueError),
        ({"unsetenv": [""]}, ValueError),
        ({"pass_fds": [-1]}, ValueError),
        ({"pass_fds": ["1"]}, TypeError),
        ({"init": 1}, TypeError),
        ({"memory_max": 0}, ValueError),
        ({"pids_max": "5"}, TypeError),
        ({"cpu_max": (0, 100000)}, ValueError),
        ({"cpu_max": -1.5}, ValueError),
        ({"seccomp_errno": 0}, ValueError),
        ({"seccomp_deny": [1]}, TypeError),
    ],
)
def test_bad_options_are_refused_at_construction(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        Sandbox(**kwargs)


def test_replace_makes_a_checked_copy() -> None:
    sb = Sandbox(**BWRAP_LIKE, hostname="box")
    other = sb.replace(hostname="other", tmpfs=["/run"])
    assert type(other) is Sandbox and sb.hostname == "box"
    assert (other.hostname, other.tmpfs, other.ro_bind) == ("other", ("/run",), sb.ro_bind)
    assert sb.replace() == sb and hash(sb.replace()) == hash(sb)
    assert copy.copy(sb) == sb and copy.deepcopy(sb) == sb  # a copy bypasses the frozen setattr
    with pytest.raises(ValueError, match="hostname needs a uts namespace"):
        sb.replace(new=["mnt", "user"])
    with pytest.raises(TypeError, match="unknown options: _flags, no_such"):
        sb.replace(no_such=1, _flags=0)
    with pytest.raises(AttributeError, match="frozen"):
        del other.hostname


def test_description_is_frozen_hashable_picklable_and_reads_well() -> None:
    sb = Sandbox(**BWRAP_LIKE, hostname="box", rlimits={"nofile": 64}, setenv={"A": "1"})
    assert pickle.loads(pickle.dumps(sb)) == sb
    assert hash(sb) == hash(
        Sandbox(**BWRAP_LIKE, hostname="box", rlimits={"NOFILE": 64}, setenv={"A": "1"})
    )
    with pytest.raises(AttributeError):
        sb.hostname = "other"  # type: ignore[misc]
    text = repr(sb)
    assert text.startswith(
        "Sandbox(new=['cgroup', 'ipc', 'mnt', 'net', 'pid', 'time', 'user', 'uts']"
    )
    assert "ro_bind=(('/usr', '/usr'),)" in text and "hostname='box'" in text
    assert "no_new_privs" not in text  # defaults are left out
    assert repr(Sandbox()) == "Sandbox()"
    assert sb.rlimits == (("nofile", 64, 64),)


def test_limits_need_pyclone_cgroup() -> None:
    try:
        import pyclone.cgroup  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pyclone\.cgroup"):
            Sandbox(pids_max=5)
    else:
        assert Sandbox(pids_max=5).pids_max == 5
