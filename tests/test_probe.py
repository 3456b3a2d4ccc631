"""probe() and the ``probe`` / ``explain`` commands, checked against the kernel."""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import sys
import typing

import pytest

import pyclone
from pyclone import CloneFlag as F
from pyclone.cli import main
from pyclone.probe import Probe, _kernel_version, probe

from conftest import WAIT, Health, reap, require_root, userns_available

KEYS = {
    "kernel",
    "machine",
    "clone3",
    "pidfd_thread",
    "newtime_clone3",
    "into_cgroup",
    "set_tid",
    "user_namespaces",
    "unprivileged_user_namespaces",
    "kcmp",
    "pidfd_get_info",
    "pidfd_info_exit",
}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyclone", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_probe_creates_no_task(healthy: Health) -> None:
    """No child, no descriptor, no thread is left (the health fixture checks)."""
    before = set(os.listdir("/proc/self/task"))
    found = probe()
    assert set(found) == KEYS
    assert set(os.listdir("/proc/self/task")) == before
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG | pyclone._pyclone.WALL)


def test_probe_is_exported() -> None:
    assert pyclone.probe is probe
    assert isinstance(pyclone.probe(), dict)


def test_probe_values_have_the_types_its_typeddict_declares() -> None:
    found = probe()
    hints = typing.get_type_hints(Probe)
    assert set(hints) == set(found) == KEYS
    for key, value in found.items():
        allowed = typing.get_args(hints[key]) or (hints[key],)
        assert isinstance(value, allowed), (key, value, hints[key])


def test_probe_agrees_with_the_kernel_version() -> None:
    found = probe()
    version = _kernel_version()
    assert found["kernel"] == os.uname().release
    assert found["clone3"] is (version >= (5, 3))
    assert found["set_tid"] is (version >= (5, 5))
    assert found["into_cgroup"] is (version >= (5, 7))
    if version >= (6, 3):  # older stable kernels may have the fix backported
        assert found["newtime_clone3"] is True
    if platform.machine() == "x86_64":
        assert found["pidfd_thread"] is (version >= (6, 9))
    else:
        assert found["pidfd_thread"] is None
    assert found["pidfd_get_info"] is (version >= (6, 13))


def test_probe_agrees_with_real_attempts(healthy: Health) -> None:
    found = probe()
    assert found["kcmp"] == (pyclone.kcmp(os.getpid(), os.getpid(), 1) == 0)
    assert found["user_namespaces"] == userns_available()
    if found["newtime_clone3"] and os.geteuid() == 0:
        with pyclone.spawn_task(lambda: 0, new="time") as task:
            assert task.wait(WAIT) == 0
    if not found["clone3"]:
        with pytest.raises(OSError) as info:
            pyclone.clone3(lambda: 0)
        assert info.value.errno == errno.ENOSYS


def test_probe_as_unprivileged_user() -> None:
    require_root("dropping to uid 65534 needs root first")
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            found = probe()
            try:
                child = pyclone.clone(lambda: 0, F.NEWUSER | 17)
            except PermissionError:
                can = False
            else:
                os.waitpid(child, 0)
                can = True
            code = 0 if found["user_namespaces"] == can and found["clone3"] else 3
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(reap(pid)) == 0


def test_probe_command() -> None:
    result = run_cli("probe", "--json")
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == KEYS
    text = run_cli("probe")
    assert text.returncode == 0 and "clone3" in text.stdout


@pytest.mark.parametrize(
    ("args", "status", "needle"),
    [
        (["VM,SIGHAND"], 0, "accepted"),
        (["CLONE_VM|CLONE_SIGHAND|SIGCHLD"], 0, "accepted"),
        (["SIGHAND"], 1, "CLONE_SIGHAND requires CLONE_VM"),
        (["0x800"], 1, "CLONE_SIGHAND requires CLONE_VM"),
        (["NEWNS", "FS"], 1, "CLONE_NEWNS conflicts with CLONE_FS"),
        (["DETACHED", "--api", "clone3"], 1, "clone3 rejects CLONE_DETACHED"),
        (["PARENT", "--api", "clone3"], 1, "require exit_signal 0"),
        (["PARENT", "--api", "clone3", "--exit-signal", "0"], 0, "accepted"),
        (["NEWNET", "--caller", "user"], 1, "CAP_SYS_ADMIN"),
        (["NEWNET,NEWUSER", "--caller", "user"], 0, "accepted"),
        (["PARENT", "--exit-signal", "SIGUSR1"], 0, "creator's parent"),
    ],
)
def test_explain_command(
    args: list[str], status: int, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", *args]) == status
    assert needle in capsys.readouterr().out


def test_explain_command_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "NOPE"]) == 2
    assert "unknown flag 'NOPE'" in capsys.readouterr().err
    assert main(["explain", "VM", "--exit-signal", "SIGNOPE"]) == 2
    assert main(["explain", "0x11", "--exit-signal", "10"]) == 2  # two exit signals


def test_explain_command_runs_as_a_module() -> None:
    result = run_cli("explain", "VM,SIGHAND")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "accepted: the kernel would create the task"
    assert run_cli("explain", "SIGHAND").returncode == 1
