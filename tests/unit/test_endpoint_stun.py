"""Keep-alives on the SIP UDP port: STUN Binding requests (RFC 5626 §8) are answered by the
endpoint's stateless outbox, CRLF datagrams (pjsua's UDP keep-alive) and malformed STUN are
dropped without a word above DEBUG and without a SIP answer; over TCP/TLS nothing changes."""

from __future__ import annotations

import logging
import struct

import pytest

from presence_sip import stun
from presence_sip.endpoint import Endpoint
from presence_sip.ids import CountingIdSource
from presence_sip.sip import Response, parse_message
from presence_sip.sip.peer import Peer

UAC = Peer("udp", "198.51.100.7", 5070)
UAC6 = Peer("udp", "2001:db8::7", 5070)
TCP_UAC = Peer("tcp", "198.51.100.7", 40123, 9)
TRANSACTION_ID = bytes(range(1, 13))
BINDING = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + TRANSACTION_ID

SIP_HEADERS = (
    b"Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-k1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@net-b.test>;tag=a1\r\n"
    b"To: <sip:net-b.test>\r\n"
    b"Call-ID: keepalive-1@198.51.100.7\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OPTIONS = b"OPTIONS sip:net-b.test SIP/2.0\r\n" + SIP_HEADERS


def mapped_address(answer: bytes) -> tuple[str, int]:
    """The XOR-MAPPED-ADDRESS of a Binding success response, decoded here on its own."""
    assert answer[:2] == b"\x01\x01"
    found = stun.attributes(answer)
    assert found is not None
    value = dict(found)[stun.XOR_MAPPED_ADDRESS]
    mask = b"\x21\x12\xa4\x42" + answer[8:20]
    port = int.from_bytes(value[2:4], "big") ^ 0x2112
    raw = bytes(a ^ m for a, m in zip(value[4:], mask, strict=False))
    if value[1] == 1:
        return ".".join(str(b) for b in raw), port
    groups = [f"{int.from_bytes(raw[i : i + 2], 'big'):x}" for i in range(0, 16, 2)]
    return ":".join(groups), port


@pytest.mark.parametrize(
    ("source", "host"), [(UAC, "198.51.100.7"), (UAC6, "2001:db8:0:0:0:0:0:7")]
)
def test_a_binding_request_is_answered_with_its_source(source: Peer, host: str) -> None:
    node = Endpoint(ids=CountingIdSource())
    node.receive(BINDING, source, 0.0)
    [(answer, destination)] = node.outbox()
    assert destination == Peer("udp", source.host, source.port)
    assert answer[8:20] == TRANSACTION_ID
    assert mapped_address(answer) == (host, 5070)
    assert (node.stats.stun_answered, node.stats.dropped, node.stats.responses_sent) == (1, 0, 0)


def test_sip_goes_on_after_a_binding_request_from_the_same_source() -> None:
    node = Endpoint(ids=CountingIdSource())
    node.receive(BINDING, UAC, 0.0)
    [(stun_answer, _)] = node.outbox()
    assert stun.is_stun(stun_answer)
    node.receive(OPTIONS, UAC, 0.1)
    [(sip_answer, _)] = node.outbox()
    response = parse_message(sip_answer)
    assert isinstance(response, Response)
    assert response.status == 200


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\r\n", id="crlf"),
        pytest.param(b"\r\n\r\n", id="double-crlf"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_crlf_keepalive_is_dropped_silently(
    data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    node = Endpoint(ids=CountingIdSource())
    with caplog.at_level(logging.DEBUG):
        node.receive(data, UAC, 0.0)
    assert node.outbox() == []
    assert caplog.records == []
    assert (node.stats.keepalives, node.stats.dropped) == (1, 0)


def test_a_message_after_leading_crlfs_is_still_sip() -> None:
    """RFC 3261 §7.5: CRLFs before a message are ignored."""
    node = Endpoint(ids=CountingIdSource())
    node.receive(b"\r\n\r\n" + OPTIONS, UAC, 0.0)
    [(answer, _)] = node.outbox()
    assert answer.startswith(b"SIP/2.0 200 OK\r\n")
    assert node.stats.keepalives == 0


@pytest.mark.parametrize(
    "data",
    [
        # starts as STUN does, with SIP headers after it: it once got a SIP 400
        pytest.param(b"\x00\x01 sip:net-b.test SIP/2.0\r\n" + SIP_HEADERS, id="not-framed"),
        pytest.param(BINDING[:4] + b"\x21\x12\xa4\x43" + BINDING[8:], id="wrong-cookie"),
        pytest.param(BINDING[:3] + b"\x04" + BINDING[4:], id="wrong-length"),
        pytest.param(BINDING[:-1], id="short"),
        pytest.param(b"\x00\x11" + BINDING[2:], id="indication"),
        pytest.param(stun.encode(0x0101, TRANSACTION_ID, []), id="response"),
        pytest.param(
            stun.encode(0x0001, TRANSACTION_ID, [])[:-1] + b"\x00", id="wrong-fingerprint"
        ),
    ],
)
def test_stun_that_is_not_a_binding_request_is_dropped_silently(
    data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    node = Endpoint(ids=CountingIdSource())
    with caplog.at_level(logging.DEBUG):
        node.receive(data, UAC, 0.0)
    assert node.outbox() == []
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert node.stats.stun_dropped == 1
    assert (node.stats.malformed_answered, node.stats.stun_answered) == (0, 0)


def test_a_binding_request_over_tcp_is_not_answered_with_stun() -> None:
    """RFC 5626 keep-alives over streams are CRLFs (transport/stream.py); a STUN message on a
    stream is left to the SIP parser as before: dropped."""
    node = Endpoint(ids=CountingIdSource())
    node.receive(BINDING, TCP_UAC, 0.0)
    assert node.outbox() == []
    assert (node.stats.stun_answered, node.stats.dropped) == (0, 1)
