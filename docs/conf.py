"""Sphinx configuration for the pyclone documentation.

Build from the repository root, with the compiled extension importable::

    python setup.py build_ext --inplace
    PYTHONPATH=. sphinx-build -W -b html docs docs/_build/html
    PYTHONPATH=. sphinx-build -W -b doctest docs docs/_build/doctest
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
try:
    import pyclone
except ImportError:  # not on PYTHONPATH: use the source tree (built in place)
    sys.path.insert(0, str(HERE.parent))
    import pyclone

project = "pyclone"
author = "the pyclone developers"
copyright = "the pyclone developers"
release = pyclone.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.graphviz",
    "sphinx.ext.viewcode",
    "pyclone_docs",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
html_static_path = ["_static"]
html_css_files = ["pyclone.css"]
html_theme = "alabaster"
html_title = f"pyclone {release}"
html_theme_options = {
    "description": "Processes and threads are both tasks: the clone flags decide.",
    "fixed_sidebar": True,
    "page_width": "1100px",
}

default_role = "code"
primary_domain = "py"
highlight_language = "python3"
manpages_url = "https://man7.org/linux/man-pages/man{section}/{page}.{section}.html"

# -- autodoc -----------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}
autodoc_preserve_defaults = True

# -- doctest -----------------------------------------------------------------
# Every example on every page runs under `sphinx-build -b doctest`, as root,
# in this process.  Examples that need a feature from a later branch are
# guarded with `:skipif:` on that feature's absence and start running as
# soon as it lands.
doctest_global_setup = """
import os
import signal
import socket
import threading
import time
import importlib.util

import pyclone

HAS_ACTIONS = importlib.util.find_spec("pyclone.actions") is not None
HAS_VM_CALLABLES = hasattr(pyclone, "child_exit")
HAS_SHARED_RESOURCES = hasattr(pyclone, "shared_resources")
HAS_EXPLAIN = hasattr(pyclone, "explain")
if HAS_ACTIONS:
    import pyclone.actions
"""
# Examples in docstrings are written for their module's namespace, so they
# run there, with `doctest` (tests/test_docs.py), not in a page's namespace.
doctest_test_doctest_blocks = ""
doctest_default_flags = (
    __import__("doctest").ELLIPSIS
    | __import__("doctest").NORMALIZE_WHITESPACE
    | __import__("doctest").DONT_ACCEPT_TRUE_FOR_1
)
trim_doctest_flags = True

graphviz_output_format = "svg"
