"""Shared test set-up: the pysipp shim, marker groups, hypothesis profiles, common fixtures.

* ``pysipp_compat`` is imported first, so any test module can ``import pysipp``.
* Tests under ``tests/integration``, ``tests/sipp`` and ``tests/interop`` get the marker of their
  directory, so ``-m`` selects exactly what the Makefile's ``test-*`` targets promise.
* Hypothesis profiles: ``dev`` (default, no deadline: CI machines are slow and shared) and
  ``fuzz`` (``make fuzz``: many more examples); pick with ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:  # so `import pysipp_compat` works under any import mode
    sys.path.insert(0, str(_TESTS))

import pysipp_compat  # noqa: E402, F401  (first: makes `import pysipp` work)
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from loopback import free_port  # noqa: E402

settings.register_profile("dev", deadline=None)
settings.register_profile(
    "fuzz", deadline=None, max_examples=50_000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

_DIRECTORY_MARKERS = {"integration": "integration", "sipp": "sipp", "interop": "interop"}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a stale mypyc build: Python would import the old compiled modules."""
    from presence_sip import native

    stale = native.stale_modules()
    if stale:
        pytest.exit(
            "compiled modules are older than their source, so the tests would run the old code: "
            f"{', '.join(stale)}. Rebuild with `make venv` (or, for pure Python, `make clean` "
            "then `PRESENCE_SIP_PURE=1 .venv/bin/pip install -e .`).",
            returncode=3,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with the group of the directory it lives in."""
    for item in items:
        try:
            parts = item.path.resolve().relative_to(_TESTS).parts
        except ValueError:
            continue
        marker = _DIRECTORY_MARKERS.get(parts[0]) if parts else None
        if marker is not None:
            item.add_marker(marker)


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[..., int]:
    """The :func:`free_port` helper: ``port = free_port()`` inside a test."""
    return free_port


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    """An empty directory for a node's data (``--data DIR``: SQLite files and the like)."""
    data = tmp_path / "data"
    data.mkdir()
    return data
