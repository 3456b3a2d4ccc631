"""The harness of the bubblewrap oracle: one command line run by real ``bwrap`` or by
``python -m pyclone run``, as root or as uid 65534, so the same upstream check judges both.

Each case of ``tests/test_sandbox_bwrap_suite*.py`` names the upstream case it mirrors;
``variants`` gives it its parameters (implementation, who, and upstream's loop variable
where there is one) with the marks of the gap table the case files keep at their top.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from conftest import WAIT, unprivileged_python
from sandbox_helpers import (  # noqa: F401  (lock_is_held, wait_until: the cases import them here)
    NOBODY,
    ROOT_DIR,
    lock_is_held,
    require_nobody_userns,
    wait_until,
)

IMPLEMENTATIONS = ("bwrap", "pyclone")
WHO = ("root", "nobody")

#: How upstream's tests become uid 65534: no groups, no capabilities left to inherit.
SETPRIV = [
    "setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
    "--inh-caps=-all", "--bounding-set=-all",
]  # fmt: skip

#: Upstream's ``$RUN`` prefix: the whole host file system, a fresh /tmp.
RUN = ["--bind", "/", "/", "--tmpfs", "/tmp"]

#: Upstream's ``$BWRAP_RO_HOST_ARGS`` for a merged-/usr host (this one: /lib -> usr/lib).
RO_HOST_ARGS = [
    "--ro-bind", "/usr", "/usr",
    "--ro-bind", "/etc", "/etc",
    "--dir", "/var/tmp",
    "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64",
    "--symlink", "usr/bin", "/bin",
    "--symlink", "usr/sbin", "/sbin",
    "--proc", "/proc",
    "--dev", "/dev",
]  # fmt: skip

Popen = subprocess.Popen[str]

#: A gap: (case, who or None for both, loop variable or None for all, what differs).
Gap = tuple[str, "str | None", "str | None", str]


def _matching(table: Iterable[Gap], case: str, who: str, alt: str) -> str | None:
    for name, gap_who, gap_alt, reason in table:
        if name == case and gap_who in (None, who) and gap_alt in (None, alt):
            return reason
    return None


def variants(
    case: str,
    pyclone_gaps: Iterable[Gap],
    bwrap_fails: Iterable[Gap] = (),
    alts: Sequence[str] | None = None,
) -> pytest.MarkDecorator:
    """Parametrize a case over implementation x who (x upstream's loop variable ``alt``).

    A pyclone variant matching ``pyclone_gaps`` is an xfail with that reason; a
    variant matching ``bwrap_fails`` (real bwrap fails it here) is skipped for
    both implementations, since then upstream's check judges nothing.
    """
    pyclone_gaps, bwrap_fails = list(pyclone_gaps), list(bwrap_fails)
    names = "implementation,who" + (",alt" if alts is not None else "")
    params = []
    for who in WHO:
        for alt in alts if alts is not None else [""]:
            for implementation in IMPLEMENTATIONS:
                marks: list[pytest.MarkDecorator] = []
                broken = _matching(bwrap_fails, case, who, alt)
                if broken is not None:
                    marks.append(pytest.mark.skip(reason=f"bwrap fails it here: {broken}"))
                elif implementation == "pyclone":
                    gap = _matching(pyclone_gaps, case, who, alt)
                    if gap is not None:
                        marks.append(pytest.mark.xfail(strict=False, reason=gap))
                values = (implementation, who) + ((alt,) if alts is not None else ())
                label = "-".join([implementation, who] + ([alt.strip("-")] if alt else []))
                params.append(pytest.param(*values, id=label, marks=marks))
    return pytest.mark.parametrize(names, params)


@functools.cache
def readable_tree() -> str:
    """A copy of the built package that uid 65534 can read, for its ``PYTHONPATH``."""
    path = tempfile.mkdtemp(prefix="pyclone-oracle-tree-", dir="/var/tmp")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT_DIR, "pyclone"), os.path.join(path, "pyclone"))
    for dirpath, _dirnames, filenames in os.walk(path):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return path


@dataclass
class Oracle:
    """One implementation run as one user, in a working directory that user owns."""

    implementation: str
    who: str
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    #: how to start real bwrap: the host's, or a newer one (see :func:`bwrap_with`)
    bwrap: list[str] = field(default_factory=lambda: ["bwrap"])

    @property
    def name(self) -> str:
        """What the program calls itself in its usage line and its messages."""
        return "bwrap" if self.implementation == "bwrap" else "pyclone run"

    def prog(self) -> list[str]:
        """The command that starts the sandbox (without the switch to uid 65534)."""
        if self.implementation == "bwrap":
            return list(self.bwrap)
        python = unprivileged_python() if self.who == "nobody" else sys.executable
        return [python, "-m", "pyclone", "run"]

    def reexec(self) -> list[str]:
        """The sandbox program again, from inside a sandbox, as upstream's ``/proc/self/exe``."""
        if self.implementation == "bwrap":
            return ["/proc/self/exe"]
        return ["/proc/self/exe", "-m", "pyclone", "run"]

    def argv(self, args: Sequence[str], redirect: str = "") -> list[str]:
        """The full command line; ``redirect`` is shell redirections done as the user."""
        command = self.prog() + list(args)
        if redirect:
            command = ["bash", "-c", f'exec "$@" {redirect}', "bash", *command]
        return (SETPRIV if self.who == "nobody" else []) + command

    def environment(self, **extra: str) -> dict[str, str]:
        env = dict(self.env)
        env.update(extra)
        return env

    def run(
        self,
        *args: str,
        redirect: str = "",
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(args, redirect),
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=self.workdir,
            env=self.environment() if env is None else env,
            stdin=stdin,
            check=False,
        )

    def popen(self, *args: str, redirect: str = "", stdout: int = subprocess.DEVNULL) -> Popen:
        """Start a sandbox in its own session (so a failed case can kill all it left)."""
        return self._spawn(self.argv(args, redirect), stdout)

    def popen_in_shell(self, *args: str) -> Popen:
        """Upstream's ``bash -c "$RUN ARGS" &``: a shell, as the user, is the sandbox's parent."""
        script = f"{shlex.join(self.prog() + list(args))}; exit $?"  # two commands: no exec
        return self._spawn((SETPRIV if self.who == "nobody" else []) + ["bash", "-c", script])

    def _spawn(self, command: list[str], stdout: int = subprocess.DEVNULL) -> Popen:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=self.workdir,
            env=self.environment(),
            start_new_session=True,
        )

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    def write(self, name: str, data: str | bytes, mode: int = 0o644) -> str:
        """A file in the working directory, owned by the user the case runs as."""
        path = self.path(name)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(path, mode)
        if self.who == "nobody":
            os.chown(path, NOBODY, NOBODY)
        return path

    def read(self, name: str) -> str:
        with open(self.path(name)) as f:
            return f.read()


