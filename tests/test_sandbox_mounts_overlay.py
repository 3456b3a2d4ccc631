"""The overlay operations (FsOp kinds ``overlay``, ``tmp_overlay``, ``ro_overlay``): their
checks, the mount options they give overlayfs, and the kernel's overlays, as root and as
uid 65534 (overlayfs in a user namespace: Linux 5.11 and later).

The command-line cases, compared with bwrap, are in ``test_sandbox_bwrap_suite_newer.py``.
"""

from __future__ import annotations

import errno
import os
import subprocess
from typing import Any

import pytest
from bwrap_oracle import SETPRIV, bwrap_with

from pyclone import Sandbox, SandboxError
from pyclone.sandbox import FsOp
from pyclone.sandbox._fsops import escape_option, overlay_options

from conftest import WAIT
from sandbox_helpers import BWRAP_LIKE, NOBODY, WHO, run_as, run_tool, shared_dir


@pytest.mark.parametrize(
    ("op", "error"),
    [
        (FsOp("tmp_overlay", "/x"), TypeError),
        (FsOp("tmp_overlay", "/x", lower="/a"), TypeError),
        (FsOp("tmp_overlay", "/x", lower=()), ValueError),
        (FsOp("ro_overlay", "/x", lower=("/a",)), ValueError),
        (FsOp("overlay", "/x", lower=("/a",), workdir="/w"), ValueError),  # no source
        (FsOp("overlay", "/x", "/up", lower=("/a",)), ValueError),  # no workdir
        (FsOp("tmp_overlay", "/x", "/up", lower=("/a",)), ValueError),
        (FsOp("tmp_overlay", "/x", lower=("/a",), workdir="/w"), ValueError),
        (FsOp("tmp_overlay", "/x", mode=0o755, lower=("/a",)), ValueError),
        (FsOp("tmp_overlay", "x", lower=("/a",)), ValueError),
        (FsOp("dir", "/x", lower=("/a",)), ValueError),
        (FsOp("bind", "/x", "/a", workdir="/w"), ValueError),
    ],
)
def test_bad_overlays_are_refused_at_construction(op: FsOp, error: type) -> None:
    with pytest.raises(error):
        Sandbox(ops=[op])


def test_overlays_need_a_new_root() -> None:
    with pytest.raises(ValueError, match="overlays"):
        Sandbox(new_root=False, ops=[FsOp("tmp_overlay", "/x", lower=("/a",))])


def test_an_overlay_is_in_normal_form() -> None:
    sb = Sandbox(ops=[("overlay", "/x/", "up", None, None, None, ["lo"], "work")])
    assert sb.ops == (FsOp("overlay", "/x", "up", lower=("lo",), workdir="work"),)
    assert Sandbox(ops=sb.ops) == sb


def test_the_mount_options_are_bwraps() -> None:
    """Top layer first, separators escaped, userxattr; a tmp overlay's own upper and work."""
    assert escape_option('a ":,\\b') == 'a "\\:\\,\\\\b'
    op = FsOp("overlay", "/x", "/up,1", lower=("/low", "/high:2"), workdir="/w")
    assert overlay_options(op, 0, "/oldroot") == (
        "upperdir=/oldroot/up\\,1,workdir=/oldroot/w,"
        "lowerdir=/oldroot/high\\:2:/oldroot/low,userxattr"
    )
    tmp = FsOp("tmp_overlay", "/x", lower=("/a",))
    assert overlay_options(tmp, 2, "/oldroot") == (
        "upperdir=/tmp-overlay-upper-2,workdir=/tmp-overlay-work-2,lowerdir=/oldroot/a,userxattr"
    )
    ro = FsOp("ro_overlay", "/x", lower=("/a", "/b"))
    assert overlay_options(ro, 0, "") == "lowerdir=/b:/a,userxattr"


def _layers(top: str, who: str) -> dict[str, str]:
    """lower1/a=1, lower1/b=2, lower2/b=3, an empty upper and work, owned by ``who``.

    A file of another owner is not writable in the sandbox (its owner is not mapped
    in the user namespace), so an overlay would refuse to copy it up for writing.
    """
    owner = NOBODY if who == "nobody" else 0
    paths = {name: os.path.join(top, name) for name in ("lower1", "lower2", "upper", "work")}
    for path in paths.values():
        os.mkdir(path)
        os.chown(path, owner, owner)
    for name, data in (("lower1/a", "1"), ("lower1/b", "2"), ("lower2/b", "3")):
        with open(os.path.join(top, name), "w") as f:
            f.write(data)
        os.chown(os.path.join(top, name), owner, owner)
    return paths


