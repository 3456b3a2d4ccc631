"""Sphinx extension for the pyclone docs: tables generated from the code.

Nothing in the reference tables is typed by hand.  At build time this
extension imports pyclone and

* ``.. pyclone-flag-table::`` lists every :class:`pyclone.CloneFlag` member
  with its value, its ``spawn_task`` spelling (from :mod:`pyclone.spec`),
  the system calls that accept it, and whatever the rule model
  (``pyclone.rules``) says about it when that module is present;
* ``.. pyclone-support-matrix::`` *runs* one small task per flag class and
  child kind and records what happened: it worked, or pyclone refused it
  (the :class:`pyclone.UnsupportedFlags` message is the reason shown);
* ``.. pyclone-source-tree::`` lists every file of ``src/`` and ``pyclone/``
  with its line count and the job its opening comment states;
* ``.. pyclone-cli::`` prints the ``python -m pyclone`` help of every
  subcommand, from the argument parser itself;
* ``.. pyclone-changelog::`` shows the repository's CHANGELOG.md.

It also makes the site grow as features land without edits here:

* ``.. optional-toctree::`` is a toctree whose glob patterns may match
  nothing (a plain toctree warns, which ``-W`` turns into an error);
* ``:optdoc:`Title <path>``` links to a page if it exists, else prints the
  title as plain text;
* ``.. pending-feature:: EXPR`` shows its content as a note only while the
  Python expression is true (evaluated like a doctest ``:skipif:``);
* ``.. optional-automodule:: NAME`` documents a module with autodoc if it
  can be imported;
* names that another page documents itself (``.. autofunction::
  pyclone.x`` and friends) are left out of the module reference, so the
  two never collide as duplicate object descriptions.

Pages that use any of this are re-read on every build, so an incremental
build cannot show stale tables.

The parts live in the package ``_pyclone_docs`` next to this file, one
module per kind of generated content; this module registers them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

# Sphinx finds this file through docs/conf.py's sys.path entry, but the tests
# load it by file path: either way its sibling package must be importable.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _pyclone_docs._common import docname_join  # noqa: E402
from _pyclone_docs.api import (  # noqa: E402
    Autodoc,
    Constants,
    Data,
    OptionalAutomodule,
    RemainingApi,
    data_doc,
    elsewhere_documented,
    skip_member,
)
from _pyclone_docs.changelog import Changelog, markdown_to_rst  # noqa: E402
from _pyclone_docs.cli import CliHelp, cli_help  # noqa: E402
from _pyclone_docs.errors import Exceptions, exception_rows  # noqa: E402
from _pyclone_docs.flags import (  # noqa: E402
    MEANING,
    FlagTable,
    clone3_only,
    flag_table,
    rule_rows,
    spelling,
)
from _pyclone_docs.matrix import (  # noqa: E402
    Outcome,
    SupportMatrix,
    child_kinds,
    flag_classes,
    support_matrix,
    try_cell,
)
from _pyclone_docs.rules import RulesTable, rules_table_text  # noqa: E402
from _pyclone_docs.structure import (  # noqa: E402
    OptionalTocTree,
    PendingFeature,
    always_reread,
    filter_toctree_entries,
    merge_info,
    optdoc_role,
    purge_doc,
)
from _pyclone_docs.tree import SourceTree, tree_rows  # noqa: E402

__all__ = [
    "MEANING",
    "Outcome",
    "child_kinds",
    "cli_help",
    "clone3_only",
    "data_doc",
    "docname_join",
    "elsewhere_documented",
    "exception_rows",
    "filter_toctree_entries",
    "flag_classes",
    "flag_table",
    "markdown_to_rst",
    "rule_rows",
    "rules_table_text",
    "setup",
    "spelling",
    "support_matrix",
    "tree_rows",
    "try_cell",
]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("pyclone-flag-table", FlagTable)
    app.add_directive("pyclone-support-matrix", SupportMatrix)
    app.add_directive("pyclone-rules-table", RulesTable)
    app.add_directive("pyclone-cli", CliHelp)
    app.add_directive("pyclone-exceptions", Exceptions)
    app.add_directive("optional-toctree", OptionalTocTree)
    app.add_directive("pending-feature", PendingFeature)
    app.add_directive("optional-automodule", OptionalAutomodule)
    app.add_directive("pyclone-constants", Constants)
    app.add_directive("pyclone-remaining-api", RemainingApi)
    app.add_directive("pyclone-data", Data)
    app.add_directive("pyclone-autodoc", Autodoc)
    app.add_directive("pyclone-source-tree", SourceTree)
    app.add_directive("pyclone-changelog", Changelog)
    app.add_role("optdoc", optdoc_role)
    app.connect("autodoc-skip-member", skip_member)
    app.connect("env-get-outdated", always_reread)
    app.connect("env-purge-doc", purge_doc)
    app.connect("env-merge-info", merge_info)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
