"""Caller-given seccomp programs (classic BPF, bwrap's ``--seccomp``): checked, then loaded.

A program is the raw bytes of a ``struct sock_filter`` array, as
``seccomp_export_bpf`` or bwrap's callers write it.  Only what can be told
without the kernel is checked here; the kernel verifies the instructions
themselves when the sandbox loads them (EINVAL names the step).
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import _pyclone

#: Bytes in one BPF instruction (struct sock_filter).
INSTRUCTION = 8
#: The kernel's limit on a program's instructions (BPF_MAXINSNS).
MAX_INSTRUCTIONS = 4096

Program = bytes | bytearray | memoryview


def check_program(data: object, name: str) -> bytes:
    """``data`` as the bytes of one program; TypeError/ValueError naming ``name``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes (a struct sock_filter array), not {data!r}")
    program = bytes(data)
    if len(program) % INSTRUCTION:
        raise ValueError(
            f"{name} must be a whole number of {INSTRUCTION}-byte instructions "
            f"(struct sock_filter), not {len(program)} bytes"
        )
    if not 0 < len(program) // INSTRUCTION <= MAX_INSTRUCTIONS:
        raise ValueError(
            f"{name} must hold 1 to {MAX_INSTRUCTIONS} instructions, "
            f"not {len(program) // INSTRUCTION}"
        )
    return program


def check_programs(value: Program | Iterable[Program], name: str) -> tuple[bytes, ...]:
    """One program or an iterable of them, checked, in order."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (check_program(value, name),)
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be bytes or an iterable of bytes, not {value!r}")
    return tuple(check_program(p, f"{name}[{i}]") for i, p in enumerate(value))


def load(programs: Iterable[bytes]) -> None:
    """Load each program, in order, on the calling thread (each one adds to the earlier).

    The kernel runs every loaded filter on each system call and the most
    restrictive answer wins, so the order matters only for equal answers.
    """
    for program in programs:
        _pyclone.set_seccomp_filter(program)