#: The Debian sid root .ci/debian-root builds: its bwrap is newer than the host's.
SID_ROOT = os.environ.get("PYCLONE_SID_ROOT", "/var/cache/pyclone/sid-root")


@functools.cache
def _help_of(command: tuple[str, ...]) -> str:
    try:
        done = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, timeout=WAIT, check=False
        )
    except OSError:
        return ""
    return done.stdout + done.stderr


@functools.cache
def _version_of(command: tuple[str, ...]) -> str:
    done = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, timeout=WAIT, check=False
    )
    return done.stdout.strip() or "unknown version"


def _sid_bwrap() -> list[str] | None:
    """The sid root's bwrap, run on the host's tree by the sid root's own dynamic loader.

    Not through .ci/in-root: that one pivots into the sid root, whose /var/tmp (where
    the cases work) is not the host's.  bwrap needs only libc, libcap and libselinux.
    """
    if not os.path.isfile(os.path.join(SID_ROOT, ".pyclone-root-complete")):
        return None
    loader = os.path.join(SID_ROOT, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    libs = [os.path.join(SID_ROOT, d) for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")]
    binary = os.path.join(SID_ROOT, "usr/bin/bwrap")
    if not (os.path.isfile(loader) and os.path.isfile(binary)):
        return None
    return [loader, "--library-path", ":".join(libs), binary]


def bwrap_with(option: str) -> list[str] | None:
    """A command that runs a bwrap knowing ``option``: the host's, else the sid root's."""
    for command in (["bwrap"], _sid_bwrap()):
        if command is not None and option in _help_of(tuple(command)):
            return command
    return None


@contextlib.contextmanager
def oracle(implementation: str, who: str, needs: str | None = None) -> Iterator[Oracle]:
    """An :class:`Oracle`, or a skip saying why this machine cannot run the variant.

    ``needs``: an option the case gives bwrap, which the host's bwrap (0.8.0) may
    lack; the bwrap variant then runs a newer one, or is skipped saying so.
    """
    if os.geteuid() != 0:
        pytest.skip("the oracle needs root (it runs cases as root and as uid 65534)")
    if implementation == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (no bwrap on PATH)")
    bwrap = ["bwrap"]
    if implementation == "bwrap" and needs is not None:
        found = bwrap_with(needs)
        if found is None:
            sid = _sid_bwrap()
            where = (
                f"nor the sid root's ({_version_of(tuple(sid))})"
                if sid is not None
                else f"and there is no sid root at {SID_ROOT} (.ci/debian-root builds it)"
            )
            pytest.skip(
                f"no bwrap here has {needs}: not the host's ({_version_of(('bwrap',))}) {where}"
            )
        bwrap = found
    if who == "nobody":
        require_tools("setpriv")
        require_nobody_userns()
    # Upstream works in /var/tmp: its $RUN puts a fresh tmpfs on /tmp.
    workdir = tempfile.mkdtemp(prefix="pyclone-oracle-", dir="/var/tmp")
    try:
        os.chmod(workdir, 0o755)
        if who == "nobody":
            os.chown(workdir, NOBODY, NOBODY)
        path = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        env = {"PATH": path, "LANG": "C.UTF-8", "HOME": "/"}
        if implementation == "pyclone":
            env["PYTHONPATH"] = readable_tree() if who == "nobody" else ROOT_DIR
        yield Oracle(implementation, who, workdir, env, bwrap)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def require_tools(*names: str) -> None:
    """Skip unless every program the upstream case runs is installed."""
    missing = [name for name in names if shutil.which(name, path=_TOOL_PATH) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (the upstream case runs it)")


_TOOL_PATH = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"


def end_session(process: Popen) -> None:
    """Kill what is left of a session a case started, and reap its leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(WAIT)
