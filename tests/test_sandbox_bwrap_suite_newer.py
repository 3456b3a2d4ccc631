"""bubblewrap's own test suite, the cases of tests/test-run.sh for options newer than the
host's bwrap (0.8.0): --argv0, --level-prefix and the overlays (bubblewrap 0.11).

Same scheme as ``test_sandbox_bwrap_suite.py``: one case per upstream ``ok ...`` line, run
by real ``bwrap`` and by ``python -m pyclone run``, as root and as uid 65534.  A case
needing an option the host's bwrap lacks runs a newer bwrap (the Debian sid root's, see
``bwrap_with``); without one its bwrap variant is skipped and pyclone's still runs, judged
by upstream's check (the kernel's behaviour and bwrap's documented semantics).

Upstream matches parse errors with ``^bwrap: MESSAGE``; ``pyclone run`` words every
parse error argparse's way (a usage line, then ``pyclone run: error: MESSAGE``), which
:func:`_refused` accepts for it.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from bwrap_oracle import RUN, SETPRIV, Gap, Oracle, oracle, variants

from conftest import WAIT
from sandbox_helpers import NOBODY

#: Where ``pyclone run`` differs from bwrap today: (case, who, upstream's loop value, reason).
PYCLONE_GAPS: list[Gap] = []

#: Cases real bwrap fails on this machine (skipped for both: upstream's check judges nothing).
BWRAP_FAILS: list[Gap] = []

_FOLLOWED = (
    "--overlay-src must be followed by another --overlay-src or one of --overlay, "
    "--tmp-overlay, or --ro-overlay"
)


def case(name: str) -> pytest.MarkDecorator:
    return variants(name, PYCLONE_GAPS, BWRAP_FAILS)


def _refused(o: Oracle, done: subprocess.CompletedProcess[str], message: str) -> None:
    """Upstream's ``assert_file_has_content err.txt "^bwrap: MESSAGE"`` after a failure."""
    assert done.returncode != 0, done.stdout
    label = re.escape(o.name) + (": (error: )?" if o.implementation == "pyclone" else ": ")
    assert re.search(f"^{label}{re.escape(message)}", done.stderr, re.MULTILINE), done.stderr


def _files(o: Oracle, files: dict[str, str], dirs: tuple[str, ...] = ()) -> None:
    """Directories and files in the working directory, owned by the case's user."""
    for name in dirs:
        path = o.path(name)
        os.makedirs(path, exist_ok=True)
        if o.who == "nobody":
            os.chown(path, NOBODY, NOBODY)
    for name, data in files.items():
        o.write(name, data)


def _overlay_layers(o: Oracle) -> None:
    """Upstream's layers: lower1/a=1, lower1/b=2, lower2/b=3, upper/a=4 (and an empty work)."""
    _files(
        o,
        {"lower1/a": "1", "lower1/b": "2", "lower2/b": "3", "upper/a": "4"},
        ("lower1", "lower2", "upper", "work"),
    )


def _require_overlayfs(o: Oracle) -> None:
    """Upstream's check: the kernel mounts overlayfs in a user namespace (else it skips).

    As the case's user: the work directory overlayfs leaves is then that user's.
    """
    _overlay_layers(o)
    probe = [*(SETPRIV if o.who == "nobody" else []), "unshare", "-rm", "mount", "-t"]
    probe += ["overlay", "-o"]
    probe += ["lowerdir=lower1,upperdir=upper,workdir=work,userxattr", "overlay", "lower2"]
    done = subprocess.run(
        probe, cwd=o.workdir, capture_output=True, text=True, timeout=WAIT, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"no kernel support for unprivileged overlayfs: {done.stderr.strip()}")


