"""The ordered filesystem operations of a Sandbox (``ops=``, FsOp): their checks and normal form."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from pyclone import Sandbox
from pyclone.sandbox import FsOp
from pyclone.sandbox._fsops import parent_mode, resolved


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
        ([("bind_try", "/x")], ValueError),
        ([("ro_bind_try", "/x", "")], ValueError),
        ([("bind_fd", "/x")], TypeError),
        ([("bind_fd", "/x", None, None, None, None, None, None, "3")], TypeError),
        ([("ro_bind_fd", "/x", None, None, None, None, None, None, True)], TypeError),
        ([("bind_fd", "/x", None, None, None, None, None, None, -1)], ValueError),
        ([("bind_fd", "/x", "/src", None, None, None, None, None, 3)], ValueError),
        ([("bind", "/x", "/src", None, None, None, None, None, 3)], ValueError),
        ([("mqueue", "/x", "/src")], ValueError),
        ([("mqueue", "/x", None, 0o700)], ValueError),
        ([("mqueue", "/")], ValueError),
        ([("bind_fd", "/x", None, None, None, None, None, None, 3, "more")], TypeError),
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


def test_try_and_descriptor_binds_and_mqueue_take_their_own_fields() -> None:
    sb = Sandbox(
        ops=[
            FsOp("bind_try", "/a/", "rel//src"),
            FsOp("dev_bind_try", "/b", "/dev"),
            FsOp("ro_bind_try", "/", "/"),
            FsOp("bind_fd", "/c", fd=7),
            FsOp("ro_bind_fd", "/", fd=0),
            FsOp("mqueue", "/dev/mqueue"),
        ]
    )
    assert sb.ops == (
        FsOp("bind_try", "/a", "rel//src"),
        FsOp("dev_bind_try", "/b", "/dev"),
        FsOp("ro_bind_try", "/", "/"),
        FsOp("bind_fd", "/c", fd=7),
        FsOp("ro_bind_fd", "/", fd=0),
        FsOp("mqueue", "/dev/mqueue"),
    )
    # sources as the child resolves them: the caller's directory, the descriptor's magic link
    assert [resolved(op, "/here").source for op in sb.ops[::3]] == [
        "/here/rel/src",
        "/proc/self/fd/7",
    ]
    assert pickle.loads(pickle.dumps(sb)) == sb


def test_binds_and_mqueue_work_over_the_callers_tree() -> None:
    for op in (FsOp("bind_try", "/x", "/y"), FsOp("bind_fd", "/x", fd=3), FsOp("mqueue", "/x")):
        Sandbox(new_root=False, ops=[op])  # nothing of the caller's tree is written
    assert not Sandbox(ops=[("mqueue", "/dev/mqueue")])._root_mode()  # like a tmpfs
    assert Sandbox(ops=[("bind_fd", "/x", None, None, None, None, None, None, 3)])._root_mode()


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
