"""What the atheris harnesses of ``fuzz/`` share: the package they import, seeds, the run.

atheris steers by the Python lines an input reaches and, like coverage, sees no compiled code:
against the mypyc build and the C parser path every input looks alike, libFuzzer keeps a corpus
of one byte and mutates it blindly.  So by default a harness imports a pure-Python copy of the
package (its ``.py`` files, copied to :data:`PURE_COPY`, with ``PRESENCE_SIP_PURE=1``) and
instruments it.  The C fast paths are held to that Python code by ``tests/unit/test_speedups.py``
and ``tests/unit/test_uri_fast_paths.py``.  ``--compiled`` fuzzes the installed build instead
(crashes only, without guidance).

Each harness writes its seeds into its corpus directory (``fuzz/corpus/<harness>`` unless one is
given on the command line), where libFuzzer adds the inputs it finds interesting.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PURE_COPY = ROOT / "build" / "fuzz-pure"
"""Where the pure-Python copy of the package is made (replaced at every start)."""

sys.path.insert(0, str(ROOT / "tests"))  # the test vectors


def pure_copy() -> Path:
    """:data:`PURE_COPY`, holding the package's ``.py`` files only (no compiled module)."""
    shutil.rmtree(PURE_COPY, ignore_errors=True)
    for source in (ROOT / "presence_sip").rglob("*.py"):
        destination = PURE_COPY / source.relative_to(ROOT)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return PURE_COPY


def import_package(modules: list[str], *, compiled: bool) -> None:
    """Import ``modules`` (of ``presence_sip``) instrumented: from the installed build, or from
    a pure copy made now.  Everything of the package a harness uses must be imported here, or
    later by these modules, never before."""
    import atheris

    if "presence_sip" in sys.modules:
        raise RuntimeError("presence_sip was imported before the harness chose which one")
    home = ROOT if compiled else pure_copy()
    if not compiled:
        os.environ["PRESENCE_SIP_PURE"] = "1"  # the C paths off, whatever is importable
    sys.path.insert(0, str(home))
    with atheris.instrument_imports(include=["presence_sip"]):
        for name in modules:
            __import__(name)
    where = Path(sys.modules["presence_sip"].__file__ or "")
    if not where.is_relative_to(home):
        raise RuntimeError(f"imported {where}, not the package in {home}")


def vector_seeds() -> dict[str, bytes]:
    """Every test vector (RFC 4475, RFC 5118 made wire-ready, the RFC 3261/3856/3903 examples),
    by a file name usable in a corpus directory."""
    from vectors import load, names, wire

    out = {n.replace("/", "_"): load(n) for n in names("rfc4475") + names("sip")}
    out.update({n.replace("/", "_"): wire(n) for n in names("rfc5118")})
    return out


def fuzz(
    name: str,
    modules: list[str],
    setup: Callable[[], None],
    test_one_input: Callable[[bytes], None],
    seeds: Callable[[], dict[str, bytes]],
) -> None:
    """Parse the command line (libFuzzer's, plus ``--compiled``), import the package, call
    ``setup``, write the seeds and fuzz ``test_one_input`` until libFuzzer stops."""
    import atheris

    compiled = "--compiled" in sys.argv
    argv = [a for a in sys.argv if a != "--compiled"]
    corpus = next((Path(a) for a in argv[1:] if not a.startswith("-")), None)
    if corpus is None:
        corpus = ROOT / "fuzz" / "corpus" / name
        argv.append(str(corpus))
    import_package(modules, compiled=compiled)
    setup()
    corpus.mkdir(parents=True, exist_ok=True)
    for seed_name, data in seeds().items():
        (corpus / seed_name).write_bytes(data)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
