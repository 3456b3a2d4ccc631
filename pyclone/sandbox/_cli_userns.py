"""``pyclone run``'s options about user namespaces inside the sandbox, and SELinux labels.

``--disable-userns``, ``--assert-userns-disabled`` and ``--userns-block-fd`` are
checked after parsing with bwrap's rules and messages (exit status 1): the first
and the last need an explicit ``--unshare-user`` (the one an unprivileged caller
gets anyway does not count, as in bwrap), the last also ``--info-fd`` (whoever
writes to it learns the pid there), and the two do not combine.
``--exec-label`` and ``--file-label`` are refused while parsing, as bwrap 0.8
refuses them where SELinux is not enabled; pyclone applies no label at all.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._cli_errors import die
from ._cli_status import fd_number
from ._labels import refusal


def add_options(group: Any) -> None:
    """Add the options to the ``run`` parser (in ``group``)."""
    group.add_argument(
        "--disable-userns",
        action="store_true",
        help="disable further use of user namespaces inside the sandbox (needs --unshare-user)",
    )
    group.add_argument(
        "--assert-userns-disabled",
        action="store_true",
        help="fail unless further use of user namespaces inside the sandbox is disabled",
    )
    group.add_argument(
        "--userns-block-fd",
        type=fd_number,
        metavar="FD",
        help="with --unshare-user and --info-fd: wait for data on FD once the user namespace "
        "exists, and leave its uid and gid maps to whoever writes to FD",
    )
    for option in ("--exec-label", "--file-label"):
        group.add_argument(
            option,
            action=_Label,
            metavar="LABEL",
            help="SELinux label: refused (labeling not supported)",
        )


def sandbox_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Sandbox` arguments these options give, after bwrap's checks of them."""
    block = args.userns_block_fd
    if block is not None and not args.unshare_user:
        die(args, "--userns-block-fd requires --unshare-user")
    if block is not None and args.info_fd is None:
        die(args, "--userns-block-fd requires --info-fd")
    if args.disable_userns and not args.unshare_user:
        die(args, "--disable-userns requires --unshare-user")
    if args.disable_userns and block is not None:
        die(args, "--disable-userns is not compatible with  --userns-block-fd")  # sic: 2 spaces
    return {
        "disable_userns": args.disable_userns,
        "assert_userns_disabled": args.assert_userns_disabled,
        "userns_block_fd": block,
    }


class _Label(argparse.Action):
    """``--exec-label``/``--file-label``: refused where given, as bwrap refuses it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        die(parser, refusal())
