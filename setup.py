"""Build of the optional native parts; all metadata lives in pyproject.toml.

Three accelerators, all optional (without a C compiler the package installs and runs in pure
Python, the same code):

* ``presence_sip/sip/_speedups.c``: the parser's C fast path.
* ``presence_sip/presence/_speedups.c``: the C fast path of PIDF validation (issue 8).
* The modules of :data:`NATIVE_MODULES` compiled to C extensions by mypyc (issue 8): the request
  path of the sans-IO core, from parsing to the presence server.  Each compiled module shadows its
  ``.py`` file, so a changed ``.py`` needs a rebuild (``make venv``; the test suite refuses to run
  against a stale build).  ``PRESENCE_SIP_PURE=1`` at build time skips mypyc, and at run time
  turns both C paths off.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE_MODULES = [
    "presence_sip/deadlines.py",
    "presence_sip/dialog/dialog.py",
    "presence_sip/endpoint.py",
    "presence_sip/ids.py",
    "presence_sip/presence/notifier.py",
    "presence_sip/presence/pidf.py",
    "presence_sip/presence/pidf_compose.py",
    "presence_sip/presence/publications.py",
    "presence_sip/presence/role.py",
    "presence_sip/presence/server.py",
    "presence_sip/presence/subscriptions.py",
    "presence_sip/presence/watchers.py",
    "presence_sip/proxy/forward.py",
    "presence_sip/proxy/proxy.py",
    "presence_sip/proxy/routing.py",
    "presence_sip/registrar/registrar.py",
    "presence_sip/registrar/role.py",
    "presence_sip/runtime/clock.py",
    "presence_sip/sharded.py",
    "presence_sip/sip/grammar.py",
    "presence_sip/sip/headers.py",
    "presence_sip/sip/memo.py",
    "presence_sip/sip/message.py",
    "presence_sip/sip/parser.py",
    "presence_sip/sip/peer.py",
    "presence_sip/sip/responses.py",
    "presence_sip/sip/serializer.py",
    "presence_sip/sip/status.py",
    "presence_sip/sip/uri.py",
    "presence_sip/storage/group_commit.py",
    "presence_sip/transaction/client.py",
    "presence_sip/transaction/context.py",
    "presence_sip/transaction/events.py",
    "presence_sip/transaction/manager.py",
    "presence_sip/transaction/server.py",
    "presence_sip/transaction/states.py",
]
"""Compiled by mypyc.  The Makefile (rebuild when one changes) and tests/unit/test_native.py read
this list; :mod:`presence_sip.native` finds the compiled modules by their files."""

NATIVE_GROUP = "presence_sip._native"
"""mypyc puts the code of all of them in one library, ``presence_sip/_native__mypyc*.so``."""


def can_compile() -> bool:
    """A C compiler and the interpreter's headers are there (else: pure Python, quietly)."""
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return include.exists() and shutil.which(compiler) is not None


def native_extensions() -> list[Extension]:
    if os.environ.get("PRESENCE_SIP_PURE") or not can_compile():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # a build without the build-system requirements: pure Python
        return []
    # One C file per module (``multi_file``), compiled on every CPU (ParallelBuildExt): the build
    # of 2026-11-29 took 2 min 39 s as one 225,000-line file, 1 min 31 s so on 2 CPUs, with the
    # same instructions per PUBLISH and per cycle under cachegrind (docs/performance.md).
    extensions = list(
        mypycify(
            NATIVE_MODULES,
            opt_level="3",
            debug_level="0",
            group_name=NATIVE_GROUP,
            multi_file=True,
        )
    )
    for extension in extensions:  # the group's header is in build/presence_sip/, not build/
        extension.include_dirs.append(os.path.join("build", *NATIVE_GROUP.split(".")[:-1]))
    return extensions


class ParallelBuildExt(build_ext):
    """Compiles the C files of each extension on every CPU at once (setuptools compiles them
    one after the other; mypyc's group is one extension of ~35 files)."""

    def build_extensions(self) -> None:
        compile_serially = self.compiler.compile

        def compile_all(sources: list[str], *args: Any, **kwargs: Any) -> list[str]:
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                parts = list(
                    pool.map(lambda source: compile_serially([source], *args, **kwargs), sources)
                )
            return [obj for objects in parts for obj in objects]

        self.compiler.compile = compile_all
        super().build_extensions()


setup(
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=[
        Extension(
            "presence_sip.sip._speedups",
            ["presence_sip/sip/_speedups.c"],
            extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "presence_sip.presence._speedups",
            ["presence_sip/presence/_speedups.c"],
            extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        *native_extensions(),
    ],
)
