"""The endpoint while changes cannot be stored: no 200 that would never be kept."""

from __future__ import annotations

from presence_sip.endpoint import Endpoint, Incoming
from presence_sip.ids import CountingIdSource
from presence_sip.sip import make_response, parse_message
from presence_sip.sip.message import Response
from presence_sip.sip.peer import Peer

UAC = Peer("udp", "127.0.0.1", 5070)


def request(method: str, n: int) -> bytes:
    return (
        f"{method} sip:example.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-s{n}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+447700900001@example.test>;tag=f1\r\n"
        "To: <sip:+447700900001@example.test>\r\n"
        f"Call-ID: s{n}@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answers(endpoint: Endpoint) -> list[Response]:
    found = [parse_message(data) for data, _ in endpoint.outbox()]
    return [m for m in found if isinstance(m, Response)]


def test_storing_requests_get_503_while_the_store_fails_others_are_served() -> None:
    endpoint = Endpoint(ids=CountingIdSource())
    handled: list[str] = []

    def handle(incoming: Incoming, now: float) -> Response:
        handled.append(incoming.request.method)
        return make_response(incoming.request, 200)

    endpoint.register("REGISTER", handle)
    endpoint.register("MESSAGE", handle)
    failing = [True]
    endpoint.cannot_store = lambda now: failing[0]
    endpoint.receive(request("REGISTER", 1), UAC, 0.0)
    (refused,) = answers(endpoint)
    assert (refused.status, refused.reason) == (503, "Storage unavailable")
    assert refused.headers.get("Retry-After") == "30"
    endpoint.receive(request("OPTIONS", 2), UAC, 0.0)
    endpoint.receive(request("MESSAGE", 3), UAC, 0.0)
    assert [r.status for r in answers(endpoint)] == [200, 200]
    assert handled == ["MESSAGE"]
    failing[0] = False
    endpoint.receive(request("REGISTER", 4), UAC, 1.0)
    assert [r.status for r in answers(endpoint)] == [200]
    assert handled == ["MESSAGE", "REGISTER"]
