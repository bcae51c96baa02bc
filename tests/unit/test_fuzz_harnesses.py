"""The atheris harnesses of ``fuzz/`` hold on their own seeds, and catch what they are for.

``make fuzz`` runs them under atheris (not a test dependency); here their invariants run
without it, against the build the suite tests, so a harness that rots or a seed that breaks an
invariant fails ``make test``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))

import fuzz_endpoint
import fuzz_parser
from _harness import vector_seeds

from presence_sip.sip import SipParseError
from presence_sip.sip.peer import Peer


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Any]:
    fuzz_endpoint.setup(tmp_path / "node")
    built = fuzz_endpoint.node
    yield built
    built.close()


class TamperedEndpoint:
    """The node's endpoint, but what it would send is replaced (the endpoint is compiled, so
    its methods cannot be patched in place)."""

    def __init__(self, endpoint: Any, sends: list[tuple[bytes, Peer]]) -> None:
        self.endpoint = endpoint
        self.sends = sends

    def receive(self, data: bytes, source: Peer, now: float) -> None:
        self.endpoint.receive(data, source, now)

    def get_timer(self) -> float | None:
        result: float | None = self.endpoint.get_timer()
        return result

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)

    def outbox(self) -> list[tuple[bytes, Peer]]:
        self.endpoint.outbox()
        return self.sends


def tamper(monkeypatch: pytest.MonkeyPatch, node: Any, sends: list[tuple[bytes, Peer]]) -> None:
    monkeypatch.setattr(
        fuzz_endpoint, "node", SimpleNamespace(endpoint=TamperedEndpoint(node.endpoint, sends))
    )


def test_parser_harness_holds_on_every_seed() -> None:
    fuzz_parser.setup()
    seeds = vector_seeds()
    assert len(seeds) > 60
    for data in seeds.values():
        fuzz_parser.test_one_input(data)


def test_endpoint_harness_holds_on_every_seed(node: Any) -> None:
    seeds = fuzz_endpoint.seeds()
    for name in sorted(seeds):
        fuzz_endpoint.test_one_input(seeds[name])
    # The node's own seeds reached the roles: alice's publication is stored.
    node.commits.flush()
    rows = node.conn.execute("SELECT presentity FROM presence_publications").fetchall()
    assert ("alice@example.com",) in rows or any("alice" in r[0] for r in rows), rows


def test_endpoint_harness_fails_on_an_unparseable_datagram_out(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tamper(monkeypatch, node, [(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", fuzz_endpoint.peer)])
    with pytest.raises(SipParseError):
        fuzz_endpoint.test_one_input(fuzz_endpoint.seeds()["own_publish"])


def test_endpoint_harness_fails_when_the_probe_goes_unanswered(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tamper(monkeypatch, node, [])
    with pytest.raises(AssertionError, match="OPTIONS probe got"):
        fuzz_endpoint.test_one_input(b"garbage")
