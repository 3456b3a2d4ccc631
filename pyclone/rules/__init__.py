"""The kernel's validation of clone(2)/clone3(2) flags, as an ordered rule model.

The kernel checks a clone request in a fixed order (copy_clone_args_from_user,
clone3_args_valid, kernel_clone, copy_process, copy_namespaces) and the first
check that fails decides the errno.  :data:`RULES` lists those checks in that
order, as data: each :class:`Rule` has a name, an errno, the kernel function
that makes the check, the version it appeared in, and a predicate.
:func:`predict_errno` walks the list; :func:`explain` says the same in words.

The model covers what the flags, the exit signal and the caller's privilege
decide.  Checks that depend on other inputs (struct size, pointers, stack,
TLS, set_tid, the cgroup descriptor) or on resources (process and namespace
limits, free descriptors, memory) are listed in :data:`RULES` for reference
with ``predicted=False``: the model assumes a well-formed call, as pyclone
makes it, with resources to spare.

pyclone's own refusals (:class:`pyclone.UnsupportedFlags`, a ValueError
raised before any system call) are not kernel rules: :func:`refused` says
when a call gets one.
"""

from __future__ import annotations

# Call, _call and _first_failure are re-exported for pyclone.strategies, which
# builds requests and finds their first failing rule the way the model does.
from ._caller import CallerState
from ._evaluate import _first_failure as _first_failure
from ._evaluate import explain, failing_rule, predict_errno, rule_for_errno
from ._model import RULES as _RULES
from ._model import Rule
from ._parse import parse_flags
from ._refused import refused
from ._request import Call as Call
from ._request import _call as _call
from ._tables import FlagRow, flag_rows, flag_table, rules_table

__all__ = [
    "RULES",
    "CallerState",
    "FlagRow",
    "Rule",
    "explain",
    "failing_rule",
    "flag_rows",
    "flag_table",
    "parse_flags",
    "predict_errno",
    "refused",
    "rule_for_errno",
    "rules_table",
]

#: The kernel's checks, in the kernel's order.  The first failing one decides.
RULES: tuple[Rule, ...] = _RULES
