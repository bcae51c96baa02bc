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
def nodes(tmp_path: Path) -> Iterator[list[Any]]:
    fuzz_endpoint.setup(tmp_path / "nodes")
    built = list(fuzz_endpoint.nodes)
    yield built
    for node in built:
        node.close()


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


def tamper(
    monkeypatch: pytest.MonkeyPatch, nodes: list[Any], sends: list[tuple[bytes, Peer]]
) -> None:
    tampered = [SimpleNamespace(endpoint=TamperedEndpoint(n.endpoint, sends)) for n in nodes]
    monkeypatch.setattr(fuzz_endpoint, "nodes", tampered)


def publications(node: Any) -> list[str]:
    node.commits.flush()
    rows = node.conn.execute("SELECT presentity FROM presence_publications").fetchall()
    return [row[0] for row in rows]


def test_parser_harness_holds_on_every_seed() -> None:
    fuzz_parser.setup()
    seeds = vector_seeds()
    assert len(seeds) > 60
    for data in seeds.values():
        fuzz_parser.test_one_input(data)


def test_endpoint_harness_holds_on_every_seed(nodes: list[Any]) -> None:
    seeds = fuzz_endpoint.seeds()
    for name in sorted(seeds):
        fuzz_endpoint.test_one_input(seeds[name])
    # The seeds reached the roles: the open node stored alice's publication, the digest node
    # challenged it and stored nothing.
    open_node, digest_node = nodes
    assert any("alice" in presentity for presentity in publications(open_node))
    assert publications(digest_node) == []
    # The RFC 5626 seed registered a flow (the binding of alice's instance and reg-id 1).
    bindings = open_node.registrar.bindings(f"sip:alice@{fuzz_endpoint.DOMAIN}", fuzz_endpoint.now)
    assert any("reg-id=1" in binding.params for binding in bindings), bindings
    # The open node got every seed twice, as a datagram and over a TCP connection (the RFC 4475
    # vectors that lose their framing on a stream end that connection's input early).
    udp_only = digest_node.endpoint.stats.received
    assert udp_only >= 2 * len(seeds)  # each seed and a probe
    assert open_node.endpoint.stats.received >= udp_only + len(seeds) * 3 // 4
    # The STUN seed was answered by both (RFC 5626 §8), and checked by the harness.
    assert [node.endpoint.stats.stun_answered for node in nodes] == [1, 1]


def test_endpoint_harness_fails_on_a_wrong_stun_answer(
    nodes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = fuzz_endpoint.seeds()["stun_binding"]
    answer = b"\x01\x01" + seed[2:8] + bytes(12) + seed[20:]  # of another transaction
    tamper(monkeypatch, nodes, [(answer, fuzz_endpoint.peer)])
    with pytest.raises(AssertionError, match="not a STUN response to the request"):
        fuzz_endpoint.test_one_input(seed)


def test_endpoint_harness_fails_on_an_unparseable_datagram_out(
    nodes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tamper(monkeypatch, nodes, [(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", fuzz_endpoint.peer)])
    with pytest.raises(SipParseError):
        fuzz_endpoint.test_one_input(fuzz_endpoint.seeds()["own_publish"])


def test_endpoint_harness_fails_when_the_probe_goes_unanswered(
    nodes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tamper(monkeypatch, nodes, [])
    with pytest.raises(AssertionError, match="OPTIONS probe got"):
        fuzz_endpoint.test_one_input(b"garbage")
