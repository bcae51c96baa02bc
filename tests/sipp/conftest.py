"""Fixtures for SIPp runs against ``presence-sip serve`` (the node helper lives in
``tests/integration/serve_process.py``).

* ``serve_factory``: ``start(domain=..., auth=..., roles=..., data_dir=...)`` -> a started
  :class:`ServeProcess`; each node is stopped at teardown with one SIGTERM and must exit 0
  within 5 s; logs are dumped when the test failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

_INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(_INTEGRATION) not in sys.path:
    sys.path.insert(0, str(_INTEGRATION))

from serve_process import ServeProcess, serve_pool  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so fixtures know whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def call_failed(request: pytest.FixtureRequest) -> bool:
    """True when the test body failed (or never ran)."""
    report = getattr(request.node, "rep_call", None)
    return report is None or report.failed


@pytest.fixture
def serve_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ServeProcess]]:
    with serve_pool(tmp_path, lambda: call_failed(request)) as start:
        yield start
