"""The ordered filesystem operations of a Sandbox (``ops=``, FsOp): their checks and normal form."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from pyclone import Sandbox
from pyclone.sandbox import FsOp
from pyclone.sandbox._fsops import parent_mode


@pytest.mark.parametrize(
    ("ops", "error"),
    [
        ("dir", TypeError),
        ([("dir",)], TypeError),
        (["/x"], TypeError),
        ([("mkdir", "/x")], ValueError),
        ([("dir", "x")], ValueError),
        ([("dir", "/x", None, 0o10000)], ValueError),
        ([("dir", "/x", None, -1)], ValueError),
        ([("dir", "/x", None, True)], TypeError),
        ([("dir", "/x", None, "755")], TypeError),
        ([("dir", "/x", "/src")], ValueError),
        ([("chmod", "/x")], ValueError),
        ([("bind", "/x")], ValueError),
        ([("symlink", "/x")], ValueError),
        ([("proc", "/proc", None, 0o755)], ValueError),
        ([("file", "/x")], TypeError),
        ([("file", "/x", None, None, "text")], TypeError),
        ([("dir", "/x", None, None, b"data")], ValueError),
        ([("tmpfs", "/x", None, None, None, 0)], ValueError),
        ([("tmpfs", "/x", None, None, None, "1k")], TypeError),
        ([("dir", "/x", None, None, None, 4096)], ValueError),
        ([("proc", "/")], ValueError),
        ([("file", "/", None, None, b"")], ValueError),
        ([("dir", "/x")], None),  # needs 'mnt' (with new="user" below)
    ],
)
def test_bad_ops_are_refused_at_construction(ops: Any, error: type | None) -> None:
    if error is None:
        with pytest.raises(ValueError, match="mount namespace"):
            Sandbox(new="user", ops=ops)
        return
    with pytest.raises(error):
        Sandbox(ops=ops)


@pytest.mark.parametrize("kind", ["dir", "symlink", "file", "bind_data", "chmod", "dev"])
def test_ops_that_write_need_a_new_root(kind: str) -> None:
    source = "target" if kind == "symlink" else None
    mode = 0o700 if kind == "chmod" else None
    data = b"" if kind in ("file", "bind_data") else None
    with pytest.raises(ValueError, match="new root"):
        Sandbox(new_root=False, ops=[FsOp(kind, "/x", source, mode, data)])


def test_ops_take_bwraps_default_modes_and_keep_their_order() -> None:
    sb = Sandbox(
        ops=[
            ("bind", "/", "/"),
            ("tmpfs", "/tmp/"),
            ("dir", "/tmp//a"),
            ("file", "/tmp/f", None, None, bytearray(b"hi")),
            ("bind_data", "/tmp/b", None, None, b""),
            ("ro_bind_data", "/tmp/r", None, 0o640, b""),
            ("chmod", "/tmp/a", None, 0o1777),
            ("bind", "/", "/"),  # a second operation on '/': it covers the first ones
        ]
    )
    assert [(op.kind, op.dest, op.mode) for op in sb.ops] == [
        ("bind", "/", None),
        ("tmpfs", "/tmp", 0o755),
        ("dir", "/tmp/a", 0o755),
        ("file", "/tmp/f", 0o666),
        ("bind_data", "/tmp/b", 0o600),
        ("ro_bind_data", "/tmp/r", 0o640),
        ("chmod", "/tmp/a", 0o1777),
        ("bind", "/", None),
    ]
    assert sb.ops[3].data == b"hi" and isinstance(sb.ops[3], FsOp)
    assert sb._root_mode()  # binds (and anything that writes) assemble a new root
    assert pickle.loads(pickle.dumps(sb)) == sb and hash(sb) == hash(pickle.loads(pickle.dumps(sb)))
    assert "ops=" in repr(sb)


def test_tmpfs_proc_and_remount_ro_ops_work_over_the_callers_tree() -> None:
    sb = Sandbox(ops=[("tmpfs", "/tmp", None, 0o1777, None, 1 << 20), ("remount_ro", "/tmp")])
    assert not sb._root_mode()
    assert sb.ops[0].size == 1 << 20


@pytest.mark.parametrize(
    ("mode", "parents"),
    [(None, 0o755), (0o1777, 0o755), (0o750, 0o750), (0o640, 0o750), (0o705, 0o705), (0, 0o700)],
)
def test_parents_are_as_reachable_as_what_is_made_in_them(mode: int | None, parents: int) -> None:
    assert parent_mode(mode) == parents
