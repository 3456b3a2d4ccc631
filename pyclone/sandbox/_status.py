"""How a setup step's failure travels from the child to the parent and becomes a SandboxError.

The child sends pickled, length-prefixed records over a close-on-exec status
pipe; the parent reads them until EOF (the exec or the child's end closes it)
and raises the first error as :class:`SandboxError`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
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


#: The length prefix of each pickled status record.
RECORD = struct.Struct("<I")


def await_status(fd: int, task: Task) -> None:
    """Read the child's status records until EOF; raise the error it reported."""
    data = bytearray()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    records = []
    view = bytes(data)
    while len(view) >= RECORD.size:
        (size,) = RECORD.unpack_from(view)
        body = view[RECORD.size : RECORD.size + size]
        if len(body) < size:
            break
        records.append(pickle.loads(body))
        view = view[RECORD.size + size :]
    errors = [r for r in records if r[0] == "error"]
    if errors:
        _, step, err, strerror, filename, filename2 = errors[0]
        raise SandboxError(step, err, str(strerror), filename, filename2)
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


def report(fd: int, record: tuple[Any, ...]) -> None:
    """Send one status record from the child."""
    body = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
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
