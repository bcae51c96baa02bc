"""The status line a node logs on SIGUSR1: figures read from its parts, after real traffic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from presence_sip.node import Node, NodeConfig
from presence_sip.presence.watchers import PresenceSettings
from presence_sip.sip.peer import Peer
from presence_sip.status import NodeStatus, metrics_text, responses_by_class
from presence_sip.transport.listen import ListenSpec

DOMAIN = "example.test"
PHONE = Peer("udp", "127.0.0.1", 16000)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    spec = ListenSpec("udp", "127.0.0.1", 15070)
    built = Node(
        NodeConfig(
            name="ps1", domain=DOMAIN, listen=(spec,), data_dir=str(tmp_path),
            auth="none", default_policy="allow",
        )
    )  # fmt: skip
    built.route_for([spec])
    yield built
    built.close()


def request(method: str, n: int, extra: str = "", body: str = "") -> bytes:
    return (
        f"{method} sip:+4477009001{n:02d}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:16000;branch=z9hG4bK-{method}-{n}\r\n"
        f"From: <sip:+4477009001{n:02d}@{DOMAIN}>;tag=f{n}\r\n"
        f"To: <sip:+4477009001{n:02d}@{DOMAIN}>\r\n"
        f"Call-ID: {method}-{n}@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def pidf(n: int) -> str:
    return (
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        f'entity="sip:+4477009001{n:02d}@{DOMAIN}"><tuple id="t"><status><basic>open</basic>'
        "</status></tuple></presence>"
    )


def test_the_status_counts_what_the_node_holds_and_answered(node: Node) -> None:
    contact = "Contact: <sip:phone@127.0.0.1:16000>\r\nExpires: 600\r\n"
    for n in (1, 2):
        node.endpoint.receive(request("REGISTER", n, contact), PHONE, node.clock())
    node.endpoint.receive(
        request("PUBLISH", 1, "Event: presence\r\nExpires: 600\r\n"
                "Content-Type: application/pidf+xml\r\n", pidf(1)),
        PHONE, node.clock(),
    )  # fmt: skip
    node.endpoint.receive(
        request("SUBSCRIBE", 1, f"Event: presence\r\n{contact}"), PHONE, node.clock()
    )
    node.endpoint.receive(request("PUBLISH", 3, "Event: dialog\r\n"), PHONE, node.clock())  # 489
    node.endpoint.receive(b"NOTIFY nonsense\r\n\r\n", PHONE, node.clock())  # unparsable
    node.endpoint.outbox()
    status = node.status()
    assert (status.aors, status.bindings) == (2, 2)
    assert (status.subscriptions, status.publications) == (1, 1)
    assert status.by_class == {2: 4, 4: 1}
    assert status.responses_sent == 5
    assert status.requests_sent == 1  # the NOTIFY of the subscription
    assert status.received == 6
    assert status.storage_ok
    line = status.line()
    assert line.startswith("ps1 status: up 0m0")
    assert "holds 2 AORs (2 bindings), 1 subscriptions, 1 publications" in line
    assert "5 responses out (2xx 4, 4xx 1), 1 requests out" in line
    assert line.endswith("; storage ok")


def test_publications_ended_for_max_publications_are_counted(tmp_path: Path) -> None:
    spec = ListenSpec("udp", "127.0.0.1", 15070)
    built = Node(
        NodeConfig(
            name="ps1", domain=DOMAIN, listen=(spec,), data_dir=str(tmp_path), auth="none",
            presence=PresenceSettings(max_publications=2),
        )
    )  # fmt: skip
    try:
        built.route_for([spec])
        for cseq in (1, 2, 3):  # three initial PUBLISHes (no SIP-If-Match) of one presentity
            publish = request(
                "PUBLISH", 1, "Event: presence\r\nExpires: 600\r\n"
                "Content-Type: application/pidf+xml\r\n", pidf(1),
            ).replace(b"CSeq: 1 ", f"CSeq: {cseq} ".encode()).replace(
                b"branch=z9hG4bK-PUBLISH-1", f"branch=z9hG4bK-PUBLISH-1-{cseq}".encode()
            )  # fmt: skip
            built.endpoint.receive(publish, PHONE, built.clock())
            ((answer, _),) = built.endpoint.outbox()
            assert answer.startswith(b"SIP/2.0 200 ")
        status = built.status()
    finally:
        built.close()
    assert (status.publications, status.publications_ended) == (2, 1)
    assert "2 publications (1 ended for max_publications)" in status.line()
    assert 'presence_sip_publications_ended_total{node="ps1"} 1' in metrics_text([status])


def test_subscriptions_refused_for_max_subscriptions_are_counted(tmp_path: Path) -> None:
    spec = ListenSpec("udp", "127.0.0.1", 15070)
    built = Node(
        NodeConfig(
            name="ps1", domain=DOMAIN, listen=(spec,), data_dir=str(tmp_path), auth="none",
            default_policy="allow", presence=PresenceSettings(max_subscriptions=1),
        )
    )  # fmt: skip
    contact = "Event: presence\r\nContact: <sip:phone@127.0.0.1:16000>\r\nExpires: 600\r\n"
    try:
        built.route_for([spec])
        for n in (2, 3):  # two registered presentities
            register = request("REGISTER", n, "Contact: <sip:p@127.0.0.1:16000>\r\n")
            built.endpoint.receive(register, PHONE, built.clock())
        built.endpoint.outbox()
        statuses = []
        for n in (2, 3):  # one watcher (+...01) subscribes to both
            subscribe = request("SUBSCRIBE", n, contact).replace(
                f"From: <sip:+4477009001{n:02d}@".encode(), b"From: <sip:+447700900101@"
            )
            built.endpoint.receive(subscribe, PHONE, built.clock())
            statuses += [a.split(b"\r\n")[0] for a, _ in built.endpoint.outbox()]
        status = built.status()
    finally:
        built.close()
    assert statuses[0] == b"SIP/2.0 200 OK"
    assert b"SIP/2.0 403 Too many subscriptions" in statuses
    assert (status.subscriptions, status.subscriptions_refused) == (1, 1)
    assert "1 subscriptions (1 refused for max_subscriptions)" in status.line()
    assert 'presence_sip_subscriptions_refused_total{node="ps1"} 1' in metrics_text([status])


def test_a_node_without_the_presence_role_says_nothing_of_subscriptions(tmp_path: Path) -> None:
    built = Node(NodeConfig(data_dir=str(tmp_path), roles=frozenset({"registrar"})))
    try:
        status = built.status()
    finally:
        built.close()
    assert status.subscriptions is None
    assert "subscriptions" not in status.line()


def test_line_format() -> None:
    status = NodeStatus(
        name="gw1", uptime=3 * 86400 + 4 * 3600 + 5 * 60 + 9, aors=0, bindings=0,
        subscriptions=7, publications=2, transactions=11, connections=3, received=100,
        responses_sent=90, by_class={5: 1, 2: 89}, requests_sent=4, timeouts=1,
        transport_errors=3, malformed=2,
        retransmitted=5, refused_for_load=0, moved_to_tcp=1, auth_failed=31, auth_blocked=9,
        tls_failed=4, keepalives=12, storage_ok=False,
    )  # fmt: skip
    assert status.line() == (
        "gw1 status: up 3d04h05m; holds 0 AORs (0 bindings), 7 subscriptions, "
        "2 publications, 11 transactions, 3 connections; since start 100 messages in, "
        "90 responses out (2xx 89, 5xx 1), 4 requests out, 1 timed out, 3 unreachable, "
        "2 malformed answered, "
        "5 retransmitted, 0 refused for load, 1 moved to TCP, "
        "31 failed authentications (9 refused blocked), 4 failed TLS handshakes, "
        "12 UDP keep-alives; STORAGE FAILING"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0m00s"), (307, "5m07s"), (7200, "2h00m"), (90061, "1d01h01m")]
)
def test_uptime(seconds: float, text: str) -> None:
    status = NodeStatus("n", seconds, 0, 0, None, None, 0, 0, 0, 0)
    assert status.line().startswith(f"n status: up {text};")


def test_responses_by_class() -> None:
    assert responses_by_class({200: 5, 202: 1, 404: 2, 100: 3}) == {2: 6, 4: 2, 1: 3}
