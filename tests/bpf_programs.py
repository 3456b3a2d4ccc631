"""Classic-BPF seccomp programs for the tests, assembled by hand (no libseccomp needed).

``deny(name, err)`` makes system call ``name`` fail with ``err`` on this
machine's architecture and allows everything else (a call made through
another architecture's table is allowed too: the tests need no more).
"""

from __future__ import annotations

import platform
import struct

import pytest

#: (AUDIT_ARCH_*, {name: number}) of the architectures the tests know.
_ARCHES = {
    "x86_64": (0xC000003E, {"uname": 63, "getcwd": 79, "rt_sigtimedwait": 128}),
    "aarch64": (0xC00000B7, {"uname": 160, "getcwd": 17, "rt_sigtimedwait": 137}),
}

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000


def insn(code: int, jt: int, jf: int, k: int) -> bytes:
    """One ``struct sock_filter``."""
    return struct.pack("=HBBI", code, jt, jf, k)


def deny(name: str, err: int) -> bytes:
    """A program that makes ``name`` fail with errno ``err`` and allows the rest."""
    arch = _ARCHES.get(platform.machine())
    if arch is None:
        pytest.skip(f"no hand-made seccomp program for {platform.machine()}")
    audit_arch, numbers = arch
    return b"".join(
        [
            insn(_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
            insn(_JEQ_K, 0, 3, audit_arch),
            insn(_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
            insn(_JEQ_K, 0, 1, numbers[name]),
            insn(_RET_K, 0, 0, _RET_ERRNO | err),
            insn(_RET_K, 0, 0, _RET_ALLOW),
        ]
    )


#: A program the kernel refuses (EINVAL): it never returns.
NO_RETURN = insn(_LD_W_ABS, 0, 0, 0)
