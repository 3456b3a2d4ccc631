"""``pyclone run``'s filesystem options (--dir, --file, --perms, ...): parsing, order, bwrap's."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pyclone.cli import build_parser
from pyclone.sandbox import FsOp, sandbox_from_args

from conftest import WAIT, require_root
from sandbox_helpers import ROOT_DIR

HOST_ROOT = ["--bind", "/", "/", "--tmpfs", "/tmp"]


@contextlib.contextmanager
def data_pipe(data: bytes) -> Iterator[int]:
    """The read end of a pipe holding ``data``, its write end closed."""
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    try:
        yield read_end
    finally:
        with contextlib.suppress(OSError):  # the option read it and closed it, as bwrap does
            os.close(read_end)


def _closed_fd() -> str:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    return str(read_end)


BWRAPS = True  # the message is bwrap's own, word for word
OURS = False  # pyclone's wording (argparse's, or a read that bwrap makes later)


@pytest.mark.parametrize(
    ("line", "message", "same_as_bwrap"),
    [
        (["--perms", "9", "--dir", "/x"], "--perms takes an octal argument <= 07777", BWRAPS),
        (["--perms", "10000", "--dir", "/x"], "--perms takes an octal argument <= 07777", BWRAPS),
        (["--perms", "", "--dir", "/x"], "--perms takes an octal argument <= 07777", BWRAPS),
        (["--perms", "1", "--perms", "2", "--dir", "/x"], "--perms given twice", BWRAPS),
        (["--perms", "0755", "--bind", "/", "/"], "--perms must be followed by an option", BWRAPS),
        (["--perms", "0", "--unshare-pid", "--dir", "/x"], "--perms must be followed by", BWRAPS),
        (["--size", "100", "--dir", "/x"], "--size must be followed by --tmpfs", BWRAPS),
        (["--size", "0", "--tmpfs", "/x"], "--size takes a non-zero number of bytes", BWRAPS),
        (["--size", "1k", "--tmpfs", "/x"], "--size takes a non-zero number of bytes", BWRAPS),
        (["--size", "1", "--size", "2", "--tmpfs", "/x"], "--size given twice", BWRAPS),
        (["--chmod", "8", "/x"], "--chmod takes an octal argument <= 07777", BWRAPS),
        (["--file", "x", "/f"], "Invalid fd: x", BWRAPS),
        (["--bind-data", "", "/f"], "Invalid fd: ", BWRAPS),
        (["--chmod", "0755"], "--chmod: expected 2 arguments", OURS),
        (["--perms"], "--perms: expected one argument", OURS),
        (["--ro-bind-data", "CLOSED", "/f"], "Bad file descriptor", OURS),
    ],
)
def test_bad_filesystem_options_are_refused_clearly(
    line: list[str], message: str, same_as_bwrap: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    line = [_closed_fd() if word == "CLOSED" else word for word in line]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", *line, "--", "true"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    bwrap = shutil.which("bwrap")
    if same_as_bwrap and bwrap is not None:
        done = subprocess.run(
            [bwrap, *line, "true"], capture_output=True, text=True, timeout=WAIT, check=False
        )
        assert done.returncode != 0 and message in done.stderr, done.stderr


def test_perms_and_size_apply_to_the_next_operation_only() -> None:
    args = build_parser().parse_args(
        [
            "run", "--perms", "0700", "--size", "0x1000", "--tmpfs", "/a", "--tmpfs", "/b",
            "--size", "010", "--perms", "1777", "--tmpfs", "/c", "--dir", "/d",
            "--perms", "0", "--dir", "/e", "--chmod", "0644", "/e", "--remount-ro", "/a",
            "--", "true",
        ]
    )  # fmt: skip
    assert sandbox_from_args(args).ops == (
        FsOp("tmpfs", "/a", mode=0o700, size=4096),
        FsOp("tmpfs", "/b", mode=0o755),
        FsOp("tmpfs", "/c", mode=0o1777, size=8),
        FsOp("dir", "/d", mode=0o755),
        FsOp("dir", "/e", mode=0),
        FsOp("chmod", "/e", mode=0o644),
        FsOp("remount_ro", "/a"),
    )


def test_file_data_is_read_from_its_descriptor_which_is_closed() -> None:
    with data_pipe(b"hello\0world") as fd:
        args = build_parser().parse_args(["run", "--file", str(fd), "/etc/motd", "--", "true"])
        with pytest.raises(OSError):
            os.fstat(fd)  # read to its end and closed, as bwrap does
    assert sandbox_from_args(args).ops == (
        FsOp("file", "/etc/motd", mode=0o666, data=b"hello\0world"),
    )


@pytest.mark.parametrize(
    ("line", "keywords"),
    [
        # already parents first, distinct destinations: the keyword options say the same
        (["--bind", "/", "/", "--tmpfs", "/tmp", "--proc", "/proc"], True),
        (["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib"], True),
        # a later operation covers an earlier one: only the command line's order says it
        (["--tmpfs", "/tmp", "--bind", "/", "/"], False),
        (["--bind", "/", "/", "--bind", "/", "/"], False),
        (["--symlink", "dir", "/tmp/link", "--bind", "/etc", "/tmp/link"], False),
        (["--tmpfs", "/tmp", "--dir", "/tmp/d"], False),
    ],
)
def test_the_command_lines_order_is_kept(line: list[str], keywords: bool) -> None:
    sandbox = sandbox_from_args(build_parser().parse_args(["run", *line, "--", "true"]))
    if keywords:
        assert sandbox.ops == ()
        assert sandbox.tmpfs or sandbox.ro_bind
    else:
        kinds = [word[2:].replace("-", "_") for word in line if word.startswith("--")]
        assert [op.kind for op in sandbox.ops] == kinds
        assert sandbox.bind == sandbox.tmpfs == sandbox.symlink == ()


_SCRIPT = """\
stat -c '%a %n' /tmp/a /tmp/a/b /tmp/f /tmp/ro /tmp/bd /tmp/s /tmp/r
cat /tmp/f /tmp/ro /tmp/bd
stat -f -c %b /tmp/s
touch /tmp/r/x 2>/dev/null || echo read-only
echo > /tmp/ro 2>/dev/null || echo data read-only
umask
"""


def _operations_line(program: list[str]) -> subprocess.CompletedProcess[str]:
    with data_pipe(b"file\n") as f, data_pipe(b"ro\n") as ro, data_pipe(b"bd\n") as bd:
        line = [
            *HOST_ROOT,
            "--perms", "0750", "--dir", "/tmp/a/b",
            "--file", str(f), "/tmp/f",
            "--perms", "0604", "--ro-bind-data", str(ro), "/tmp/ro",
            "--bind-data", str(bd), "/tmp/bd",
            "--chmod", "1777", "/tmp/a",
            "--perms", "01777", "--size", "65536", "--tmpfs", "/tmp/s",
            "--tmpfs", "/tmp/r", "--remount-ro", "/tmp/r",
            "sh", "-c", _SCRIPT,
        ]  # fmt: skip
        return subprocess.run(
            ["sh", "-c", 'umask 027; exec "$@"', "sh", *program, *line],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=dict(os.environ, PYTHONPATH=ROOT_DIR),
            pass_fds=(f, ro, bd),
            check=False,
        )


def test_operations_do_what_bwraps_do() -> None:
    require_root()
    ours = _operations_line([sys.executable, "-m", "pyclone", "run"])
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.splitlines() == [
        "1777 /tmp/a", "750 /tmp/a/b", "666 /tmp/f", "604 /tmp/ro", "600 /tmp/bd",
        "1777 /tmp/s", "755 /tmp/r", "file", "ro", "bd", "16", "read-only", "data read-only",
        "0027",
    ]  # fmt: skip
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bwrap is not installed: nothing to compare with (apt-get install bubblewrap)")
    theirs = _operations_line([bwrap])
    assert (theirs.returncode, theirs.stdout) == (0, ours.stdout), theirs.stderr
