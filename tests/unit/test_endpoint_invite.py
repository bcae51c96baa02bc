"""INVITE is answered as a stateless UAS does (RFC 3261 §8.2.7): one answer per INVITE received,
no server transaction, nothing retransmitted to a source that never ACKs (a spoofed one)."""

from __future__ import annotations

from presence_sip.config import Limits
from presence_sip.endpoint import Endpoint
from presence_sip.ids import CountingIdSource
from presence_sip.sip.peer import Peer

UAC = Peer("udp", "198.51.100.7", 5070)
TCP_UAC = Peer("tcp", "198.51.100.7", 40123, 9)


def invite(branch: str = "z9hG4bK-inv1", transport: str = "UDP", extra: str = "") -> bytes:
    return (
        "INVITE sip:+447700900123@net-b.test SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 10.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:100@net-b.test>;tag=f1\r\n"
        "To: <sip:+447700900123@net-b.test>\r\n"
        f"Call-ID: {branch}@10.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "User-Agent: friendly-scanner\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def ack(branch: str = "z9hG4bK-inv1") -> bytes:
    return (
        "ACK sip:+447700900123@net-b.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:100@net-b.test>;tag=f1\r\n"
        "To: <sip:+447700900123@net-b.test>;tag=x\r\n"
        f"Call-ID: {branch}@10.0.0.1\r\n"
        "CSeq: 1 ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def endpoint(max_transactions: int = Limits().max_transactions) -> Endpoint:
    return Endpoint(ids=CountingIdSource(), limits=Limits(max_transactions=max_transactions))


def test_an_invite_gets_one_405_and_leaves_no_transaction() -> None:
    node = endpoint()
    node.receive(invite(), UAC, 0.0)
    [(data, peer)] = node.outbox()
    tag = data.split(b";tag=", 2)[2].split(b"\r\n", 1)[0]
    assert data == (
        b"SIP/2.0 405 Method Not Allowed\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-inv1;rport=5070;received=198.51.100.7\r\n"
        b"From: <sip:100@net-b.test>;tag=f1\r\n"
        b"To: <sip:+447700900123@net-b.test>;tag=" + tag + b"\r\n"
        b"Call-ID: z9hG4bK-inv1@10.0.0.1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Allow: " + node.allow.encode() + b"\r\n"
        b"Content-Length: 0\r\n"
        b"Server: presence-sip\r\n"
        b"\r\n"
    )
    assert peer == UAC  # received + rport: back to the source address
    assert len(node.transactions) == 0
    assert node.get_timer() is None
    node.handle_timer(40.0)  # where Timer G resent it 10 times before Timer H
    assert node.outbox() == []
    node.receive(invite(), UAC, 41.0)  # a retransmission is answered again, once
    assert node.outbox() == [(data, UAC)]  # the same bytes, To-tag included (RFC 3261 §8.2.7)
    node.receive(invite("z9hG4bK-inv2"), UAC, 41.0)  # another INVITE: another To-tag
    [(other, _)] = node.outbox()
    assert tag not in other
    node.receive(ack(), UAC, 41.1)  # the ACK matches nothing: no answer
    assert node.outbox() == []
    assert node.stats.by_status == {405: 3}
    assert node.stats.responses_sent == 3


def test_a_flood_of_invites_never_fills_the_transaction_table() -> None:
    node = endpoint(max_transactions=100)
    for n in range(1000):
        node.receive(invite(f"z9hG4bK-f{n}"), UAC, n / 1000)
    answers = [d.split(b"\r\n", 1)[0] for d, _ in node.outbox()]
    assert answers == [b"SIP/2.0 405 Method Not Allowed"] * 1000
    assert len(node.transactions) == 0
    options = invite("z9hG4bK-o1").replace(b"INVITE", b"OPTIONS")
    node.receive(options, UAC, 1.0)  # everyone else is still served
    [(data, _)] = node.outbox()
    assert data.startswith(b"SIP/2.0 200 OK\r\n")


def test_the_earlier_checks_answer_an_invite_statelessly_too() -> None:
    node = endpoint()
    node.receive(invite(extra="Require: 100rel\r\n"), UAC, 0.0)
    [(data, _)] = node.outbox()
    assert data.startswith(b"SIP/2.0 420 Bad Extension\r\n")
    assert b"\r\nUnsupported: 100rel\r\n" in data
    assert len(node.transactions) == 0


def test_an_invite_over_tcp_is_answered_on_its_connection() -> None:
    node = endpoint()
    node.receive(invite(transport="TCP"), TCP_UAC, 0.0)
    [(data, peer)] = node.outbox()
    assert data.startswith(b"SIP/2.0 405 Method Not Allowed\r\n")
    assert peer.connection == TCP_UAC.connection
    assert len(node.transactions) == 0
