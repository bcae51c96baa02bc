"""Which modules run compiled by mypyc (``setup.py``, issue 8), and whether that build is stale.

A compiled module is a C extension next to its ``.py`` file and Python imports the extension
first, so an edited ``.py`` changes nothing until the package is built again.  Nodes log what
they run on at start-up and warn about a stale build; the test suite refuses to run against one.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def compiled_modules(package: Path = PACKAGE_DIR) -> dict[str, tuple[Path, Path]]:
    """Dotted name -> (source, extension) of every ``.py`` with an extension of this interpreter
    beside it, in ``package`` (a directory) and below."""
    found: dict[str, tuple[Path, Path]] = {}
    for suffix in EXTENSION_SUFFIXES:
        for extension in package.rglob(f"*{suffix}"):
            source = extension.with_name(extension.name[: -len(suffix)] + ".py")
            if source.exists():
                relative = source.relative_to(package.parent).with_suffix("")
                found[".".join(relative.parts)] = (source, extension)
    return found


def stale_modules(package: Path = PACKAGE_DIR) -> list[str]:
    """Compiled modules whose ``.py`` changed after the build (sorted)."""
    return sorted(
        name
        for name, (source, extension) in compiled_modules(package).items()
        if source.stat().st_mtime > extension.stat().st_mtime
    )


def describe(package: Path = PACKAGE_DIR) -> str:
    """One line for the start-up log."""
    count = len(compiled_modules(package))
    if not count:
        return "pure Python core (no mypyc build)"
    return f"mypyc-compiled core ({count} module{'' if count == 1 else 's'})"
