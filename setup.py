"""Build the C extension; all metadata is in pyproject.toml."""

import os

from setuptools import Extension, setup

extra = ["-Wall", "-Wextra", "-std=gnu11"]
if os.environ.get("PYCLONE_WERROR") or os.environ.get("CI"):
    extra.append("-Werror")

setup(
    ext_modules=[
        Extension(
            "pyclone._pyclone",
            sources=["src/_pyclone.c", "src/_pyclone_internal.c"],
            extra_compile_args=extra,
        )
    ]
)
