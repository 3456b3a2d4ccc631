"""pyclone.Cgroup against this machine's real cgroup hierarchies (v2, v1 or hybrid)."""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterator

import pytest

from pyclone import Cgroup, CgroupUnavailable, CloneFlag, spawn_task
from pyclone.cgroup import Hierarchy, hierarchies

from conftest import WAIT, Health, require_root


@pytest.fixture
def make_cgroup() -> Iterator[type[Cgroup]]:
    """Create Cgroups, skipping (with the library's reason) where a limit has no controller."""
    made: list[Cgroup] = []

    class Made(Cgroup):
        def create(self) -> Cgroup:
            require_root("creating cgroups under this process's own needs write access there")
            try:
                super().create()
            except CgroupUnavailable as exc:
                pytest.skip(str(exc))
            made.append(self)
            return self

    yield Made
    for cg in made:
        cg.remove()


def _members(path: str) -> set[int]:
    with open(os.path.join(path, "cgroup.procs")) as f:
        return {int(p) for p in f.read().split()}


def test_hierarchies_contain_this_process() -> None:
    found = hierarchies()
    assert found, "no cgroup hierarchy visible"
    for h in found:
        assert os.getpid() in _members(h.base), h
        assert h.version in (1, 2)


def _read_own_cgroups() -> str:
    with open("/proc/self/cgroup") as f:
        return f.read()


def _hold(r: int) -> None:
    os.read(r, 1)


def test_task_starts_inside_every_directory(healthy: Health, make_cgroup: type[Cgroup]) -> None:
    cg = make_cgroup(memory_max=256 << 20, pids_max=50, cpu_max=0.5)
    with cg:
        assert cg.path is not None and cg.paths
        r, w = os.pipe()
        try:
            with spawn_task(_hold, (r,), cgroup=cg) as task:
                for path in cg.paths.values():
                    assert task.pid in _members(path), path
                assert cg.procs() == {task.pid}
                if "v2" in cg.paths:
                    assert task.flags & CloneFlag.INTO_CGROUP  # placed by clone3 itself
                os.write(w, b"x")
                task.wait(WAIT)
        finally:
            os.close(r)
            os.close(w)
        with spawn_task(_read_own_cgroups, cgroup=cg) as task:
            lines = task.result(WAIT)
        name = os.path.basename(cg.path)
        assert sum(line.endswith("/" + name) for line in lines.splitlines()) == len(
            set(cg.paths.values())
        )
        paths = dict(cg.paths)
    for path in paths.values():
        assert not os.path.exists(path)  # removed on exit


def _limit_files(cg: Cgroup) -> dict[str, str]:
    out = {}
    candidates = {
        "memory": ["memory.max", "memory.limit_in_bytes"],
        "pids": ["pids.max"],
        "cpu": ["cpu.max", "cpu.cfs_quota_us", "cpu.cfs_period_us"],
    }
    for controller, names in candidates.items():
        directory = cg.paths.get(controller, cg.paths.get("v2", ""))
        for name in names:
            path = os.path.join(directory, name)
            if os.path.exists(path):
                with open(path) as f:
                    out[name] = f.read().strip()
    return out


def test_limits_are_written(healthy: Health, make_cgroup: type[Cgroup]) -> None:
    with make_cgroup(memory_max=64 << 20, pids_max=7, cpu_max=(25_000, 50_000)) as cg:
        files = _limit_files(cg)
    assert files.get("memory.max", files.get("memory.limit_in_bytes")) == str(64 << 20)
    assert files["pids.max"] == "7"
    if "cpu.max" in files:
        assert files["cpu.max"] == "25000 50000"
    else:
        assert (files["cpu.cfs_quota_us"], files["cpu.cfs_period_us"]) == ("25000", "50000")


def _fork_bomb() -> tuple[int, int]:
    """Fork until the kernel refuses; return (children made, errno of the refusal)."""
    r, w = os.pipe()
    children = []
    err = 0
    for _ in range(50):
        try:
            pid = os.fork()
        except OSError as exc:
            err = exc.errno or 0
            break
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        children.append(pid)
    os.close(w)  # the children see end of file and leave
    for pid in children:
        os.waitpid(pid, 0)
    return len(children), err


def test_pids_max_stops_a_fork_bomb(healthy: Health, make_cgroup: type[Cgroup]) -> None:
    with make_cgroup(pids_max=5) as cg:
        with spawn_task(_fork_bomb, cgroup=cg) as task:
            made, err = task.result(WAIT)
        stats = cg.stats()
    print(f"fork bomb under pids.max=5: {made} forks, then errno {errno.errorcode.get(err)}")
    assert made == 4  # the task itself is the fifth
    assert err == errno.EAGAIN
    assert stats["pids_max_events"] >= 1
    assert stats["pids_peak"] == 5


