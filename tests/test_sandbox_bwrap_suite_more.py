"""bubblewrap's own test suite (second half of tests/test-run.sh, test-specifying-userns.sh,
test-specifying-pidns.sh, test-forward-signals.sh, test-seccomp.py's invalid-argument case)
as the oracle for ``pyclone run``.

Same scheme as ``test_sandbox_bwrap_suite.py``: one case per upstream ``ok ...`` line,
run by real ``bwrap`` and by ``python -m pyclone run``, as root and as uid 65534, with
pyclone's measured differences as xfails listed in ``PYCLONE_GAPS``.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from bwrap_oracle import (
    RUN,
    Gap,
    Oracle,
    end_session,
    lock_is_held,
    oracle,
    require_tools,
    variants,
    wait_until,
)

from conftest import WAIT

#: Where ``pyclone run`` differs from bwrap today: (case, who, upstream's loop value, reason);
#: None matches every value.  Every reason was measured on this machine.
PYCLONE_GAPS: list[Gap] = []

#: Cases real bwrap fails on this machine (skipped for both: upstream's check judges nothing).
BWRAP_FAILS: list[Gap] = []


def case(name: str, alts: list[str] | None = None) -> pytest.MarkDecorator:
    return variants(name, PYCLONE_GAPS, BWRAP_FAILS, alts)


def _stat_mode(path: str) -> str:
    """``stat -c %a``: the permission bits in octal, without leading zeros."""
    return f"{os.stat(path).st_mode & 0o7777:o}"


@case("caps_as_root")
def test_caps_as_root(implementation: str, who: str) -> None:
    """Mirrors "ok - we have the expected caps as uid 0" (upstream checks it as uid 0).

    The capability state inside equals the caller's (``capsh --print``), with
    and without --as-pid-1; --cap-drop ALL leaves none, and dropping CAP_KILL
    and CAP_FOWNER leaves CAP_NET_BIND_SERVICE.  As upstream, the drops run
    with the loop's last value, --as-pid-1.
    """
    if who != "root":
        pytest.skip("upstream checks this only as uid 0")
    require_tools("capsh", "setpriv")
    with oracle(implementation, who) as o:
        orig = subprocess.run(
            ["setpriv", "--no-new-privs", "capsh", "--print"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        ).stdout
        for opt in ("", "--as-pid-1"):
            done = o.run(*RUN, *opt.split(), "--unshare-pid", "capsh", "--print")
            assert done.returncode == 0, done.stderr
            assert done.stdout == orig, opt
        done = o.run(*RUN, "--as-pid-1", "--cap-drop", "ALL", "--unshare-pid", "capsh", "--print")
        assert re.search(r"Current: =$", done.stdout, re.MULTILINE), done.stdout
        done = o.run(
            *RUN, "--as-pid-1", "--cap-drop", "CAP_KILL", "--cap-drop", "CAP_FOWNER",
            "--unshare-pid", "capsh", "--print",
        )  # fmt: skip
        current = re.search(r"^Current: =.*$", done.stdout, re.MULTILINE)
        assert current, done.stdout
        if current.group().endswith("+eip"):
            assert not re.search(r"cap_kill.*\+eip$", current.group())
            assert not re.search(r"cap_fowner.*\+eip$", current.group())
            assert re.search(r"cap_net_bind_service.*\+eip$", current.group())
        else:  # capsh 2.29 and later lists what is dropped, as -eip
            assert re.search(r"^Current: =eip.*cap_kill.*-eip$", current.group())
            assert re.search(r"^Current: =eip.*cap_fowner.*-eip$", current.group())
            assert not re.search(r"cap_net_bind_service.*-eip$", current.group())


@case("die_with_parent", ["--die-with-parent", "--die-with-parent --unshare-pid"])
def test_die_with_parent(implementation: str, who: str, alt: str) -> None:
    """Mirrors "ok die with parent $die_with_parent_argv".

    A shell runs the sandbox (holding --lock-file) around ``sleep``; once the
    lock is held, SIGKILL to the shell must end the sandbox, which frees the
    lock.  Upstream restarts the sandbox in a loop because its probe takes the
    lock; this probe only asks (F_GETLK), so one start is enough.
    """
    with oracle(implementation, who) as o:
        lock = o.write("lock", "")
        shell = o.popen_in_shell(*RUN, *alt.split(), "--lock-file", lock, "sleep", "1h")
        try:
            wait_until(
                lambda: lock_is_held(lock) or shell.poll() is not None,
                "the sandbox to take the lock",
            )
            assert shell.poll() is None, "the sandbox ended before taking the lock"
            os.kill(shell.pid, signal.SIGKILL)
            wait_until(lambda: not lock_is_held(lock), "the lock to be freed")
        finally:
            end_session(shell)


@case("args_from_fd")
def test_args_from_fd(implementation: str, who: str) -> None:
    """Mirrors "ok - we can parse arguments from a fd" (three --args, NUL-separated)."""
    with oracle(implementation, who) as o:
        for n, suffix in ((3, ""), (4, "2"), (5, "3")):
            o.write(f"test.args{n}", f"--dir\0/tmp/hello/world{suffix}\0")
        script = (
            "test -d /tmp/hello/world && test -d /tmp/hello/world2 && test -d /tmp/hello/world3"
        )
        done = o.run(
            *RUN, "--args", "3", "--args", "4", "--args", "5", "/bin/sh", "-c", script,
            redirect="3<test.args3 4<test.args4 5<test.args5",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


@case("run_with_double_dash")
def test_run_with_double_dash(implementation: str, who: str) -> None:
    """Mirrors "ok - we can run with --"."""
    with oracle(implementation, who) as o:
        done = o.run(*RUN, "--", "sh", "-c", "echo hello")
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout


@case("inadvisable_name")
def test_inadvisable_name(implementation: str, who: str) -> None:
    """Mirrors "ok - we can run an inadvisable executable name with --"."""
    with oracle(implementation, who) as o:
        os.mkdir(o.path("bin"))
        if who == "nobody":
            os.chown(o.path("bin"), 65534, 65534)
        o.write("bin/--inadvisable-executable-name--", "#!/bin/sh\necho hello\n", 0o755)
        env = o.environment(PATH=o.path("bin") + ":" + o.env["PATH"])
        done = o.run(*RUN, "--", "--inadvisable-executable-name--", env=env)
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout


@case("defanged_by_double_dash")
def test_defanged_by_double_dash(implementation: str, who: str) -> None:
    """Mirrors "ok - options like --dev-bind are defanged by --"."""
    with oracle(implementation, who) as o:
        done = o.run(
            *RUN, "--", "--dev-bind", "/dev", "/dev", "sh", "-c", "echo should not have run"
        )
        assert done.returncode != 0
        assert "should not have run" not in done.stdout


@pytest.fixture
def host_tmp_file() -> Iterator[str]:
    """Upstream's ``mktemp /tmp/bwrap-test-XXXXXXXX`` holding "hello", readable by all."""
    fd, path = tempfile.mkstemp(prefix="bwrap-test-", dir="/tmp")
    with os.fdopen(fd, "w") as f:
        f.write("hello\n")
    os.chmod(path, 0o644)
    yield path
    os.unlink(path)


