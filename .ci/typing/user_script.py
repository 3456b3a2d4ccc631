"""A user's script, type-checked with ``mypy --strict`` against the installed pyclone.

.ci/typecheck runs mypy on it from outside the checkout, then runs it: every
type below must be what mypy infers, and every value what the script prints.
"""

from __future__ import annotations

import os

import pyclone
from pyclone import actions
from pyclone.probe import probe
from pyclone.spec import ShareSpec


def square(n: int) -> int:
    return n * n


def describe(task: pyclone.Task[int]) -> str:
    return f"task {task.pid} gave {task.result(timeout=10)}"


def main() -> None:
    task: pyclone.Task[int] = pyclone.spawn_task(square, (7,))
    print(describe(task))

    with pyclone.spawn_task(os.getpid, new="uts") as other:
        pid: int = other.result(timeout=10)
    print("a pid", pid > 0)

    share: ShareSpec = {"fs", "files"}
    named: pyclone.Task[str] = pyclone.spawn_task(lambda: "shared", share=share)
    print(named.result(timeout=10).upper())

    # an action's task gives back its exit status
    code: int = pyclone.spawn_task(actions.exit(3), share="thread").result(timeout=10)
    print("action exit", code)

    found = probe()
    kernel: str = found["kernel"]
    clone3: bool = found["clone3"]
    print("kernel", bool(kernel), "clone3", clone3 in (True, False))


if __name__ == "__main__":
    main()
