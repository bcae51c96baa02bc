"""RFC 3261 §16 pieces: route processing, loop detection, the forwarded copy, next-hop choice."""

from __future__ import annotations

from presence_sip.proxy.forward import (
    LocalIdentity,
    forwarded_copy,
    is_loop,
    loop_hash,
    next_hop_uri,
    process_routes,
    relayed_response,
    strict_router_fixup,
)
from presence_sip.proxy.routing import NextHop, RouteTable, uri_peer
from presence_sip.sip import parse_message, parse_uri, to_bytes
from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer

ME = LocalIdentity(frozenset({"net-b.test"}), frozenset({("127.0.2.2", 5061), ("127.0.2.2", 5060)}))


def request(extra: str = "", uri: str = "sip:+447700900123@net-b.test", via: str = "") -> Request:
    text = (
        f"SUBSCRIBE {uri} SIP/2.0\r\n"
        f"{via}"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-a1\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+447700900001@net-a.test>;tag=f1\r\n"
        "To: <sip:+447700900123@net-b.test>\r\n"
        "Call-ID: c1@127.0.0.1\r\n"
        "CSeq: 1 SUBSCRIBE\r\n"
        f"{extra}"
        "Event: presence\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def test_our_loose_route_is_popped() -> None:
    req = request("Route: <sip:127.0.2.2:5060;lr>, <sip:127.0.2.11;lr>\r\n")
    assert process_routes(req, ME) is True
    assert req.headers.values("Route") == ["<sip:127.0.2.11;lr>"]
    assert next_hop_uri(req) == "sip:127.0.2.11;lr"


def test_foreign_route_is_kept() -> None:
    req = request("Route: <sip:127.0.9.9;lr>\r\n")
    assert process_routes(req, ME) is False
    assert req.headers.values("Route") == ["<sip:127.0.9.9;lr>"]


def test_strict_router_previous_hop_restores_request_uri() -> None:
    # A strict router put our Record-Route URI in the Request-URI and the target in the last Route.
    req = request("Route: <sip:+447700900123@127.0.2.11>\r\n", uri="sip:127.0.2.2:5060;lr")
    assert process_routes(req, ME) is True
    assert req.uri == "sip:+447700900123@127.0.2.11"
    assert req.headers.get("Route") is None


def test_strict_router_previous_hop_with_our_double_record_route() -> None:
    # RFC 5658: a strict router put the first of our two Record-Route URIs in the Request-URI;
    # the second, ours too, is the top Route now: removed as well, not forwarded to ourselves.
    req = request(
        "Route: <sip:127.0.2.2:5060;transport=udp;lr>, <sip:+447700900123@127.0.2.11>\r\n",
        uri="sip:127.0.2.2:5061;transport=tls;lr",
    )
    assert process_routes(req, ME) is True
    assert req.uri == "sip:+447700900123@127.0.2.11"
    assert req.headers.get("Route") is None


def test_strict_router_next_hop_takes_the_request_uri_place() -> None:
    req = request("Route: <sip:127.0.2.11>, <sip:127.0.2.12;lr>\r\n")
    strict_router_fixup(req)
    assert req.uri == "sip:127.0.2.11"
    assert req.headers.values("Route") == ["<sip:127.0.2.12;lr>", "<sip:+447700900123@net-b.test>"]


def test_forwarded_copy_pushes_via_decrements_max_forwards_and_record_routes() -> None:
    req = request()
    out = forwarded_copy(
        req,
        target="sip:+447700900123@127.0.2.11",
        via="SIP/2.0/UDP 127.0.2.2:5060;branch=z9hG4bKx.1",
        record_route="<sip:127.0.2.2:5060;transport=udp;lr>",
    )
    wire = to_bytes(out)
    assert wire.startswith(
        b"SUBSCRIBE sip:+447700900123@127.0.2.11 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.2.2:5060;branch=z9hG4bKx.1\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-a1\r\n"
        b"Max-Forwards: 69\r\n"
    )
    assert out.headers.get("Record-Route") == "<sip:127.0.2.2:5060;transport=udp;lr>"
    assert req.headers.get("Max-Forwards") == "70"  # the original is untouched


def test_loop_detected_only_for_the_same_request_not_a_spiral() -> None:
    req = request()
    ours = f"Via: SIP/2.0/UDP 127.0.2.2:5060;branch=z9hG4bKx.{loop_hash(req)}\r\n"
    looped = request(via=ours)
    assert is_loop(looped, ME)
    spiral = request(via=ours, uri="sip:+447700900123@127.0.2.11")
    assert not is_loop(spiral, ME)


def test_loop_detected_through_an_ipv6_via() -> None:
    # Our Via writes an IPv6 address as a reference ([::1], sip.uri.hostport); the identity
    # holds it bare.
    me6 = LocalIdentity(frozenset({"net-b.test"}), frozenset({("::1", 5060)}))
    req = request()
    ours = f"Via: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKx.{loop_hash(req)}\r\n"
    assert is_loop(request(via=ours), me6)
    assert not is_loop(request(via=ours, uri="sip:+447700900123@127.0.2.11"), me6)


def test_relayed_response_drops_our_via_only() -> None:
    text = (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 127.0.2.2:5060;branch=z9hG4bKx.1\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-a1\r\n"
        "From: <sip:a@net-a.test>;tag=f1\r\nTo: <sip:b@net-b.test>;tag=t1\r\n"
        "Call-ID: c1\r\nCSeq: 1 SUBSCRIBE\r\nContent-Length: 0\r\n\r\n"
    )
    response = parse_message(text.encode())
    assert isinstance(response, Response)
    relayed = relayed_response(response)
    assert relayed is not None
    assert relayed.headers.get_all("Via") == ["SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-a1"]
    only_ours = parse_message(
        text.replace("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-a1\r\n", "").encode()
    )
    assert isinstance(only_ours, Response)
    assert relayed_response(only_ours) is None


def test_route_table_orders_by_priority_then_weight() -> None:
    table = RouteTable(
        {
            "net-b.test": (
                NextHop("tls", "127.0.2.3", 5061, priority=20, weight=1),
                NextHop("tls", "127.0.2.2", 5061, priority=10, weight=1),
                NextHop("tls", "127.0.2.4", 5061, priority=10, weight=5),
            )
        }
    )
    assert [h.host for h in table.hops("NET-B.test")] == ["127.0.2.4", "127.0.2.2", "127.0.2.3"]
    # injected randomness: pick the first record of the priority-10 pair by its running weight
    assert next(h.host for h in table.hops("net-b.test", choose=lambda total: 1)) == "127.0.2.2"
    assert table.hops("unknown.test") == []


def test_uri_peer_needs_an_ip_and_never_resolves_names() -> None:
    assert uri_peer(parse_uri("sip:a@127.0.0.1:5090;transport=tcp")) == Peer(
        "tcp", "127.0.0.1", 5090
    )
    assert uri_peer(parse_uri("sips:a@127.0.0.1")) == Peer("tls", "127.0.0.1", 5061)
    assert uri_peer(parse_uri("sip:a@example.com")) is None
    assert uri_peer(parse_uri("sip:a@127.0.0.1;transport=sctp")) is None
