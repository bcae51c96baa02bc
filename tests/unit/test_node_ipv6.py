"""A node listening on IPv6 writes its address as a URI and a Via must (RFC 3261 §25.1): in
brackets.  Driven sans-IO through the node ``serve`` builds, with byte-level assertions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from presence_sip.config import Limits
from presence_sip.node import Node, NodeConfig
from presence_sip.sip import Request, Response, parse_message
from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import hostport
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore
from presence_sip.transport.listen import ListenSpec

DOMAIN = "example.test"
BOB = "+447700900123"
WATCHER = Peer("udp", "::1", 16000)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    store = SqliteSubscriberStore.open(tmp_path, domain=DOMAIN)
    store.add_subscriber(BOB, "secret")
    store.close()
    listen = (ListenSpec("udp", "::1", 15070), ListenSpec("tcp", "::1", 15070))
    built = Node(
        NodeConfig(
            domain=DOMAIN, listen=listen, data_dir=str(tmp_path), auth="none",
            default_policy="allow", limits=Limits(udp_mtu=1300),
        )
    )  # fmt: skip
    built.route_for(listen)
    yield built
    built.close()


def subscribe() -> bytes:
    return (
        f"SUBSCRIBE sip:{BOB}@{DOMAIN} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP [::1]:16000;branch=z9hG4bK-v6-s;rport\r\n"
        f"From: <sip:w@{DOMAIN}>;tag=w1\r\nTo: <sip:{BOB}@{DOMAIN}>\r\n"
        "Call-ID: v6@x\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w@[::1]:16000>\r\n"
        "Max-Forwards: 70\r\nEvent: presence\r\nAccept: application/pidf+xml\r\n"
        "Expires: 600\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def publish(note: str) -> bytes:
    body = (
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{BOB}@{DOMAIN}">'
        f'<tuple id="t"><status><basic>open</basic></status><note>{note}</note></tuple>'
        "</presence>"
    )
    return (
        f"PUBLISH sip:{BOB}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP [::1]:16001;branch=z9hG4bK-v6-p{len(note)};rport\r\n"
        f"From: <sip:{BOB}@{DOMAIN}>;tag=p1\r\nTo: <sip:{BOB}@{DOMAIN}>\r\n"
        f"Call-ID: v6p{len(note)}@x\r\nCSeq: 1 PUBLISH\r\nMax-Forwards: 70\r\n"
        "Event: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def sent(node: Node) -> list[tuple[Request | Response, Peer]]:
    return [(parse_message(data), peer) for data, peer in node.endpoint.outbox()]


def test_contact_and_via_of_a_node_on_ipv6_are_in_brackets(node: Node) -> None:
    node.endpoint.receive(subscribe(), WATCHER, node.clock())
    (ok, _), (notify, to) = sent(node)
    assert isinstance(ok, Response)
    assert ok.status == 200
    assert ok.headers.get("Contact") == "<sip:[::1]:15070>"
    assert isinstance(notify, Request)
    assert str(notify.top_via).startswith("SIP/2.0/UDP [::1]:15070;branch=z9hG4bK")
    assert notify.headers.get("Contact") == "<sip:[::1]:15070>"
    assert to == WATCHER


def test_a_large_notify_to_an_ipv6_watcher_is_moved_to_tcp(node: Node) -> None:
    node.endpoint.receive(subscribe(), WATCHER, node.clock())
    (_, _), (first, _) = sent(node)
    assert isinstance(first, Request)
    answer = (
        "SIP/2.0 200 OK\r\n"
        + "".join(
            f"{name}: {value}\r\n"
            for name, value in first.headers
            if name in ("Via", "From", "To", "Call-ID", "CSeq")
        )
        + "Content-Length: 0\r\n\r\n"
    ).encode()
    node.endpoint.receive(answer, WATCHER, node.clock())
    node.endpoint.receive(publish("n" * 1500), Peer("udp", "::1", 16001), node.clock())
    notifies = [(m, p) for m, p in sent(node) if isinstance(m, Request)]
    [(notify, to)] = notifies
    assert str(notify.top_via).startswith("SIP/2.0/TCP [::1]:15070;branch=")
    assert (to.transport, to.port) == ("tcp", 16000)


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("127.0.0.1", 5060, "127.0.0.1:5060"),
        ("::1", 5060, "[::1]:5060"),
        ("[::1]", 5061, "[::1]:5061"),
        ("2001:db8::1", None, "[2001:db8::1]"),
        ("example.test", None, "example.test"),
    ],
)
def test_hostport(host: str, port: int | None, text: str) -> None:
    assert hostport(host, port) == text