@case("bind_root_exposes_tmp")
def test_bind_root_exposes_tmp(implementation: str, who: str, host_tmp_file: str) -> None:
    """Mirrors "ok - bind-mount of / exposes real /tmp"."""
    with oracle(implementation, who) as o:
        done = o.run("--bind", "/", "/", "cat", host_tmp_file)
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout


@case("bind_tmp_exposes_tmp")
def test_bind_tmp_exposes_tmp(implementation: str, who: str, host_tmp_file: str) -> None:
    """Mirrors "ok - bind-mount of /tmp exposes real /tmp"."""
    with oracle(implementation, who) as o:
        done = o.run("--bind", "/", "/", "--bind", "/tmp", "/tmp", "cat", host_tmp_file)
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout


@case("bind_tmp_onto_mnt")
def test_bind_tmp_onto_mnt(implementation: str, who: str, host_tmp_file: str) -> None:
    """Mirrors "ok - bind-mount of /tmp onto /mnt exposes real /tmp"."""
    if not os.path.isdir("/mnt"):
        pytest.skip("/mnt does not exist")
    with oracle(implementation, who) as o:
        name = os.path.basename(host_tmp_file)
        done = o.run("--bind", "/", "/", "--bind", "/tmp", "/mnt", "cat", f"/mnt/{name}")
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout


def _not_visible(o: Oracle, *args: str) -> None:
    for old in ("/tmp/oldroot", "/tmp/newroot"):
        done = o.run(*args, "test", "-d", old)
        assert done.returncode == 1, f"{old} should not be visible: {done.stderr}"


@case("mount_onto_tmp")
def test_mount_onto_tmp(implementation: str, who: str) -> None:
    """Mirrors "ok - we can mount another directory onto /tmp".

    With the checks before it that ``$RUN`` leaves no /tmp/oldroot or
    /tmp/newroot visible.  ``test -d`` must say 1 (absent), not a setup error.
    """
    with oracle(implementation, who) as o:
        _not_visible(o, *RUN)
        o.write("input.txt", "hello\n")
        done = o.run("--bind", "/", "/", "--bind", o.workdir, "/tmp", "cat", "/tmp/input.txt")
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout
        _not_visible(o, "--bind", "/", "/", "--bind", o.workdir, "/tmp")


