"""The id maps of a sandbox's user namespace: who the ids inside are outside."""

from __future__ import annotations

import os
from typing import Any

from pyclone import Sandbox

from conftest import WAIT, Health, require_root
from sandbox_helpers import BWRAP_LIKE, NOBODY, run_as, shared_dir


def _id_and_owner(outside_uid: int, **kwargs: Any) -> tuple[str, int, str]:
    with shared_dir(outside_uid if outside_uid else os.geteuid(), 0o777) as data:
        sb = Sandbox(**BWRAP_LIKE, bind=[(data, "/data")], **kwargs)
        done = sb.run(
            ["sh", "-c", "id -u; touch /data/f; cat /proc/self/uid_map"],
            capture_output=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.decode().splitlines()
        return lines[0], os.stat(os.path.join(data, "f")).st_uid, " ".join(lines[1].split())


def _uid_0_and_owner() -> tuple[str, int, str]:
    return _id_and_owner(NOBODY, uid=0)


def test_the_unprivileged_caller_keeps_its_uid_inside() -> None:
    inside, owner, uid_map = run_as("nobody", _id_and_owner, NOBODY)
    assert inside == str(NOBODY)  # as in bwrap (unshare -r would make it 0)
    assert owner == NOBODY
    assert uid_map == f"{NOBODY} {NOBODY} 1"


def test_uid_0_inside_is_the_unprivileged_uid_outside() -> None:
    inside, owner, uid_map = run_as("nobody", _uid_0_and_owner)
    assert inside == "0"
    assert owner == NOBODY
    assert uid_map == f"0 {NOBODY} 1"


def test_explicit_multi_range_maps_as_root(healthy: Health) -> None:
    require_root()
    maps = [(0, 100000, 1000), (1000, 1000, 1)]
    inside, owner, uid_map = _id_and_owner(100000, uid_map=maps, gid_map=maps)
    assert inside == "0"
    assert owner == 100000
    assert uid_map == "0 100000 1000"
