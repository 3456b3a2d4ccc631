"""``bench switch``: a pipe ping-pong between two tasks, in nanoseconds per context switch.

The partner is created with process flags (``spawn_task(share="process")``)
or with thread flags (a ``threading.Thread``); the same two system calls
without a partner give the floor.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from ..task import spawn_task


def _ping(rfd: int, wfd: int, rounds: int) -> int:
    """Answer ``rounds`` pings: read one byte, write one byte."""
    read, write = os.read, os.write
    for _ in range(rounds):
        read(rfd, 1)
        write(wfd, b"p")
    return 0


@dataclass(frozen=True)
class SwitchResult:
    """ns per switch (round trip / 2) for each mechanism, one value per trial."""

    trials: dict[str, list[float]]
    rounds: int
    pin: int | None

    def __repr__(self) -> str:
        return f"<pyclone.bench.SwitchResult {sorted(self.trials)} rounds={self.rounds}>"


def _pingpong(start_partner: Callable[[int, int], Callable[[], object]], rounds: int) -> float:
    """ns per switch between this task and a partner answering on two pipes."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    try:
        finish = start_partner(a_r, b_w)
        read, write = os.read, os.write
        write(a_w, b"p")  # one warm-up round
        read(b_r, 1)
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            write(a_w, b"p")
            read(b_r, 1)
        elapsed = time.perf_counter_ns() - t0
        finish()
    finally:
        for fd in (a_r, a_w, b_r, b_w):
            os.close(fd)
    return elapsed / (2 * rounds)


def _switch_process(rounds: int) -> float:
    def start(rfd: int, wfd: int) -> Callable[[], object]:
        task = spawn_task(_ping, (rfd, wfd, rounds + 1), share="process")

        def finish() -> object:
            code = task.wait()
            task.close()
            return code

        return finish

    return _pingpong(start, rounds)


def _switch_thread(rounds: int) -> float:
    def start(rfd: int, wfd: int) -> Callable[[], object]:
        thread = threading.Thread(target=_ping, args=(rfd, wfd, rounds + 1))
        thread.start()
        return thread.join

    return _pingpong(start, rounds)


def _switch_floor(rounds: int) -> float:
    """One task writing then reading its own pipe: the two syscalls, no switch (ns per pair)."""
    r, w = os.pipe()
    try:
        read, write = os.read, os.write
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            write(w, b"p")
            read(r, 1)
        return (time.perf_counter_ns() - t0) / rounds
    finally:
        os.close(r)
        os.close(w)


#: The ``bench switch`` mechanisms: name -> (description, trial function).
SWITCHES: dict[str, tuple[str, Callable[[int], float]]] = {
    "process": ('pipe ping-pong, spawn_task(share="process") partner', _switch_process),
    "thread": ("pipe ping-pong, threading.Thread partner (pthread flags)", _switch_thread),
    "no_switch": ("write+read of one's own pipe (syscall floor, per pair)", _switch_floor),
}


def run_switch(rounds: int = 20000, trials: int = 5, pin: int | None = None) -> SwitchResult:
    """Measure each mechanism ``trials`` times, interleaved, ``rounds`` round trips each."""
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    results: dict[str, list[float]] = {name: [] for name in SWITCHES}
    with warnings.catch_warnings():
        # os.fork warns on 3.12+ while a joined thread is still winding down
        warnings.simplefilter("ignore", DeprecationWarning)
        for _ in range(trials):
            for name, (_, fn) in SWITCHES.items():
                results[name].append(fn(rounds))
    return SwitchResult(results, rounds, pin)


def format_switch(res: SwitchResult) -> str:
    """Table of min/median/max ns per switch, and process/thread."""
    pin = (
        f"both tasks pinned to CPU {res.pin}"
        if res.pin is not None
        else "UNPINNED: a cross-CPU wake-up is measured, not a switch; use --pin CPU"
    )
    out = [
        f"Context switch, ns per switch = round trip / 2 ({res.rounds} round trips x "
        f"{len(next(iter(res.trials.values())))} trials; {pin})",
        f"{'mechanism':<10} {'min':>8} {'median':>8} {'max':>8}  what",
    ]
    for name, values in res.trials.items():
        out.append(
            f"{name:<10} {min(values):>8.0f} {statistics.median(values):>8.0f}"
            f" {max(values):>8.0f}  {SWITCHES[name][0]}"
        )
    p = statistics.median(res.trials["process"])
    t = statistics.median(res.trials["thread"])
    out.append(f"ratio process/thread: x{p / t:.2f} (medians)")
    return "\n".join(out)