@case("mount_inside_tmp")
def test_mount_inside_tmp(implementation: str, who: str) -> None:
    """Mirrors "ok - we can mount another directory inside /tmp"."""
    with oracle(implementation, who) as o:
        o.write("input.txt", "hello\n")
        done = o.run(*RUN, "--bind", o.workdir, "/tmp/here", "cat", "/tmp/here/input.txt")
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout
        _not_visible(o, *RUN, "--bind", o.workdir, "/tmp/here")


@case("mount_point_perms")
def test_mount_point_perms(implementation: str, who: str) -> None:
    """Mirrors "ok - Files and directories created as mount points have expected permissions".

    The mount points are made on the host (under the bind of /): 755 and 444.
    """
    with oracle(implementation, who) as o:
        os.mkdir(o.path("some-dir"))
        o.write("some-file", "")
        if who == "nobody":
            os.chown(o.path("some-dir"), 65534, 65534)
        done = o.run(
            *RUN,
            "--bind", o.path("some-dir"), o.path("new-dir-mountpoint"),
            "--bind", o.path("some-file"), o.path("new-file-mountpoint"),
            "true",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert _stat_mode(o.path("new-dir-mountpoint")) == "755"
        assert _stat_mode(o.path("new-file-mountpoint")) == "444"


@case("bind_socket")
def test_bind_socket(implementation: str, who: str) -> None:
    """Mirrors "ok - Can bind-mount a socket (/dev/log) onto a socket"."""
    if not os.path.exists("/dev/log") or not stat.S_ISSOCK(os.stat("/dev/log").st_mode):
        pytest.skip("/dev/log is not a socket, cannot test bubblewrap#409")
    with oracle(implementation, who) as o:
        log = os.path.realpath("/dev/log")
        done = o.run(*RUN, "--bind", "/", "/", "--bind", log, log, "true")
        assert done.returncode == 0, done.stderr


@case("dirs_explicit_perms")
def test_dirs_explicit_perms(implementation: str, who: str) -> None:
    """Mirrors "ok - Directories created explicitly have expected permissions".

    --perms applies to the next --dir only; --dir leaves an existing
    directory's mode alone; --chmod changes it.
    """
    with oracle(implementation, who) as o:
        for name, mode in (("dir-already-existed", 0o710), ("dir-already-existed2", 0o754)):
            os.mkdir(o.path(name))
            os.chmod(o.path(name), mode)
            if who == "nobody":
                os.chown(o.path(name), 65534, 65534)
        done = o.run(
            *RUN,
            "--perms", "1741", "--dir", o.path("new-dir-set-perms"),
            "--dir", o.path("dir-already-existed"),
            "--perms", "0741", "--dir", o.path("dir-already-existed2"),
            "--dir", o.path("dir-chmod"),
            "--chmod", "1755", o.path("dir-chmod"),
            "--dir", o.path("new-dir-default-perms"),
            "true",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert _stat_mode(o.path("new-dir-default-perms")) == "755"
        assert _stat_mode(o.path("new-dir-set-perms")) == "1741"
        assert _stat_mode(o.path("dir-already-existed")) == "710"
        assert _stat_mode(o.path("dir-already-existed2")) == "754"
        assert _stat_mode(o.path("dir-chmod")) == "1755"


#: --perms of a --dir -> the mode its created parent gets (upstream's table).
PARENT_MODES = {
    None: "755", "1777": "755", "0755": "755", "0644": "755", "0750": "750",
    "0710": "750", "0720": "750", "0640": "750", "0700": "700", "0600": "700",
    "0705": "705", "0604": "705", "0000": "700",
}  # fmt: skip


@case("dirs_parent_perms")
def test_dirs_parent_perms(implementation: str, who: str) -> None:
    """Mirrors "ok - Directories created as parents have expected permissions"."""
    with oracle(implementation, who) as o:
        args: list[str] = []
        for perms in PARENT_MODES:
            parent = "parent" if perms is None else f"parent-of-{perms}"
            args += ([] if perms is None else ["--perms", perms]) + ["--dir", o.path(parent, "dir")]
        done = o.run(*RUN, *args, "true")
        assert done.returncode == 0, done.stderr
        for perms, want in PARENT_MODES.items():
            parent = "parent" if perms is None else f"parent-of-{perms}"
            assert _stat_mode(o.path(parent)) == want, parent
            os.chmod(o.path(parent), 0o700)  # so the work directory can be removed


@case("tmpfs_perms")
def test_tmpfs_perms(implementation: str, who: str) -> None:
    """Mirrors "ok - tmpfs has expected permissions" (--perms 01777, and 755 by default)."""
    with oracle(implementation, who) as o:
        done = o.run(*RUN, "--perms", "01777", "--tmpfs", o.workdir, "stat", "-c", "%a", o.workdir)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "1777"
        done = o.run(*RUN, "--tmpfs", o.workdir, "stat", "-c", "%a", o.workdir)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "755"


@case("file_perms")
def test_file_perms(implementation: str, who: str) -> None:
    """Mirrors "ok - files have expected permissions".

    --file makes 666, --bind-data and --ro-bind-data 600; --perms 0640 each.
    """
    with oracle(implementation, who) as o:
        for option, default in (
            ("--file", "666"),
            ("--bind-data", "600"),
            ("--ro-bind-data", "600"),
        ):
            for perms, want in ((None, default), ("0640", "640")):
                extra = [] if perms is None else ["--perms", perms]
                done = o.run(
                    *RUN, *extra, option, "0", "/tmp/file", "stat", "-c", "%a", "/tmp/file"
                )
                assert done.returncode == 0, (option, perms, done.stderr)
                assert done.stdout.strip() == want, (option, perms)


@case("environment")
def test_environment(implementation: str, who: str) -> None:
    """Mirrors "ok - environment manipulation" (--setenv, --unsetenv, --clearenv keeps PWD)."""
    with oracle(implementation, who) as o:
        echo = ["sh", "-c", 'echo "$FOO$BAR"']
        for foo in ("", "wrong"):
            done = o.run(
                *RUN, "--setenv", "FOO", "bar", *echo, env=o.environment(FOO=foo, BAR="baz")
            )
            assert done.stdout == "barbaz\n", done.stderr
        printf = ["sh", "-c", 'printf "%s%s" "$FOO" "$BAR"']
        done = o.run(*RUN, "--unsetenv", "FOO", *printf, env=o.environment(FOO="wrong", BAR="baz"))
        assert done.stdout == "baz", done.stderr
        env = o.environment(FOO="wrong", BAR="wrong")
        done = o.run(*RUN, "--clearenv", "/usr/bin/env", env=env)
        assert done.stdout == f"PWD={os.path.realpath(o.workdir)}\n", done.stderr


@case("bind_fd")
def test_bind_fd(implementation: str, who: str) -> None:
    """Mirrors "ok bind-fd": the directory open on fd 100 (the work directory) bound on /tmp."""
    with oracle(implementation, who) as o:
        o.write("file-data", "foobar\n")
        done = o.run(
            *RUN, "--proc", "/proc", "--dev", "/dev", "--bind", "/", "/",
            "--bind-fd", "100", "/tmp", "cat", "/tmp/file-data",
            redirect="100< .",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == "foobar\n"


def _child_pid(info: str) -> int:
    """upstream's extract_child_pid: the number after "child-pid"."""
    found = re.search(r'"child-pid": ([0-9]+)', info)
    assert found, info
    return int(found.group(1))


def _join_namespaces(implementation: str, who: str, unshare: list[str], ns: str) -> None:
    """The first sandbox waits on a fifo; the second joins its namespaces by fd."""
    with oracle(implementation, who) as o:
        os.mkfifo(o.path("donepipe"))
        if who == "nobody":
            os.chown(o.path("donepipe"), 65534, 65534)
        script = f"readlink /proc/self/ns/{ns} > sandbox-{ns}; cat < donepipe"
        first = o.popen(
            *RUN, "--info-fd", "42", *unshare, "sh", "-c", script, redirect="42>info.json"
        )
        try:
            wait_until(
                lambda: os.path.exists(o.path(f"sandbox-{ns}")) or first.poll() is not None,
                f"sandbox-{ns}",
            )
            assert first.poll() is None, "the first sandbox ended early"
            wait_until(lambda: '"child-pid"' in o.read("info.json"), "info.json")
            pid = _child_pid(o.read("info.json"))
            join = ["--userns", "11"] + (["--pidns", "12"] if ns == "pid" else [])
            redirect = f"11< /proc/{pid}/ns/user" + (
                f" 12< /proc/{pid}/ns/pid" if ns == "pid" else ""
            )
            second = o.run(*RUN, *join, "readlink", f"/proc/self/ns/{ns}", redirect=redirect)
            with open(o.path("donepipe"), "w") as f:
                f.write("foo\n")
            assert first.wait(WAIT) == 0
            assert second.returncode == 0, second.stderr
            assert second.stdout == o.read(f"sandbox-{ns}")
        finally:
            end_session(first)


@case("userns")
def test_userns(implementation: str, who: str) -> None:
    """Mirrors test-specifying-userns.sh's "ok - Test --userns"."""
    _join_namespaces(implementation, who, ["--unshare-user"], "user")


@case("pidns")
def test_pidns(implementation: str, who: str) -> None:
    """Mirrors test-specifying-pidns.sh's "ok - Test --pidns"."""
    _join_namespaces(implementation, who, ["--unshare-user", "--unshare-pid"], "pid")


def _signal_when_ready(o: Oracle, *options: str) -> str:
    """Start a command that traps SIGUSR1, send SIGUSR1 to the sandbox program, return output.

    Upstream signals 0.1 s after the start and lets the command sleep 0.5 s;
    here the command says when its trap is set (a file) and waits until the
    program has ended (another file), so no timing is assumed.
    """
    ready, done = o.path("ready"), o.path("done")
    script = f'trap "echo USR1; exit" USR1; : > {ready}; while [ ! -e {done} ]; do sleep 0.05; done'
    sandbox = o.popen(*RUN, *options, "/bin/sh", "-c", script, stdout=subprocess.PIPE)
    try:
        wait_until(lambda: os.path.exists(ready) or sandbox.poll() is not None, "the trap")
        assert sandbox.poll() is None, "the sandbox ended before the command was ready"
        os.kill(sandbox.pid, signal.SIGUSR1)
        sandbox.wait(WAIT)
        o.write("done", "")
        out, _ = sandbox.communicate(timeout=WAIT)
        return out
    finally:
        end_session(sandbox)


@case("no_forwarded_signals")
def test_no_forwarded_signals(implementation: str, who: str) -> None:
    """Mirrors test-forward-signals.sh's "No signals forwarded without --forward-signal"."""
    with oracle(implementation, who) as o:
        assert _signal_when_ready(o) == ""


@case("forwarded_signals")
def test_forwarded_signals(implementation: str, who: str) -> None:
    """Mirrors test-forward-signals.sh's "Successfully forwarded signals with --forward-signals".

    No bwrap release up to 0.13.1 has --forward-signals (upstream's test script
    already checks it): the bwrap variant runs a bwrap that has it, or is skipped.
    pyclone forwards the signals its init forwards; the case sends SIGUSR1.
    """
    with oracle(implementation, who, needs="--forward-signals") as o:
        assert _signal_when_ready(o, "--forward-signals") == "USR1\n"


@case("seccomp_invalid")
def test_seccomp_invalid(implementation: str, who: str) -> None:
    """Mirrors test-seccomp.py's test_seccomp_invalid: bad seccomp arguments, exit 1.

    A descriptor that is not a number or is -1, --seccomp with
    --add-seccomp-fd (either order), one descriptor read twice, and data
    whose length is not a multiple of 8 (a BPF instruction) are refused
    with the program's message.  The other test-seccomp.py cases need
    libseccomp's Python module to build filters, which this machine lacks.
    """
    with oracle(implementation, who) as o:
        o.write("allow", b"")
        o.write("deny", b"")
        both = "3<allow 4<deny"
        refused = [
            (["--add-seccomp-fd", "-1"], "", f"{o.name}: Invalid fd: -1\n"),
            (["--seccomp", "0a"], "", f"{o.name}: Invalid fd: 0a\n"),
            (
                ["--add-seccomp-fd", "4", "--seccomp", "3"],
                both,
                f"{o.name}: --seccomp cannot be combined with --add-seccomp-fd\n",
            ),
            (
                ["--seccomp", "3", "--add-seccomp-fd", "4"],
                both,
                "--add-seccomp-fd cannot be combined with --seccomp",
            ),
            (
                ["--add-seccomp-fd", "3", "--add-seccomp-fd", "3"],
                both,
                f"{o.name}: Can't read seccomp data: ",
            ),
        ]
        for options, redirect, message in refused:
            done = o.run("--ro-bind", "/", "/", *options, "true", redirect=redirect)
            assert message in done.stderr, (options, done.stderr)
            assert done.returncode == 1, options
        o.write("allow", b"\x01")
        done = o.run(
            "--ro-bind",
            "/",
            "/",
            "--add-seccomp-fd",
            "4",
            "--add-seccomp-fd",
            "3",
            "true",
            redirect=both,
        )
        assert f"{o.name}: Invalid seccomp data, must be multiple of 8\n" in done.stderr, (
            done.stderr
        )
        assert done.returncode == 1
