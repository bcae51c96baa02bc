"""Make ``pysipp`` 0.1.0 (its last release on PyPI) importable on today's stack.

Import this module before anything imports ``pysipp`` (``tests/conftest.py`` does); afterwards a
plain ``import pysipp`` works everywhere.  The module also exposes the package as
``pysipp_compat.pysipp``.

pysipp 0.1.0 breaks in three places, all at import time:

1. ``pysipp/plugin.py`` calls ``pluggy.PluginManager("pysipp", implprefix="pysipp")``; pluggy 1.0
   removed ``implprefix`` (and pytest >= 7 needs pluggy >= 1).  The keyword matters: it is how
   plain ``def pysipp_conf_scen(...)`` functions in a scenario directory's ``pysipp_conf.py`` are
   found as hook implementations.  Dropping the keyword would silently ignore those files, so the
   shim swaps ``pluggy.PluginManager`` for :class:`PrefixPluginManager` (which accepts the keyword
   and claims undecorated functions by name prefix through ``parse_hookimpl_opts``, pluggy's
   documented extension point) *only while pysipp is imported*.  pytest's own plugin manager is
   never touched.
2. ``pysipp/utils.py`` does ``import imp`` and later calls ``imp.load_source(name, path)`` to load
   ``pysipp_conf.py``; ``imp`` is gone in Python 3.12.
3. ``pysipp/agent.py`` does ``from distutils import spawn`` and calls
   ``spawn.find_executable("sipp")``; ``distutils`` is gone in Python 3.12.

For 2 and 3 the shim puts minimal stand-ins into ``sys.modules`` while pysipp is imported, and only
when the real module cannot be found (Python 3.11 keeps its own ``imp`` and ``distutils``).  pysipp
keeps references to the stand-ins, so they keep working after they leave ``sys.modules``.
Deprecation and syntax warnings raised while pysipp is compiled and imported are silenced (it is
not our code, and pytest turns warnings into errors).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import shutil
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any, cast

import pluggy

__all__ = ["PrefixPluginManager", "import_pysipp", "pysipp"]


class PrefixPluginManager(pluggy.PluginManager):
    """A ``PluginManager`` that also accepts pluggy < 1.0's ``implprefix`` keyword.

    Functions of a registered plugin whose name starts with ``implprefix`` count as hook
    implementations even without a ``@hookimpl`` marker, as they did in pluggy 0.x.
    """

    def __init__(self, project_name: str, implprefix: str | None = None) -> None:
        super().__init__(project_name)
        self.implprefix = implprefix

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is not None or not self.implprefix or not name.startswith(self.implprefix):
            return opts
        # Only plain functions: pluggy can bind those, and getattr_static runs no user code.
        if not inspect.isfunction(inspect.getattr_static(plugin, name, None)):
            return None
        # An empty dict means "all defaults"; pluggy's register() normalises it.
        return cast("pluggy.HookimplOpts", {})


def _load_source(name: str, pathname: str) -> types.ModuleType:
    """``imp.load_source``: execute the file at ``pathname`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, pathname)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {pathname!r} as module {name!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _find_executable(executable: str, path: str | None = None) -> str | None:
    """``distutils.spawn.find_executable`` via ``shutil.which``."""
    return shutil.which(executable, path=path)


def _stand_ins() -> dict[str, types.ModuleType]:
    """Stand-in modules for the ones pysipp imports that this Python no longer has."""
    modules: dict[str, types.ModuleType] = {}
    if importlib.util.find_spec("imp") is None:
        imp = types.ModuleType("imp", "pysipp_compat stand-in: only load_source")
        imp.load_source = _load_source  # type: ignore[attr-defined]
        modules["imp"] = imp
    if importlib.util.find_spec("distutils") is None:
        distutils = types.ModuleType("distutils", "pysipp_compat stand-in: only spawn")
        distutils.__path__ = []  # a package, so `from distutils import spawn` resolves
        spawn = types.ModuleType("distutils.spawn", "pysipp_compat stand-in")
        spawn.find_executable = _find_executable  # type: ignore[attr-defined]
        distutils.spawn = spawn  # type: ignore[attr-defined]
        modules["distutils"] = distutils
        modules["distutils.spawn"] = spawn
    return modules


@contextlib.contextmanager
def _patched_for_import() -> Iterator[None]:
    """Swap in the plugin manager and stand-in modules; undo both afterwards."""
    stand_ins = _stand_ins()
    real_manager = pluggy.PluginManager
    pluggy.PluginManager = PrefixPluginManager  # type: ignore[misc]
    sys.modules.update(stand_ins)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            # 0.1.0 has `key[0] is not '_'`: a SyntaxWarning when compiled, an error under -W error.
            warnings.simplefilter("ignore", SyntaxWarning)
            yield
    finally:
        pluggy.PluginManager = real_manager  # type: ignore[misc]
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def import_pysipp() -> types.ModuleType:
    """Import pysipp 0.1.0 (once) with the compatibility patches applied and return it."""
    already = sys.modules.get("pysipp")
    if already is not None:
        return already
    with _patched_for_import():
        return importlib.import_module("pysipp")


pysipp = import_pysipp()
