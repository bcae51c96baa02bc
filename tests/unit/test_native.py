"""The mypyc build (``setup.py`` NATIVE_MODULES) is what the tests run, and a stale one is told.

``make`` builds with a C compiler (it installs one), so every listed module must be compiled:
a build that quietly fell back to pure Python fails here, not skips.  With
``PRESENCE_SIP_PURE=1`` (``make cov``) the build must be pure Python instead.
"""

from __future__ import annotations

import ast
import importlib
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from presence_sip import native

ROOT = Path(__file__).resolve().parents[2]
PURE = bool(os.environ.get("PRESENCE_SIP_PURE"))


def listed_modules() -> list[str]:
    """NATIVE_MODULES of setup.py, as dotted names."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "NATIVE_MODULES" for t in targets):
                paths = ast.literal_eval(node.value)  # type: ignore[arg-type]
                return [p.removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError("setup.py has no NATIVE_MODULES list")


MODULES = listed_modules()


def test_the_list_names_real_modules() -> None:
    assert len(MODULES) == len(set(MODULES)) >= 20
    for name in MODULES:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name


@pytest.mark.parametrize("name", MODULES)
def test_python_imports_the_build_asked_for(name: str) -> None:
    module = importlib.import_module(name)
    compiled = str(module.__file__).endswith(tuple(EXTENSION_SUFFIXES))
    assert compiled is not PURE, f"{name} from {module.__file__}"


def test_what_the_node_logs() -> None:
    if PURE:
        assert native.describe() == "pure Python core (no mypyc build)"
        assert native.compiled_modules() == {}
    else:
        assert native.describe() == f"mypyc-compiled core ({len(MODULES)} modules)"
        assert sorted(native.compiled_modules()) == sorted(MODULES)
    assert native.stale_modules() == []  # tests/conftest.py would not have started


def fake_package(root: Path) -> tuple[Path, Path, Path]:
    """``pkg/sub/mod.py`` with an extension of this interpreter, plus a lone ``.so``."""
    package = root / "pkg"
    (package / "sub").mkdir(parents=True)
    source = package / "sub" / "mod.py"
    source.write_text("X = 1\n")
    extension = package / "sub" / f"mod{EXTENSION_SUFFIXES[0]}"
    extension.write_bytes(b"")
    (package / f"lonely{EXTENSION_SUFFIXES[0]}").write_bytes(b"")  # no .py: not a compiled module
    (package / "sub" / "other.py").write_text("Y = 2\n")
    (package / "sub" / "other.cpython-10-foreign.so").write_bytes(b"")  # another interpreter's
    return package, source, extension


def test_a_source_newer_than_its_build_is_stale(tmp_path: Path) -> None:
    package, source, extension = fake_package(tmp_path)
    os.utime(source, (1_000_000, 1_000_000))
    os.utime(extension, (1_000_100, 1_000_100))
    assert native.compiled_modules(package) == {"pkg.sub.mod": (source, extension)}
    assert native.stale_modules(package) == []
    assert native.describe(package) == "mypyc-compiled core (1 module)"
    os.utime(source, (1_000_200, 1_000_200))  # edited after the build
    assert native.stale_modules(package) == ["pkg.sub.mod"]


def test_builds_for_other_interpreters_do_not_count(tmp_path: Path) -> None:
    package, _, extension = fake_package(tmp_path)
    extension.unlink()
    assert native.compiled_modules(package) == {}
    assert native.describe(package) == "pure Python core (no mypyc build)"
