"""Build the C extension; all metadata is in pyproject.toml."""

import os
import sys

if not sys.platform.startswith("linux"):
    # Said first, before setuptools loads or any compiler runs, so that the
    # reader gets a sentence instead of a wall of missing-header errors.
    sys.exit(
        f"pyclone supports Linux only: it calls clone(2), clone3(2) and kcmp(2) directly, "
        f"and this is {sys.platform!r}. Install it on Linux (a container or a VM will do)."
    )

from setuptools import Extension, setup

extra = ["-Wall", "-Wextra", "-std=gnu11", "-pthread"]
if os.environ.get("PYCLONE_WERROR") or os.environ.get("CI"):
    extra.append("-Werror")

# One extension, one file per concern (see README.md, "Layout").
sources = [
    "src/actions.c",
    "src/actions_child.c",
    "src/actions_mem.c",
    "src/actions_program.c",
    "src/actions_run.c",
    "src/borrowed.c",
    "src/borrowed_child.c",
    "src/childexit.c",
    "src/clone.c",
    "src/errors.c",
    "src/fdowner.c",
    "src/floor.c",
    "src/fork.c",
    "src/kcmp.c",
    "src/module.c",
    "src/nsutil.c",
    "src/pidfd.c",
    "src/pyabi.c",
    "src/safety.c",
    "src/seccomp.c",
    "src/threads.c",
    "src/trampoline_generic.c",
    "src/trampoline_x86_64.c",
]
# Every header, so that changing one rebuilds the extension (the sdist ships
# them through MANIFEST.in's "graft src").
headers = [
    "src/actions.h",
    "src/borrowed.h",
    "src/pyabi.h",
    "src/pyclone.h",
]

setup(
    ext_modules=[
        Extension(
            "pyclone._pyclone",
            sources=sources,
            depends=headers,
            extra_compile_args=extra,
            # the module calls pthread_create (floor.c): link libpthread the portable way
            extra_link_args=["-pthread"],
        )
    ]
)
