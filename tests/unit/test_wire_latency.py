"""benchmarks/wire_latency.py: frames and SIP fields decoded, requests paired with answers."""

from __future__ import annotations

import struct

import pytest

from benchmarks.wire_latency import Datagram, server_latencies, sip_fields, udp_payload

PUBLISH = (
    b"PUBLISH sip:p1@example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:16000;branch=z9hG4bK-1\r\n"
    b"i: 1-abc@127.0.0.1\r\n"
    b"CSeq: 1 PUBLISH\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def frame(source_port: int, destination_port: int, payload: bytes, protocol: int = 17) -> bytes:
    ethernet = b"\x00" * 12 + b"\x08\x00"
    total = 20 + 8 + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, protocol, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
    )
    udp = struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0)
    return ethernet + ip + udp + payload


def test_udp_payload_knows_the_direction_and_ignores_other_traffic() -> None:
    assert udp_payload(frame(16000, 15070, PUBLISH), 15070) == (True, PUBLISH)
    assert udp_payload(frame(15070, 16000, b"SIP/2.0 200 OK\r\n"), 15070) == (
        False,
        b"SIP/2.0 200 OK\r\n",
    )
    assert udp_payload(frame(16000, 15060, PUBLISH), 15070) is None
    assert udp_payload(frame(16000, 15070, PUBLISH, protocol=6), 15070) is None
    assert udp_payload(b"\x00" * 20, 15070) is None


def test_sip_fields_read_compact_call_id_and_stop_at_the_body() -> None:
    body = b"CSeq: 9 NOT-THIS\r\n"
    assert sip_fields(PUBLISH + body) == (
        b"PUBLISH sip:p1@example.test SIP/2.0",
        b"1-abc@127.0.0.1",
        b"1 PUBLISH",
    )


def answer(
    at: float, status: bytes, call_id: bytes = b"c1", cseq: bytes = b"1 PUBLISH"
) -> Datagram:
    return Datagram(at, False, b"SIP/2.0 " + status, call_id, cseq)


def request(at: float, call_id: bytes = b"c1", cseq: bytes = b"1 PUBLISH") -> Datagram:
    return Datagram(at, True, b"PUBLISH sip:p1@example.test SIP/2.0", call_id, cseq)


def test_latency_runs_from_the_first_copy_to_the_final_answer() -> None:
    seen = [
        request(10.000),
        request(10.500),  # a retransmission: the first copy counts
        answer(10.600, b"100 Trying"),  # provisional: not the answer
        request(10.700, call_id=b"c2"),
        answer(10.800, b"200 OK"),
        answer(10.900, b"200 OK"),  # the answer to the retransmission: already paired
        answer(10.950, b"403 Forbidden", call_id=b"c2"),
        answer(11.000, b"200 OK", call_id=b"unknown"),
        Datagram(11.100, False, b"NOTIFY sip:w@127.0.0.1:16000 SIP/2.0", b"c1", b"1 PUBLISH"),
    ]
    assert list(server_latencies(seen)) == [pytest.approx(0.8), pytest.approx(0.25)]
