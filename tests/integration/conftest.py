"""Fixtures for tests that run ``presence-sip serve`` as a subprocess (see ``serve_process.py``).

* ``serve_factory``: ``start(domain=..., auth=..., roles=..., data_dir=...)`` -> a started
  :class:`ServeProcess`; every node started is stopped at teardown with one SIGTERM and must exit
  0 within 5 s; logs are dumped when the test failed.
* ``serve``: one node with the default roles and digest authentication for ``example.test``.
* ``shared_serve``: the same, shared by the tests of a module (for tests that change no state
  another test could see); its log is dumped when any test of the module failed.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from serve_process import ServeProcess, serve_pool

SERVE_DOMAIN = "example.test"


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


@pytest.fixture
def serve(serve_factory: Callable[..., ServeProcess]) -> ServeProcess:
    return serve_factory(domain=SERVE_DOMAIN)


@pytest.fixture(scope="module")
def shared_serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    failures_before = request.session.testsfailed
    directory = tmp_path_factory.mktemp("shared-serve")
    with serve_pool(directory, lambda: request.session.testsfailed > failures_before) as start:
        yield start(domain=SERVE_DOMAIN)
