"""``pyclone run``'s filesystem options (--dir, --file, --perms, ...): parsing, order, bwrap's."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bwrap_oracle import Oracle, oracle

from pyclone.cli import build_parser
from pyclone.sandbox import FsOp, sandbox_from_args

from conftest import WAIT, require_root
from sandbox_helpers import NOBODY, ROOT_DIR, WHO, bwrap_version, require_bwrap

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
        (["--bind-fd", "x", "/d"], "Invalid fd: x", BWRAPS),
        (["--ro-bind-fd", "-1", "/d"], "Invalid fd: -1", BWRAPS),
        (["--bind-fd", "0x3", "/d"], "Invalid fd: 0x3", BWRAPS),
        (["--perms", "0700", "--mqueue", "/m"], "--perms must be followed by an option", BWRAPS),
        (["--size", "1", "--mqueue", "/m"], "--size must be followed by --tmpfs", BWRAPS),
        (["--bind-fd", "5"], "--bind-fd: expected 2 arguments", OURS),
        (["--mqueue"], "--mqueue: expected one argument", OURS),
    ],
)
def test_bad_filesystem_options_are_refused_clearly(
    line: list[str], message: str, same_as_bwrap: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    line = [_closed_fd() if word == "CLOSED" else word for word in line]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", *line, "--", "true"])
    assert exit_info.value.code == 1  # bwrap's
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


def test_fd_binds_keep_the_descriptors_number_for_the_child() -> None:
    args = build_parser().parse_args(
        ["run", "--bind-fd", "7", "/a", "--ro-bind-fd", "0012", "/b", "--", "true"]
    )
    assert sandbox_from_args(args).ops == (
        FsOp("bind_fd", "/a", fd=7),
        FsOp("ro_bind_fd", "/b", fd=12),
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
        # kinds the keyword options do not have
        (["--bind-try", "/a", "/a", "--ro-bind-fd", "3", "/b", "--mqueue", "/c"], False),
        (["--dev-bind-try", "/d", "/d", "--bind-fd", "0", "/", "--ro-bind-try", "e", "/e"], False),
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


# -- the try binds, the descriptor binds and mqueue, next to bwrap ------------------------

W = "@W"  #: the oracle's working directory, in a command line and in what is compared

Outcome = tuple[int, str, str]  #: (exit status, stdout, stderr without the program's name)

#: The bwrap release whose messages pyclone follows word for word (see test_sandbox_cli_errors).
WORDED_AS = (0, 8)


def _bind_tree(o: Oracle) -> list[int]:
    """dir/f, file, dangling -> /nowhere..., loop -> loop: owned by the user the case runs as."""
    os.mkdir(o.path("dir"))
    o.write("dir/f", "f\n")
    o.write("file", "file\n")
    os.symlink("/nowhere-pyclone-test", o.path("dangling"))
    os.symlink("loop", o.path("loop"))
    if o.who == "nobody":
        for name in ("dir", "dangling", "loop"):
            os.lchown(o.path(name), NOBODY, NOBODY)
    return []


def _run_line(
    implementation: str,
    who: str,
    line: list[str],
    prepare: Callable[[Oracle], list[int]] = _bind_tree,
    redirect: str = "",
) -> Outcome:
    """``line`` run by one implementation as ``who``; fds from ``prepare`` fill ``{0}``, ..."""
    with oracle(implementation, who) as o:
        fds = prepare(o)
        try:
            words = [word.replace(W, o.workdir) for word in line]
            done = subprocess.run(
                o.argv(words, redirect.format(*fds)),
                capture_output=True,
                text=True,
                timeout=WAIT,
                cwd=o.workdir,
                env=o.environment(),
                stdin=subprocess.DEVNULL,
                pass_fds=fds,
                check=False,
            )
        finally:
            for fd in fds:
                os.close(fd)
        message = done.stderr.removeprefix(f"{o.name}: ")
        return done.returncode, done.stdout.replace(o.workdir, W), message.replace(o.workdir, W)


def _like_bwrap(who: str, line: list[str], expected: Outcome, **how: Any) -> None:
    """pyclone gives ``expected``; bwrap the same."""
    ours = _run_line("pyclone", who, [*HOST_ROOT, *line], **how)
    assert ours == expected
    require_bwrap()
    theirs = _run_line("bwrap", who, [*HOST_ROOT, *line], **how)
    if bwrap_version()[:2] == WORDED_AS:
        assert theirs == ours
    else:  # later releases reword some messages
        assert theirs[:2] == ours[:2]


_LS = ["sh", "-c", "ls -A /tmp; echo ."]  # nothing in /tmp
#: the hardening flags of the mount on /tmp/x, one a line
_FLAGS = (
    "grep ' /tmp/x ' /proc/self/mountinfo | cut -d' ' -f6 | tr , '\\n'"
    " | grep -x -e ro -e rw -e nosuid -e nodev"
)


@WHO
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # missing (ENOENT, a dangling symlink too): nothing is made, not even the parents
        (["--bind-try", "/nonexistent-pyclone", "/tmp/a/b", *_LS], (0, ".\n", "")),
        (["--bind-try", f"{W}/dangling", "/tmp/x", *_LS], (0, ".\n", "")),
        (["--ro-bind-try", f"{W}/dir", "/tmp/x", "--bind-try", f"{W}/gone", "/tmp/x", "cat",
          "/tmp/x/f"], (0, "f\n", "")),
        # found: the same bind, read-only staying read-only, nosuid and nodev but for dev
        (["--ro-bind-try", f"{W}/dir", "/tmp/x", "sh", "-c", f"touch /tmp/x/n 2>&1; {_FLAGS}"],
         (0, "touch: cannot touch '/tmp/x/n': Read-only file system\nro\nnosuid\nnodev\n", "")),
        (["--bind-try", f"{W}/dir", "/tmp/x", "sh", "-c", f"touch /tmp/x/n; {_FLAGS}"],
         (0, "rw\nnosuid\nnodev\n", "")),
        (["--dev-bind-try", "/dev/null", "/tmp/x", "sh", "-c", f"echo > /tmp/x && {_FLAGS}"],
         (0, "rw\nnosuid\n", "")),
        (["--bind-try", "/dev/null", "/tmp/x", "sh", "-c", "echo > /tmp/x || echo no"],
         (0, "no\n", "sh: 1: cannot create /tmp/x: Permission denied\n")),
        # any other failure to find the source is an error, as for --bind
        (["--bind-try", f"{W}/file/x", "/tmp/x", "true"],
         (1, "", f"Can't find source path {W}/file/x: Not a directory\n")),
        (["--dev-bind-try", f"{W}/loop", "/tmp/x", "true"],
         (1, "", f"Can't find source path {W}/loop: Too many levels of symbolic links\n")),
    ],
    ids=["missing", "dangling", "keeps-earlier", "ro", "rw", "dev", "nodev", "enotdir", "eloop"],
)  # fmt: skip
def test_try_binds_skip_a_missing_source_only(who: str, line: list[str], expected: Outcome) -> None:
    _like_bwrap(who, line, expected)


@WHO
def test_try_binds_refuse_a_source_they_may_not_look_for(who: str) -> None:
    line = ["--bind-try", "/root/nonexistent-pyclone", "/tmp/x", "true"]
    if who == "root" or os.stat("/root").st_mode & 0o001:
        _like_bwrap(who, line, (0, "", ""))  # root may look: it is missing
    else:
        message = "Can't find source path /root/nonexistent-pyclone: Permission denied\n"
        _like_bwrap(who, line, (1, "", message))


def _open(name: str, flags: int = os.O_RDONLY) -> Callable[[Oracle], list[int]]:
    def prepare(o: Oracle) -> list[int]:
        _bind_tree(o)
        return [os.open(o.path(name), flags | os.O_CLOEXEC)]

    return prepare


def _deleted_dir(o: Oracle) -> list[int]:
    os.mkdir(o.path("gone"))
    fd = os.open(o.path("gone"), os.O_RDONLY | os.O_CLOEXEC)
    os.rmdir(o.path("gone"))
    return [fd]


def _pipe(o: Oracle) -> list[int]:
    read_end, write_end = os.pipe()
    os.close(write_end)
    return [read_end]


_FD5_GONE = "[ -e /proc/self/fd/5 ] && echo kept || echo closed"


@WHO
@pytest.mark.parametrize(
    ("option", "prepare", "script", "expected"),
    [
        ("--bind-fd", _open("dir"), f"cat /tmp/x/f; touch /tmp/x/n; {_FD5_GONE}; {_FLAGS}",
         (0, "f\nclosed\nrw\nnosuid\nnodev\n", "")),
        ("--ro-bind-fd", _open("dir", os.O_PATH | os.O_DIRECTORY),
         f"touch /tmp/x/n || echo read-only; {_FD5_GONE}; {_FLAGS}",
         (0, "read-only\nclosed\nro\nnosuid\nnodev\n",
          "touch: cannot touch '/tmp/x/n': Read-only file system\n")),
        ("--bind-fd", _open("file"), "cat /tmp/x", (0, "file\n", "")),
        ("--bind-fd", _pipe, "true",
         (1, "", "Can't find source path /proc/self/fd/5: No such file or directory\n")),
        ("--bind-fd", _deleted_dir, "true",
         (1, "", "Can't find source path /proc/self/fd/5: No such file or directory\n")),
    ],
    ids=["dir", "ro-o-path", "file", "pipe", "deleted"],
)  # fmt: skip
def test_fd_binds_bind_what_the_descriptor_is_open_on(
    who: str,
    option: str,
    prepare: Callable[[Oracle], list[int]],
    script: str,
    expected: Outcome,
) -> None:
    line = [option, "5", "/tmp/x", "sh", "-c", script]
    _like_bwrap(who, line, expected, prepare=prepare, redirect="5<&{0}")


@WHO
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (["--bind-fd", "5", "/tmp/x", "true"],
         (1, "", "Can't find source path /proc/self/fd/5: No such file or directory\n")),
        # bwrap checks the mount against the descriptor, without following a symlink there
        (["--dir", "/tmp/real", "--symlink", "real", "/tmp/link", "--bind-fd", "5", "/tmp/link",
          "true"], (1, "", "Race condition binding dirfd: Invalid argument\n")),
    ],
    ids=["closed", "symlink-dest"],
)  # fmt: skip
def test_fd_binds_refuse_like_bwrap(who: str, line: list[str], expected: Outcome) -> None:
    prepare = _bind_tree if "--symlink" not in line else _open("dir")
    redirect = "" if "--symlink" not in line else "5<&{0}"
    _like_bwrap(who, line, expected, prepare=prepare, redirect=redirect)


@WHO
def test_an_fd_bind_of_a_standard_descriptor_leaves_it_open(who: str) -> None:
    """bwrap closes 0-2 too (the next file opened then takes the number); pyclone keeps them.

    (A directory cannot be pyclone's stdin: Python refuses to start with one.)
    """
    line = [*HOST_ROOT, "--bind-fd", "0", "/tmp/x", "sh", "-c", "cat /tmp/x; cat <&0"]
    ours = _run_line("pyclone", who, line, _open("file"), "0<&{0}")
    assert ours == (0, "file\nfile\n", "")


@WHO
def test_mqueue_mounts_the_queues_of_the_ipc_namespace(who: str) -> None:
    # a new ipc namespace's queues, made (open O_CREAT) and read through the mount
    script = "ls -A /tmp/mq; touch /tmp/mq/q; cat /tmp/mq/q; stat -c %a /tmp/mq"
    line = ["--unshare-ipc", "--mqueue", "/tmp/mq", "sh", "-c", script]
    queue = "QSIZE:0          NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n"
    _like_bwrap(who, line, (0, f"{queue}1777\n", ""))
    # nosuid, nodev and noexec: pyclone's hardening (bwrap mounts it without them)
    flags = _run_line(
        "pyclone", who, [*HOST_ROOT, *line[:3], "grep", " /tmp/mq ", "/proc/self/mountinfo"]
    )
    assert {"nosuid", "nodev", "noexec"} <= set(flags[1].split()[5].split(","))


@WHO
def test_mqueue_without_an_ipc_namespace(who: str) -> None:
    """The caller's queues as root; refused to uid 65534, whose user namespace does not own them."""
    line = ["--mqueue", "/tmp/mq", "stat", "-c", "%a", "/tmp/mq"]
    if who == "root":
        _like_bwrap(who, line, (0, "1777\n", ""))
    else:
        message = "Can't mount mqueue on /newroot/tmp/mq: Operation not permitted\n"
        _like_bwrap(who, line, (1, "", message))
    not_a_dir = ["--file", "5", "/tmp/f", "--mqueue", "/tmp/f", "true"]
    expected = (1, "", "Can't mkdir /tmp/f: Not a directory\n")
    _like_bwrap(who, not_a_dir, expected, prepare=_open("file"), redirect="5<&{0}")
