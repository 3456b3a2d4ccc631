"""``pyclone run``'s options about the sandbox's life: given namespaces, locks, status fds.

``--info-fd`` and ``--json-status-fd`` are written here, in the launching
process, in bwrap's format: the sandbox's pid and namespace ids once it exists
(before its setup runs), and for ``--json-status-fd`` also the command's exit
code once it ends, only if the command was executed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from ..task import Task
from ._description import Description
from ._join import joins

#: The namespaces bwrap reports, in its order (a new user namespace's id is not yet final).
REPORTED = ("cgroup", "ipc", "mnt", "net", "pid", "uts")


def fd_number(text: str) -> int:
    """A descriptor number as bwrap takes it: decimal digits only."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"Invalid fd: {text}")
    return int(text)


def add_options(group: Any) -> None:
    """Add the options to the ``run`` parser (in ``group``)."""
    group.add_argument(
        "--lock-file",
        action="append",
        default=[],
        metavar="DEST",
        help="take a lock on DEST (in the sandbox) while the sandbox runs",
    )
    group.add_argument(
        "--sync-fd",
        type=fd_number,
        metavar="FD",
        help="keep FD open while the sandbox runs (held by its init)",
    )
    group.add_argument(
        "--block-fd",
        type=fd_number,
        metavar="FD",
        help="block on FD until some data to read is available, before COMMAND",
    )
    group.add_argument(
        "--userns",
        type=fd_number,
        metavar="FD",
        help="use this user namespace (cannot combine with --unshare-user)",
    )
    group.add_argument(
        "--userns2",
        type=fd_number,
        metavar="FD",
        help="after setup switch to this user namespace (only useful with --userns)",
    )
    group.add_argument(
        "--pidns",
        type=fd_number,
        metavar="FD",
        help="use this pid namespace (as the parent namespace with --unshare-pid)",
    )
    group.add_argument(
        "--info-fd",
        type=fd_number,
        metavar="FD",
        help="write the sandbox's pid and namespace ids to FD as JSON, then close it",
    )
    group.add_argument(
        "--json-status-fd",
        type=fd_number,
        metavar="FD",
        help="write the sandbox's status to FD as JSON documents (pid, then exit code)",
    )


def sandbox_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Sandbox` arguments these options give."""
    return {
        "lock_file": args.lock_file,
        "sync_fd": args.sync_fd,
        "block_fd": args.block_fd,
        "userns": args.userns,
        "pidns": args.pidns,
        "userns2": args.userns2,
    }


def namespaces(args: argparse.Namespace, new: set[str]) -> set[str]:
    """The namespaces to create, given --userns: bwrap's rules (and messages)."""
    if args.userns is None:
        return new
    if args.unshare_user:
        raise ValueError("--userns not compatible --unshare-user")
    if args.unshare_user_try or args.unshare_all:
        raise ValueError("--userns not compatible --unshare-user-try")
    return new - {"user"}  # not the one an unprivileged caller gets by default


class Reports:
    """The ``--info-fd`` and ``--json-status-fd`` descriptors of one ``pyclone run``."""

    def __init__(self, info_fd: int | None, status_fd: int | None) -> None:
        self.info_fd = info_fd
        self.status_fd = status_fd

    def __repr__(self) -> str:
        return f"<pyclone run reports info_fd={self.info_fd} json_status_fd={self.status_fd}>"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Reports:
        """The reports asked for; ValueError naming the option if a descriptor is not open."""
        reports = cls(args.info_fd, args.json_status_fd)
        named: list[tuple[str, int | None]] = [
            ("--info-fd", reports.info_fd),
            ("--json-status-fd", reports.status_fd),
            ("--sync-fd", args.sync_fd),
            ("--block-fd", args.block_fd),
            ("--userns", args.userns),
            ("--pidns", args.pidns),
            ("--userns2", args.userns2),
            ("--userns-block-fd", args.userns_block_fd),
        ]
        for option, fd in named:
            if fd is None:
                continue
            try:
                os.fstat(fd)
            except OSError as exc:
                raise ValueError(f"{option} {fd}: {exc.strerror}") from exc
        return reports

    def fds(self) -> tuple[int, ...]:
        """The descriptors only this process writes to (the sandbox closes them first, as bwrap)."""
        return tuple(fd for fd in (self.info_fd, self.status_fd) if fd is not None)

    def started(self, sandbox: Description, task: Task) -> None:
        """The sandbox exists: its pid and namespace ids to both descriptors."""
        if self.info_fd is None and self.status_fd is None:
            return
        try:
            self._started(sandbox, task)
        except OSError as exc:
            raise OSError(exc.errno, f"Write to info_fd: {exc.strerror}") from exc

    def _started(self, sandbox: Description, task: Task) -> None:
        ids = namespace_ids(sandbox, task.pid)
        if self.info_fd is not None:
            lines = [f'"child-pid": {task.pid}'] + [f'"{n}-namespace": {i}' for n, i in ids]
            _write(self.info_fd, "{\n    " + ",\n    ".join(lines) + "\n}\n")
            os.close(self.info_fd)  # as bwrap: a reader sees the end of it at once
            self.info_fd = None
        if self.status_fd is not None:
            fields = [f'"child-pid": {task.pid}'] + [f'"{n}-namespace": {i}' for n, i in ids]
            _write(self.status_fd, "{ " + ", ".join(fields) + " }\n")

    def exited(self, code: int) -> None:
        """The command (which was executed) ended with ``code``."""
        if self.status_fd is not None:
            # as bwrap: a failed write loses the status, the exit code is still returned
            with contextlib.suppress(OSError):
                _write(self.status_fd, f'{{ "exit-code": {code} }}\n')
            self.close()

    def close(self) -> None:
        for fd in (self.info_fd, self.status_fd):
            if fd is not None:
                os.close(fd)
        self.info_fd = self.status_fd = None


def namespace_ids(sandbox: Description, pid: int) -> list[tuple[str, int]]:
    """``(name, inode)`` of each namespace bwrap reports that the sandbox created."""
    ids = []
    for name in REPORTED:
        if name not in sandbox.new or (name == "pid" and joins(sandbox)):
            continue  # the pid is then a relay's, outside the sandbox's pid namespace
        try:
            ids.append((name, os.stat(f"/proc/{pid}/ns/{name}").st_ino))
        except OSError:
            continue  # as bwrap: what cannot be read is left out
    return ids


def _write(fd: int, text: str) -> None:
    data = text.encode()
    while data:
        data = data[os.write(fd, data) :]
