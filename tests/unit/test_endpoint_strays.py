"""Stray responses (RFC 3261 §18.1.2, §17.1.3: they match no client transaction, and are
dropped) are reported to the flood guard; a response that matches a transaction never is.

``Endpoint.report_stray`` is what the node points at the driver's flood guard."""

from __future__ import annotations

from presence_sip.endpoint import Endpoint
from presence_sip.ids import CountingIdSource
from presence_sip.sip import Request, Response, parse_message
from presence_sip.sip.peer import Peer

WATCHER = Peer("udp", "198.51.100.7", 5070)
WATCHER_TCP = Peer("tcp", "198.51.100.7", 40123, 9)


def notify(branch: str) -> Request:
    request = parse_message(
        "NOTIFY sip:watcher@198.51.100.7:5070 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 203.0.113.1:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+447700900123@net-b.test>;tag=ps1\r\n"
        "To: <sip:watcher@net-b.test>;tag=w1\r\n"
        "Call-ID: sub-1@198.51.100.7\r\n"
        "CSeq: 7 NOTIFY\r\n"
        "Event: presence\r\n"
        "Subscription-State: active;expires=600\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(request, Request)
    return request


def ok(branch: str, status: str = "200 OK") -> bytes:
    return (
        f"SIP/2.0 {status}\r\n"
        f"Via: SIP/2.0/UDP 203.0.113.1:5060;branch={branch}\r\n"
        "From: <sip:+447700900123@net-b.test>;tag=ps1\r\n"
        "To: <sip:watcher@net-b.test>;tag=w1\r\n"
        "Call-ID: sub-1@198.51.100.7\r\n"
        "CSeq: 7 NOTIFY\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def reporting_endpoint() -> tuple[Endpoint, list[tuple[Peer, float]]]:
    node = Endpoint(ids=CountingIdSource())
    reported: list[tuple[Peer, float]] = []
    node.report_stray = lambda source, now: reported.append((source, now))
    return node, reported


def test_answers_to_our_notifies_are_never_reported() -> None:
    node, reported = reporting_endpoint()
    finals: list[int | None] = []

    def final(response: Response | None, now: float) -> None:
        finals.append(None if response is None else response.status)

    for n in range(50):  # a watcher answering a burst of NOTIFYs
        node.send_request(notify(f"z9hG4bK-n{n}"), WATCHER, 0.0, final)
    node.outbox()
    for n in range(50):
        node.receive(ok(f"z9hG4bK-n{n}", "100 Trying"), WATCHER, 0.01)
        node.receive(ok(f"z9hG4bK-n{n}"), WATCHER, 0.02)
        node.receive(ok(f"z9hG4bK-n{n}"), WATCHER, 0.5)  # a retransmission: absorbed (Timer K)
    assert finals == [200] * 50
    assert reported == []
    assert node.transactions.stats["responses_absorbed"] == 50


def test_a_response_that_matches_no_transaction_is_reported_and_dropped() -> None:
    node, reported = reporting_endpoint()
    node.send_request(notify("z9hG4bK-ours"), WATCHER, 0.0)
    node.outbox()
    node.receive(ok("z9hG4bK-not-ours"), WATCHER, 1.0)
    node.receive(ok("z9hG4bK-ours", "200 OK"), WATCHER_TCP, 1.5)  # (matches: not reported)
    node.handle_timer(7.0)  # Timer K (T4, 5 s) has ended the Completed transaction
    node.receive(ok("z9hG4bK-ours"), WATCHER_TCP, 40.0)  # so this one matches nothing
    assert reported == [(WATCHER, 1.0), (WATCHER_TCP, 40.0)]
    assert node.outbox() == []  # never answered
    assert node.stats.dropped == 2


def test_responses_that_cannot_be_parsed_are_reported_requests_never() -> None:
    """The guard lets what begins ``SIP/`` through uncounted: when it is no response the
    parser takes, it is counted here (bad requests were counted before they were parsed)."""
    node, reported = reporting_endpoint()
    node.receive(b"SIP/2.0 200 OK\r\n\r\n", WATCHER, 1.0)  # no Via
    node.receive(ok("z9hG4bK-x").replace(b"CSeq: 7", b"CSeq: x"), WATCHER, 2.0)
    node.receive(b"SIP/2.0 \xff\r\n\r\n", WATCHER_TCP, 3.0)
    node.receive(b"OPTIONS sip:x SIP/2.0\r\n\r\n", WATCHER, 4.0)  # a bad request: not here
    options = (
        b"OPTIONS sip:net-b.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKo\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:a@net-b.test>;tag=1\r\nTo: <sip:net-b.test>\r\n"
        b"Call-ID: o-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    node.receive(options, WATCHER, 5.0)
    assert reported == [(WATCHER, 1.0), (WATCHER, 2.0), (WATCHER_TCP, 3.0)]
    assert [data.split(b"\r\n", 1)[0] for data, _ in node.outbox()] == [b"SIP/2.0 200 OK"]


def test_without_the_flood_guard_strays_are_dropped_all_the_same() -> None:
    node = Endpoint(ids=CountingIdSource())
    node.receive(ok("z9hG4bK-not-ours"), WATCHER, 1.0)
    node.receive(b"SIP/2.0 200 OK\r\n\r\n", WATCHER, 1.0)
    assert node.outbox() == []
    assert node.stats.dropped == 2