def _run(ops: list[FsOp], script: str) -> tuple[int, str]:
    done = Sandbox(**BWRAP_LIKE, ops=ops).run(
        ["sh", "-c", script], capture_output=True, timeout=WAIT
    )
    return done.returncode, done.stdout.decode()


@WHO
def test_the_three_overlays(who: str) -> None:
    with shared_dir() as top:
        p = _layers(top, who)
        lower = (p["lower1"], p["lower2"])
        ops = [
            FsOp("overlay", "/rw", p["upper"], lower=lower, workdir=p["work"]),
            FsOp("tmp_overlay", "/tmp1", lower=lower),
            FsOp("tmp_overlay", "/tmp2", lower=lower),
            FsOp("ro_overlay", "/ro", lower=lower),
        ]
        script = (
            "cat /rw/a /rw/b; printf 5 > /rw/b; printf 6 > /tmp1/b; cat /tmp1/b /tmp2/b /ro/b; "
            "printf 7 > /ro/b 2>/dev/null || echo refused; "
            "grep -c ' - overlay ' /proc/self/mountinfo"
        )
        code, out = run_as(who, _run, ops, script)
        assert (code, out) == (0, "13633refused\n4\n")  # lower2 is the top layer
        with open(os.path.join(p["upper"], "b")) as f:
            assert f.read() == "5"
        with open(os.path.join(p["lower2"], "b")) as f:
            assert f.read() == "3"  # the lower layers are never written


def _failure(ops: list[FsOp]) -> tuple[str, int | None, Any]:
    try:
        Sandbox(**BWRAP_LIKE, ops=ops).run(["true"], timeout=WAIT)
    except SandboxError as exc:
        return exc.step, exc.errno, exc.filename
    raise AssertionError("the sandbox started")


@WHO
def test_the_kernels_refusals(who: str) -> None:
    """A missing layer (before any mount), and overlapping ones (overlayfs's ELOOP)."""
    with shared_dir() as top:
        p = _layers(top, who)
        missing = os.path.join(top, "missing")
        ops = [FsOp("tmp_overlay", "/x", lower=(p["lower1"], missing))]
        assert run_as(who, _failure, ops) == ("tmp_overlay /x", errno.ENOENT, missing)
        ops = [FsOp("overlay", "/x", p["lower1"], lower=(p["lower1"],), workdir=p["work"])]
        step, err, _ = run_as(who, _failure, ops)
        assert (step, err) == ("overlay /x", errno.ELOOP)


@WHO
def test_the_command_lines_words_for_them(who: str) -> None:
    """``pyclone run`` names a missing layer, and says overlapping layers overlap, as bwrap.

    The options named are bubblewrap 0.11's (its source): 0.13 opens each layer
    first and names descriptors (``lowerdir=/proc/self/fd/9``) and no mount
    point (``(null)``), so only the other messages are compared with a newer
    bwrap, where one is found.
    """
    with shared_dir() as top:
        p = _layers(top, who)
        base = ["--level-prefix", "--ro-bind", "/", "/"]
        missing = os.path.join(top, "missing")
        cases = [
            (
                ["--overlay-src", missing, "--tmp-overlay", "/mnt"],
                f"<3>pyclone run: Can't find source path {missing}: No such file or directory\n",
            ),
            (
                ["--overlay-src", p["lower1"], "--overlay", p["lower1"], p["work"], "/mnt"],
                "<3>pyclone run: Can't make overlay mount on /newroot/mnt with options "
                f"upperdir=/oldroot{p['lower1']},workdir=/oldroot{p['work']},"
                f"lowerdir=/oldroot{p['lower1']},userxattr: Overlay directories may not overlap\n",
            ),
        ]
        for options, message in cases:
            done = run_tool(who, "pyclone", *base, *options, "true")
            assert (done.returncode, done.stderr) == (1, message)
        bwrap = bwrap_with("--overlay-src")
        if bwrap is not None:
            command = [*(SETPRIV if who == "nobody" else []), *bwrap, *base, *cases[0][0], "true"]
            theirs = subprocess.run(
                command, capture_output=True, text=True, timeout=WAIT, cwd="/", check=False
            )
            assert theirs.returncode == 1
            assert theirs.stderr == cases[0][1].replace("pyclone run", "bwrap")
