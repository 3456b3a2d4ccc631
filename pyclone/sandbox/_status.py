"""How a setup step's failure travels from the child to the parent and becomes a SandboxError.

The child sends length-prefixed records over a close-on-exec status pipe;
the parent reads them until EOF (the exec or the child's end closes it) and
raises the first error as :class:`SandboxError`.  A record is a few strings,
integers and Nones in a fixed byte layout, never a pickle: the write end is
in the sandbox, and unpickling what a process there wrote could run its code
in the caller.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from typing import Any, NoReturn

from ..task import Task


class SandboxError(OSError):
    """A sandbox setup step failed; raised in the parent before ``spawn`` returns.

    ``step`` names the step (``"clone"`` when the kernel refused the clone
    itself, ``"uid_map"``, ``"mount /proc"``, ``"bind /usr"``,
    ``"pivot_root"``, ``"exec"``, ...); ``errno``, ``strerror``, ``filename``
    and ``filename2`` are those of the failing system call (``errno`` is None
    when the step failed without one).  An :class:`OSError`, so code that
    handles the kernel's refusals catches it; picklable.
    """

    step: str

    def __init__(
        self,
        step: str,
        errno: int | None,
        strerror: str,
        filename: str | None = None,
        filename2: str | None = None,
    ) -> None:
        super().__init__(errno, strerror, filename, None, filename2)
        self.step = step

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            SandboxError,
            (self.step, self.errno, self.strerror, self.filename, self.filename2),
        )

    def __str__(self) -> str:
        text = f"sandbox setup failed at {self.step!r}: "
        if self.errno is not None:
            text += f"[Errno {self.errno}] "
        text += str(self.strerror)
        if self.filename is not None:
            text += f": {self.filename!r}"
        if self.filename2 is not None:
            text += f" -> {self.filename2!r}"
        return text


@contextlib.contextmanager
def parent_step(step: str) -> Iterator[None]:
    """Raise an OSError of a step the parent runs for the child as a SandboxError naming it."""
    try:
        yield
    except SandboxError:
        raise
    except OSError as exc:
        raise SandboxError(
            step, exc.errno, exc.strerror or str(exc), exc.filename, exc.filename2
        ) from exc


#: The length prefix of each status record, and of each field in it.
RECORD = struct.Struct("<I")

#: A record's field: a str (UTF-8, surrogates escaped), an int, or None.
_STR, _INT, _NONE = b"s", b"i", b"n"

#: What a record can hold (step names, errno values, messages, paths).
Field = str | int | None


def encode(record: tuple[Field, ...]) -> bytes:
    """One record's bytes: each field tagged with its type and length-prefixed."""
    body = bytearray()
    for field in record:
        if field is None:
            data = _NONE
        elif isinstance(field, bool) or not isinstance(field, (int, str)):
            raise TypeError(f"a status field is a str, an int or None, not {type(field).__name__}")
        elif isinstance(field, int):
            data = _INT + str(field).encode()
        else:
            data = _STR + field.encode("utf-8", "surrogateescape")
        body += RECORD.pack(len(data)) + data
    return bytes(body)


def _chunks(data: bytes, *, whole: bool) -> list[bytes]:
    """Split ``data`` into its length-prefixed chunks.

    ``whole``: bytes left over (a chunk cut short) are an error (ValueError);
    otherwise they are dropped (the writer died mid-record).
    """
    chunks = []
    view = memoryview(data)
    while len(view) >= RECORD.size:
        (size,) = RECORD.unpack_from(view)
        chunk = bytes(view[RECORD.size : RECORD.size + size])
        if len(chunk) < size:
            break
        chunks.append(chunk)
        view = view[RECORD.size + size :]
    if whole and view:
        raise ValueError("a truncated field")
    return chunks


def decode(body: bytes) -> tuple[Field, ...]:
    """The fields of one record; ValueError if the bytes are not one :func:`encode` made."""
    fields: list[Field] = []
    for data in _chunks(body, whole=True):
        tag, value = data[:1], data[1:]
        if tag == _NONE and not value:
            fields.append(None)
        elif tag == _INT and value.lstrip(b"-").isdigit():
            fields.append(int(value))
        elif tag == _STR:
            fields.append(value.decode("utf-8", "surrogateescape"))
        else:
            raise ValueError(f"an unknown field {data[:16]!r}")
    return tuple(fields)


def _records(data: bytes) -> list[tuple[Field, ...]]:
    """The whole records in ``data``."""
    return [decode(body) for body in _chunks(data, whole=False)]


def _error_of(record: tuple[Field, ...]) -> SandboxError:
    """The SandboxError an ``error`` record reports; ValueError if it is not one."""
    if len(record) != 6:
        raise ValueError(f"an error record of {len(record)} fields")
    _, step, err, strerror, filename, filename2 = record
    if not isinstance(step, str) or isinstance(err, str) or not isinstance(strerror, str):
        raise ValueError("an error record with fields of the wrong types")
    if isinstance(filename, int) or isinstance(filename2, int):
        raise ValueError("an error record with a path that is a number")
    return SandboxError(step, err, strerror, filename, filename2)


def await_status(fd: int, task: Task) -> None:
    """Read the child's status records until EOF; raise the error it reported."""
    data = bytearray()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    try:
        records = _records(bytes(data))
        errors = [_error_of(r) for r in records if r[:1] == ("error",)]
        if any(r[:1] not in (("ok",), ("error",)) for r in records):
            raise ValueError("a record of an unknown kind")
    except ValueError as exc:
        raise SandboxError(
            "setup", None, f"the sandbox sent a status report that is not one of pyclone's ({exc})"
        ) from None
    if errors:
        raise errors[0]
    if not records:
        code = task.wait()
        raise SandboxError(
            "setup", None, f"the sandbox ended during setup without a report ({describe(code)})"
        )


def describe(code: int | None) -> str:
    """How the child ended, for the error of a setup that sent no report."""
    if code is None:  # Task.wait() cannot always know (see pyclone.Task)
        return "status unknown"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit status {code}"


def report(fd: int, record: tuple[Field, ...]) -> None:
    """Send one status record from the child."""
    body = encode(record)
    os.write(fd, RECORD.pack(len(body)) + body)  # small: one atomic write


class StepFailed(Exception):
    """Raised in the child after the error record has been sent."""


class StepReporter:
    """Runs the child's setup steps, sending the first failure as an error record.

    ``prefixes`` are the staging directories a path may carry while a new
    root is being assembled; they are removed from reported paths.
    """

    status_fd: int
    prefixes: tuple[str, ...]

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run one setup step; on failure send the error record and stop."""
        try:
            yield
        except StepFailed:
            raise
        except OSError as exc:
            self.fail(name, exc.errno, exc.strerror or str(exc), exc.filename, exc.filename2)
        except Exception as exc:
            self.fail(name, None, f"{type(exc).__name__}: {exc}", None, None)

    def fail(
        self, step: str, err: int | None, strerror: str, filename: Any, filename2: Any
    ) -> NoReturn:
        record = ("error", step, err, strerror, self.host(filename), self.host(filename2))
        with contextlib.suppress(OSError):
            report(self.status_fd, record)
        raise StepFailed(step)

    def host(self, name: Any) -> str | None:
        """A path as the user wrote it: staging prefixes removed."""
        if name is None:
            return None
        text = os.fsdecode(name) if isinstance(name, (str, bytes)) else str(name)
        for prefix in self.prefixes:
            if text == prefix:
                return "/"
            if text.startswith(prefix + "/"):
                return text[len(prefix) :]
        return text