def _allocate(size: int) -> int:
    return len(b"\x01" * size)  # touches every page


def test_memory_max_kills_only_the_task(healthy: Health, make_cgroup: type[Cgroup]) -> None:
    with make_cgroup(memory_max=32 << 20) as cg:
        with spawn_task(_allocate, (256 << 20,), cgroup=cg) as task:
            assert task.wait(WAIT) == -signal.SIGKILL
        stats = cg.stats()
    assert stats["memory_oom_kills"] >= 1
    assert stats["memory_peak"] <= 32 << 20


def test_stats_and_repr(healthy: Health, make_cgroup: type[Cgroup]) -> None:
    with make_cgroup(pids_max=3) as cg:
        with spawn_task(sum, (range(100_000),), cgroup=cg) as task:
            assert task.result(WAIT) == sum(range(100_000))
        stats = cg.stats()
        text = repr(cg)
    assert "pids_max=3" in text and "pyclone.Cgroup" in text
    assert stats["pids_current"] == 0
    assert all(isinstance(v, int) and v >= 0 for v in stats.values())
    if "cpu_usage_usec" in stats:
        assert stats["cpu_usage_usec"] > 0
    assert "not created" in repr(Cgroup())


def test_remove_kills_what_is_left(healthy: Health, make_cgroup: type[Cgroup]) -> None:
    r, w = os.pipe()
    try:
        cg = make_cgroup(pids_max=10)
        with cg:
            task = spawn_task(_hold, (r,), cgroup=cg)
            paths = dict(cg.paths)
        # the task was killed so that its cgroups could go
        assert task.wait(WAIT) == -signal.SIGKILL
        task.close()
        assert not any(os.path.exists(p) for p in paths.values())
        assert not cg.created
    finally:
        os.close(r)
        os.close(w)


def test_only_its_own_cgroups_are_touched(healthy: Health, make_cgroup: type[Cgroup]) -> None:
    mine = f"pyclone-{os.getpid()}-"

    def ours_or_foreign(entry: str) -> bool:
        # other processes running pyclone on this machine make pyclone-<pid>-N groups
        return entry.startswith(mine) or not entry.startswith("pyclone-")

    def snapshot() -> dict[str, tuple[frozenset[str], str]]:
        out = {}
        for h in hierarchies():
            sub = ""
            if h.version == 2:
                with open(os.path.join(h.base, "cgroup.subtree_control")) as f:
                    sub = f.read()
            out[h.base] = (frozenset(filter(ours_or_foreign, os.listdir(h.base))), sub)
        return out

    before = snapshot()
    with make_cgroup(memory_max=64 << 20, pids_max=10) as cg, spawn_task(os.getpid, cgroup=cg) as t:
        t.wait(WAIT)
    assert snapshot() == before


def test_unavailable_limit_names_it() -> None:
    # the policy, given hierarchies that lack the controller (no kernel involved)
    v2_only = [Hierarchy(2, "/sys/fs/cgroup", frozenset({"cpu"}), "/")]
    with pytest.raises(CgroupUnavailable, match="memory_max") as info:
        Cgroup(memory_max=1 << 20)._plan(v2_only)
    assert info.value.limit == "memory_max" and info.value.controller == "memory"
    assert "subtree_control" in str(info.value)
    with pytest.raises(CgroupUnavailable, match="no cgroup hierarchy"):
        Cgroup()._plan([])


def test_bad_limits() -> None:
    with pytest.raises(TypeError, match="memory_max"):
        Cgroup(memory_max="64M")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_max"):
        Cgroup(memory_max=0)
    with pytest.raises(ValueError, match="pids_max"):
        Cgroup(pids_max=-1)
    with pytest.raises(ValueError, match="cpu_max"):
        Cgroup(cpu_max=0)
    with pytest.raises(ValueError, match="quota_us"):
        Cgroup(cpu_max=(1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cpu_max"):
        Cgroup(cpu_max="half")  # type: ignore[arg-type]


def test_kernel_rejection_of_a_limit_removes_everything(healthy: Health) -> None:
    require_root()
    cg = Cgroup(cpu_max=(10, 100_000))  # a quota below the kernel's 1 ms minimum
    before = {h.base: set(os.listdir(h.base)) for h in hierarchies()}
    with pytest.raises(OSError) as info:
        cg.create()
    assert info.value.errno == errno.EINVAL
    assert {h.base: set(os.listdir(h.base)) for h in hierarchies()} == before
    assert not cg.created
