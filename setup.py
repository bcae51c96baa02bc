"""Build of the optional C accelerator; all metadata lives in pyproject.toml.

``presence_sip/sip/_speedups.c`` speeds up the parser's fast path.  It is optional: when it cannot
be compiled (no C compiler), the package installs and runs in pure Python.
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "presence_sip.sip._speedups",
            ["presence_sip/sip/_speedups.c"],
            extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