def _out(o: Oracle, *args: str) -> str:
    done = o.run(*RUN, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@case("argv0")
def test_argv0(implementation: str, who: str) -> None:
    """Mirrors "ok argv0 manipulation": --argv0 sets the command's $0, not what runs."""
    with oracle(implementation, who, needs="--argv0") as o:
        assert "sh" in _out(o, "sh", "-c", "echo $0")
        assert "sh" in _out(o, "--argv0", "sh", "sh", "-c", "echo $0")
        assert "right" in _out(o, "--argv0", "right", "sh", "-c", "echo $0")


@case("redundant_chdir_warning")
def test_redundant_chdir_warning(implementation: str, who: str) -> None:
    """Mirrors "ok warning logged for redundant --chdir"."""
    with oracle(implementation, who) as o:
        done = o.run(*RUN, "--chdir", "/", "--chdir", "/", "true")
        assert done.returncode == 0, done.stderr
        line = f"{o.name}: Only the last --chdir option will take effect"
        assert re.search(f"^{re.escape(line)}$", done.stderr, re.MULTILINE), done.stderr


@case("level_prefix")
def test_level_prefix(implementation: str, who: str) -> None:
    """Mirrors "ok --level-prefix": the warning after syslog's level 4 (LOG_WARNING)."""
    with oracle(implementation, who, needs="--level-prefix") as o:
        done = o.run(*RUN, "--level-prefix", "--chdir", "/", "--chdir", "/", "true")
        assert done.returncode == 0, done.stderr
        line = f"<4>{o.name}: Only the last --chdir option will take effect"
        assert re.search(f"^{re.escape(line)}$", done.stderr, re.MULTILINE), done.stderr


@case("overlay")
def test_overlay(implementation: str, who: str) -> None:
    """Mirrors "ok --overlay": reads go to the top layer that has the file, writes to upper."""
    with oracle(implementation, who, needs="--overlay-src") as o:
        _require_overlayfs(o)
        _refused(
            o, o.run(*RUN, "--overlay", "upper", "work", "/tmp", "true"),
            "--overlay requires at least one --overlay-src",
        )  # fmt: skip
        one = ["--overlay-src", "lower1"]
        two = [*one, "--overlay-src", "lower2"]
        rw = ["--overlay", "upper", "work", "/tmp/x/y/z"]
        assert _out(o, *one, *rw, "cat", "/tmp/x/y/z/a") == "4"
        assert _out(o, *one, *rw, "cat", "/tmp/x/y/z/b") == "2"
        assert _out(o, *two, *rw, "cat", "/tmp/x/y/z/a") == "4"
        assert _out(o, *two, *rw, "cat", "/tmp/x/y/z/b") == "3"
        write = "printf 5 > /tmp/x/y/z/b; cat /tmp/x/y/z/b"
        assert _out(o, *two, *rw, "sh", "-c", write) == "5"
        assert o.read("upper/b") == "5"


@case("overlay_escaping")
def test_overlay_escaping(implementation: str, who: str) -> None:
    """Mirrors "ok --overlay path escaping": ``"``, ``:``, ``,`` and ``\\`` in the paths."""
    with oracle(implementation, who, needs="--overlay-src") as o:
        _require_overlayfs(o)
        odd = ' ":,\\'
        lower, upper, work = (f"{name}{odd}" for name in ("lower", "upper", "work"))
        _files(o, {f"{lower}/a": "1"}, (lower, upper, work))
        script = "cat /tmp/x/a; printf 2 > /tmp/x/a; cat /tmp/x/a"
        args = ["--overlay-src", lower, "--overlay", upper, work, "/tmp/x", "sh", "-c", script]
        assert _out(o, *args) == "12"
        assert o.read(f"{lower}/a") == "1"
        assert o.read(f"{upper}/a") == "2"


@case("tmp_overlay")
def test_tmp_overlay(implementation: str, who: str) -> None:
    """Mirrors "ok --tmp-overlay": writes go to a tmpfs, one per overlay, the host's untouched."""
    with oracle(implementation, who, needs="--overlay-src") as o:
        _require_overlayfs(o)
        _refused(
            o, o.run(*RUN, "--tmp-overlay", "/tmp", "true"),
            "--tmp-overlay requires at least one --overlay-src",
        )  # fmt: skip
        one = ["--overlay-src", "lower1"]
        two = [*one, "--overlay-src", "lower2"]
        tmp = ["--tmp-overlay", "/tmp/x/y/z"]
        assert _out(o, *one, *tmp, "cat", "/tmp/x/y/z/a") == "1"
        assert _out(o, *one, *tmp, "cat", "/tmp/x/y/z/b") == "2"
        assert _out(o, *two, *tmp, "cat", "/tmp/x/y/z/a") == "1"
        assert _out(o, *two, *tmp, "cat", "/tmp/x/y/z/b") == "3"
        write = "printf 4 > /tmp/x/y/z/b; cat /tmp/x/y/z/b"
        assert _out(o, *two, *tmp, "sh", "-c", write) == "4"
        script = "cat /tmp/x/b; printf 4 > /tmp/x/b; cat /tmp/x/b; cat /tmp/y/b"
        both = [*one, "--tmp-overlay", "/tmp/x", "--overlay-src", "lower2", "--tmp-overlay"]
        assert _out(o, *both, "/tmp/y", "sh", "-c", script) == "243"
        assert o.read("lower1/b") == "2"
        assert o.read("lower2/b") == "3"


@case("ro_overlay")
def test_ro_overlay(implementation: str, who: str) -> None:
    """Mirrors "ok --ro-overlay": two layers at least, and nothing can be written."""
    with oracle(implementation, who, needs="--overlay-src") as o:
        _require_overlayfs(o)
        message = "--ro-overlay requires at least two --overlay-src"
        _refused(o, o.run(*RUN, "--ro-overlay", "/tmp", "true"), message)
        _refused(o, o.run(*RUN, "--overlay-src", "lower1", "--ro-overlay", "/tmp", "true"), message)
        two = ["--overlay-src", "lower1", "--overlay-src", "lower2", "--ro-overlay", "/tmp/x/y/z"]
        assert _out(o, *two, "cat", "/tmp/x/y/z/a") == "1"
        assert _out(o, *two, "cat", "/tmp/x/y/z/b") == "3"
        done = o.run(*RUN, *two, "sh", "-c", "printf 4 > /tmp/x/y/z/b; cat /tmp/x/y/z/b")
        assert done.stdout == "3", done.stderr


@case("overlay_src_restrictions")
def test_overlay_src_restrictions(implementation: str, who: str) -> None:
    """Mirrors "ok --overlay-src restrictions": it must come right before an overlay."""
    with oracle(implementation, who, needs="--overlay-src") as o:
        _require_overlayfs(o)
        _refused(o, o.run(*RUN, "--overlay-src", "/tmp", "true"), _FOLLOWED)
        _refused(o, o.run(*RUN, "--overlay-src", "/tmp", "--chdir", "/", "true"), _FOLLOWED)
