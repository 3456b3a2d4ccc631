"""The parent's heap for ``bench``: sizes parsed and printed, allocated and touched, measured.

Fork copies the page tables of the parent, so the launch methods are timed
with a heap whose every page is written; ``VmPTE`` shows how big those
tables are.
"""

from __future__ import annotations

import math
import os

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_HEAPS_MIB: tuple[float, ...] = (0, 2, 32, 256)
QUICK_HEAPS_MIB: tuple[float, ...] = (0, 2, 32)


def parse_heaps(text: str) -> list[float]:
    """Parse ``"0,2,32,256,1G"`` into MiB: plain numbers are MiB, K/M/G suffixes allowed."""
    sizes: list[float] = []
    for raw in text.split(","):
        item = raw.strip().upper().removesuffix("IB").removesuffix("B")
        if not item:
            continue
        scale = 1.0
        if item[-1] in "KMG":
            scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}[item[-1]]
            item = item[:-1]
        try:
            value = float(item) * scale
        except ValueError:
            raise ValueError(f"bad heap size {raw!r}: use MiB, or a K/M/G suffix") from None
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"bad heap size {raw!r}: must be a non-negative size")
        sizes.append(value)
    if not sizes:
        raise ValueError("no heap sizes given")
    return sorted(set(sizes))


def touched_heap(mib: float) -> bytearray:
    """A heap of ``mib`` MiB with every page written, so that it has page-table entries."""
    size = int(mib * MIB)
    heap = bytearray(size)
    if size:
        heap[::PAGE] = b"\x01" * len(range(0, size, PAGE))
    return heap


def vm_pte_kib(pid: int | str = "self") -> int:
    """The page-table size (``VmPTE``, in KiB) of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmPTE:"):
                return int(line.split()[1])
    raise OSError(f"no VmPTE in /proc/{pid}/status")


def num(x: float) -> str:
    """A heap size in MiB as a number: no trailing ``.0``."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def fmt_heap(mib: float) -> str:
    """A heap size for tables and plots: whole GiB as GiB, else MiB."""
    if mib >= 1024 and (mib / 1024).is_integer():
        return f"{int(mib // 1024)} GiB"
    return f"{num(mib)} MiB"
