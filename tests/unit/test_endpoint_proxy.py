"""The sans-IO endpoint as a proxy: forward, relay, fail over, time out; never an open relay."""

from __future__ import annotations

import logging

import pytest

from presence_sip.endpoint import Endpoint
from presence_sip.ids import CountingIdSource
from presence_sip.proxy.forward import LocalIdentity
from presence_sip.proxy.proxy import BRANCH_TIMEOUT, DOWN_FOR, Proxy
from presence_sip.proxy.routing import NextHop, RouteTable
from presence_sip.sip import parse_message
from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer

UAC = Peer("udp", "127.0.0.1", 5070)
GW1 = NextHop("udp", "127.0.2.2", 5060, priority=10)
GW2 = NextHop("udp", "127.0.2.3", 5060, priority=20)


def make_proxy() -> Endpoint:
    endpoint = Endpoint(ids=CountingIdSource())
    endpoint.addresses["udp"] = ("127.0.1.2", 5060)
    identity = LocalIdentity(frozenset({"net-a.test"}), frozenset({("127.0.1.2", 5060)}))
    endpoint.router = Proxy(endpoint, identity, RouteTable({"net-b.test": (GW1, GW2)}))
    return endpoint


def subscribe(uri: str = "sip:+447700900123@net-b.test", extra: str = "") -> bytes:
    return (
        f"SUBSCRIBE {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-w1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+447700900001@net-a.test>;tag=f1\r\n"
        "To: <sip:+447700900123@net-b.test>\r\n"
        "Call-ID: sub1@127.0.0.1\r\n"
        "CSeq: 1 SUBSCRIBE\r\n"
        "Contact: <sip:+447700900001@127.0.0.1:5070>\r\n"
        f"{extra}"
        "Event: presence\r\n"
        "Expires: 600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sent(endpoint: Endpoint) -> list[tuple[Request | Response, Peer]]:
    return [(parse_message(data), peer) for data, peer in endpoint.outbox()]


def answer(forwarded: Request, status: int, reason: str = "OK") -> bytes:
    headers = "".join(
        f"{name}: {value}\r\n"
        for name, value in forwarded.headers
        if name in ("Via", "From", "Call-ID", "CSeq")
    )
    return (
        f"SIP/2.0 {status} {reason}\r\n{headers}"
        f"To: {forwarded.headers.get('To')};tag=ps1\r\n"
        "Contact: <sip:ps@127.0.2.11>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_forwards_with_via_record_route_and_relays_the_answer() -> None:
    proxy = make_proxy()
    proxy.receive(subscribe(), UAC, 0.0)
    [(forwarded, peer)] = sent(proxy)
    assert isinstance(forwarded, Request)
    assert peer == GW1.peer
    assert forwarded.uri == "sip:+447700900123@net-b.test"
    assert forwarded.top_via.host == "127.0.1.2"
    assert forwarded.top_via.branch is not None
    assert forwarded.top_via.branch.startswith("z9hG4bK")
    assert forwarded.max_forwards == 69
    assert forwarded.headers.get("Record-Route") == "<sip:127.0.1.2:5060;transport=udp;lr>"
    proxy.receive(answer(forwarded, 200), GW1.peer, 0.1)
    [(relayed, to)] = sent(proxy)
    assert isinstance(relayed, Response)
    assert relayed.status == 200
    assert to == UAC
    assert [str(v) for v in relayed.vias] == [
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-w1;rport=5070;received=127.0.0.1"
    ]


def failed_over_by_a_503(proxy: Endpoint) -> tuple[Request, Request]:
    """A SUBSCRIBE forwarded to the first record, answered 503 there, so sent to the second:
    the two requests forwarded."""
    proxy.receive(subscribe(), UAC, 0.0)
    [(first, _)] = sent(proxy)
    assert isinstance(first, Request)
    proxy.receive(answer(first, 503, "Service Unavailable"), GW1.peer, 0.1)
    [(second, peer)] = sent(proxy)
    assert peer == GW2.peer
    assert isinstance(second, Request)
    return first, second


def test_503_fails_over_to_the_next_record() -> None:
    first, second = failed_over_by_a_503(make_proxy())
    assert second.top_via.branch != first.top_via.branch


def test_a_503_from_the_last_record_goes_upstream_as_500() -> None:
    """RFC 3261 §16.7 step 6: a proxy does not forward a 503 (it would say this proxy is
    unavailable, for every domain); the only answer being a 503, the client gets a 500.
    Seen with Kamailio presence servers behind the node: both records 503, the watcher got 503
    where a Kamailio proxy in the same place answers 500."""
    proxy = make_proxy()
    _, second = failed_over_by_a_503(proxy)
    proxy.receive(answer(second, 503, "Service Unavailable"), GW2.peer, 0.2)
    [(relayed, to)] = sent(proxy)
    assert isinstance(relayed, Response)
    assert to == UAC
    assert (relayed.status, relayed.reason) == (500, "Server Internal Error")
    assert relayed.to.tag == "ps1"
    assert [v.branch for v in relayed.vias] == ["z9hG4bK-w1"]


def test_no_answer_from_any_hop_sends_nothing_upstream_and_absorbs_retransmissions() -> None:
    """RFC 4320 §4.2: no 408 to a non-INVITE request; the transaction still absorbs the
    client's retransmissions (a late one is not forwarded again) and then ends."""
    proxy = make_proxy()
    proxy.receive(subscribe(), UAC, 0.0)
    now = 0.0
    upstream: list[Request | Response] = []
    forwarded = 0
    while now < BRANCH_TIMEOUT + 32.0:  # the first record's wait, then the last's Timer F
        timer = proxy.get_timer()
        assert timer is not None
        now = timer
        proxy.handle_timer(now)
        for message, peer in sent(proxy):
            if peer == UAC:
                upstream.append(message)
            elif message.top_via.host == "127.0.1.2" and isinstance(message, Request):
                forwarded += 1
    assert upstream == []
    assert proxy.transactions.stats["abandoned"] == 1
    before = forwarded
    proxy.receive(subscribe(), UAC, now + 1.0)  # a retransmission after the give-up
    assert sent(proxy) == []
    assert proxy.transactions.stats["requests_absorbed"] >= 1
    assert forwarded == before
    proxy.handle_timer(now + 40.0)  # Timer J: the record ends
    proxy.receive(subscribe(), UAC, now + 41.0)  # now a new request, forwarded again
    [(again, peer)] = sent(proxy)
    assert isinstance(again, Request)
    assert peer == GW1.peer


def test_foreign_domain_without_route_is_refused_and_not_forwarded() -> None:
    proxy = make_proxy()
    proxy.receive(subscribe("sip:someone@elsewhere.test"), UAC, 0.0)
    [(response, peer)] = sent(proxy)
    assert isinstance(response, Response)
    assert (response.status, response.reason, peer) == (403, "Relaying denied", UAC)


def test_max_forwards_zero_gets_483() -> None:
    proxy = make_proxy()
    proxy.receive(subscribe().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), UAC, 0.0)
    [(response, _)] = sent(proxy)
    assert isinstance(response, Response)
    assert response.status == 483


def in_dialog_notify(
    target: str = "sip:+447700900001@127.0.0.1:5070",
    *,
    branch: str = "z9hG4bK-n1",
    call_id: str = "sub1@127.0.0.1",
    cseq: int = 2,
) -> bytes:
    """A NOTIFY from the presence server behind us, following our Record-Route."""
    return (
        f"NOTIFY {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.2.11:5060;branch={branch}\r\n"
        "Route: <sip:127.0.1.2:5060;transport=udp;lr>\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+447700900123@net-b.test>;tag=ps1\r\n"
        "To: <sip:+447700900001@net-a.test>;tag=f1\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\nEvent: presence\r\n"
        "Subscription-State: active;expires=600\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_in_dialog_request_following_our_record_route_is_forwarded_to_its_target() -> None:
    proxy = make_proxy()
    notify = in_dialog_notify()
    proxy.receive(notify, Peer("udp", "127.0.2.11", 5060), 0.0)
    [(forwarded, peer)] = sent(proxy)
    assert isinstance(forwarded, Request)
    assert peer == UAC
    assert forwarded.headers.get("Route") is None


def test_a_preloaded_route_naming_us_does_not_open_a_relay() -> None:
    """An initial request whose Route names us, for a target no configured route covers, is
    refused (it used to be relayed to any IP address: an open relay and a reflector)."""
    for extra, uri in (
        ("Route: <sip:127.0.1.2:5060;lr>\r\n", "sip:victim@127.0.9.9:5099"),
        ("Route: <sip:net-a.test;lr>\r\n", "sip:victim@127.0.9.9:5099"),
        ("Route: <sip:127.0.1.2:5060;lr>, <sip:127.0.9.9:5099;lr>\r\n", "sip:x@net-a.test"),
    ):
        proxy = make_proxy()
        proxy.receive(subscribe(uri, extra=extra), UAC, 0.0)
        [(response, peer)] = sent(proxy)
        assert isinstance(response, Response)
        assert (response.status, response.reason, peer) == (403, "Relaying denied", UAC)


def test_a_preloaded_route_to_a_configured_domain_is_forwarded() -> None:
    """An outbound-proxy style Route naming us, for a domain we have a route to: forwarded."""
    proxy = make_proxy()
    proxy.receive(subscribe(extra="Route: <sip:127.0.1.2:5060;lr>\r\n"), UAC, 0.0)
    [(forwarded, peer)] = sent(proxy)
    assert isinstance(forwarded, Request)
    assert (peer.host, peer.port) == ("127.0.2.2", 5060)


def test_unknown_proxy_require_is_420_and_not_forwarded() -> None:
    proxy = make_proxy()
    proxy.receive(subscribe(extra="Proxy-Require: foo, bar\r\n"), UAC, 0.0)
    [(response, _)] = sent(proxy)
    assert isinstance(response, Response)
    assert (response.status, response.headers.get("Unsupported")) == (420, "foo, bar")


def test_an_invite_to_forward_is_405_and_its_transaction_ends() -> None:
    """No INVITE client transaction: the INVITE gets 405 (it got no answer, and its server
    transaction stayed in the table for ever)."""
    proxy = make_proxy()
    invite = subscribe().replace(b"SUBSCRIBE", b"INVITE").replace(b"Event: presence\r\n", b"")
    proxy.receive(invite, UAC, 0.0)
    [(response, _)] = sent(proxy)
    assert isinstance(response, Response)
    assert response.status == 405
    assert "INVITE" not in (response.headers.get("Allow") or "INVITE")
    proxy.handle_timer(40.0)  # past Timer H (32 s): the unacknowledged 405 gives up
    assert len(proxy.transactions) == 0


def test_a_handler_that_fails_still_answers_500_and_frees_its_transaction() -> None:
    """A fault of ours must not leave a request unanswered (nor its transaction in the table)."""
    endpoint = Endpoint(ids=CountingIdSource())

    def broken(incoming: object, now: float) -> Response:
        raise RuntimeError("a bug")

    endpoint.register("SUBSCRIBE", broken)
    endpoint.receive(subscribe("sip:+447700900123@127.0.1.2"), UAC, 0.0)
    [(response, peer)] = sent(endpoint)
    assert isinstance(response, Response)
    assert (response.status, peer) == (500, UAC)
    endpoint.handle_timer(40.0)  # past Timer J
    assert len(endpoint.transactions) == 0


def large_publish() -> bytes:
    body = b"<presence/>" + b" " * 1500
    return (
        "PUBLISH sip:+447700900123@net-b.test SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-p1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+447700900123@net-b.test>;tag=f1\r\n"
        "To: <sip:+447700900123@net-b.test>\r\n"
        "Call-ID: pub1@127.0.0.1\r\n"
        "CSeq: 1 PUBLISH\r\n"
        "Event: presence\r\n"
        "Expires: 600\r\n"
        "Content-Type: application/pidf+xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_a_forwarded_request_over_1300_bytes_goes_over_tcp_then_udp_if_refused() -> None:
    """RFC 3261 §18.1.1 on a UDP route: TCP to the same next hop first; a refused connection
    sends it over UDP to that hop (not a failover to the next record)."""
    proxy = make_proxy()
    proxy.transactions.move_large_requests(1300, frozenset({("127.0.1.2", 5060)}))
    proxy.receive(large_publish(), UAC, 0.0)
    [(over_tcp, peer)] = sent(proxy)
    assert isinstance(over_tcp, Request)
    assert peer == Peer("tcp", GW1.host, GW1.port)
    assert over_tcp.top_via.transport == "TCP"
    proxy.connection_lost(Peer("tcp", GW1.host, GW1.port, 3), 0.01)
    [(over_udp, peer)] = sent(proxy)
    assert isinstance(over_udp, Request)
    assert peer == GW1.peer
    assert over_udp.top_via.transport == "UDP"
    assert over_udp.top_via.branch == over_tcp.top_via.branch
    assert over_udp.body == over_tcp.body
    proxy.receive(answer(over_udp, 200), GW1.peer, 0.1)
    [(relayed, to)] = sent(proxy)
    assert isinstance(relayed, Response)
    assert relayed.status == 200
    assert to == UAC


def test_a_proxy_on_ipv6_writes_its_via_and_record_route_in_brackets() -> None:
    endpoint = Endpoint(ids=CountingIdSource())
    endpoint.addresses["udp"] = ("::1", 5060)
    identity = LocalIdentity(frozenset({"net-a.test"}), frozenset({("::1", 5060)}))
    endpoint.router = Proxy(endpoint, identity, RouteTable({"net-b.test": (GW1, GW2)}))
    endpoint.receive(subscribe(), UAC, 0.0)
    [(forwarded, _)] = sent(endpoint)
    assert isinstance(forwarded, Request)
    assert str(forwarded.top_via).startswith("SIP/2.0/UDP [::1]:5060;branch=z9hG4bK")
    assert forwarded.headers.get("Record-Route") == "<sip:[::1]:5060;transport=udp;lr>"


def run_to(proxy: Endpoint, end: float) -> list[tuple[Request | Response, Peer]]:
    """Fire every timer up to ``end``; what was sent on the way."""
    out: list[tuple[Request | Response, Peer]] = []
    while (timer := proxy.get_timer()) is not None and timer <= end:
        proxy.handle_timer(timer)
        out += sent(proxy)
    return out


def test_a_silent_udp_record_fails_over_after_the_branch_timeout_not_timer_f() -> None:
    """Over UDP a dead next hop answers nothing: waiting its 32 s Timer F outlasted the
    client's own (Kamailio audit: the 200 came after 32 s). The next record is tried after
    BRANCH_TIMEOUT, well within the client's retransmissions."""
    proxy = make_proxy()
    proxy.receive(subscribe(), UAC, 0.0)
    [(first, peer)] = sent(proxy)
    assert peer == GW1.peer
    resent = run_to(proxy, BRANCH_TIMEOUT - 0.01)
    assert {p for _, p in resent} == {GW1.peer}  # Timer E retransmissions to the first record
    failover = run_to(proxy, BRANCH_TIMEOUT)
    [(second, peer)] = [(m, p) for m, p in failover if p == GW2.peer]
    assert isinstance(second, Request)
    assert isinstance(first, Request)
    assert second.top_via.branch != first.top_via.branch
    proxy.receive(answer(second, 200), GW2.peer, BRANCH_TIMEOUT + 0.1)
    [(relayed, to)] = sent(proxy)
    assert isinstance(relayed, Response)
    assert (relayed.status, to) == (200, UAC)
    assert run_to(proxy, BRANCH_TIMEOUT + 0.5) == []  # nothing more to the first record


def test_a_record_that_timed_out_is_tried_last_for_a_while() -> None:
    proxy = make_proxy()
    proxy.receive(subscribe(), UAC, 0.0)
    sent(proxy)
    run_to(proxy, BRANCH_TIMEOUT)  # the first record timed out: down now
    later = BRANCH_TIMEOUT + 1.0
    proxy.receive(subscribe().replace(b"sub1@", b"sub2@").replace(b"-w1", b"-w2"), UAC, later)
    [(_, peer)] = sent(proxy)
    assert peer == GW2.peer  # the live record first
    proxy.handle_timer(later)
    # Once DOWN_FOR has passed, the configured order again
    again = BRANCH_TIMEOUT + DOWN_FOR + 1.0
    proxy.receive(subscribe().replace(b"sub1@", b"sub3@").replace(b"-w1", b"-w3"), UAC, again)
    third = [p for m, p in sent(proxy) if isinstance(m, Request) and m.call_id.startswith("sub3")]
    assert third == [GW1.peer]


def test_records_of_a_transport_the_node_does_not_listen_on_are_skipped() -> None:
    endpoint = Endpoint(ids=CountingIdSource())
    endpoint.addresses["udp"] = ("127.0.1.2", 5060)
    identity = LocalIdentity(frozenset({"net-a.test"}), frozenset({("127.0.1.2", 5060)}))
    tls_first = NextHop("tls", "127.0.2.9", 5061, priority=1)
    endpoint.router = Proxy(endpoint, identity, RouteTable({"net-b.test": (tls_first, GW1)}))
    endpoint.receive(subscribe(), UAC, 0.0)
    assert [p for _, p in sent(endpoint)] == [GW1.peer]
    only_tls = Endpoint(ids=CountingIdSource())
    only_tls.addresses["udp"] = ("127.0.1.2", 5060)
    only_tls.router = Proxy(only_tls, identity, RouteTable({"net-b.test": (tls_first,)}))
    only_tls.receive(subscribe(), UAC, 0.0)
    [(refused, to)] = sent(only_tls)
    assert isinstance(refused, Response)
    assert (refused.status, refused.reason, to) == (500, "No transport to next hop", UAC)


def test_failed_forwarding_is_a_warning_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While every next hop is down each forwarded request fails: one line per request was a
    flood (both records refusing under 330 requests/s); now a warning a minute, counted."""
    endpoint = Endpoint(ids=CountingIdSource())
    endpoint.addresses["udp"] = ("127.0.1.2", 5060)
    identity = LocalIdentity(frozenset({"net-a.test"}), frozenset({("127.0.1.2", 5060)}))
    only_tls = NextHop("tls", "127.0.2.9", 5061)
    endpoint.router = Proxy(endpoint, identity, RouteTable({"net-b.test": (only_tls,)}))

    def fail(n: int, now: float) -> None:
        request = (
            subscribe().replace(b"sub1@", f"sub{n}@".encode()).replace(b"-w1", f"-w{n}".encode())
        )
        endpoint.receive(request, UAC, now)
        [(refused, _)] = sent(endpoint)
        assert isinstance(refused, Response)
        assert refused.status == 500

    with caplog.at_level(logging.INFO, logger="presence_sip.proxy.proxy"):
        for n in range(1, 4):
            fail(n, n * 0.1)
        fail(4, 61.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "forwarding SUBSCRIBE to its next hops failed: 500 No transport to next hop "
        "(1 forwarded requests failed so far)",
        "forwarding SUBSCRIBE to its next hops failed: 500 No transport to next hop "
        "(4 forwarded requests failed so far)",
    ]
    assert {r.levelno for r in caplog.records} == {logging.WARNING}


def test_double_record_route_when_the_transport_changes() -> None:
    """RFC 5658: a SUBSCRIBE from a UDP phone forwarded over TLS carries two Record-Routes, the
    TLS one on top (the far side's way back to us) and the UDP one (the phone's); the NOTIFY
    coming back over TLS with both as Route is forwarded to the phone over UDP (Kamailio audit:
    with one Record-Route the phone was told to reach us over the next hop's transport)."""
    endpoint = Endpoint(ids=CountingIdSource())
    endpoint.addresses["udp"] = ("127.0.1.2", 5060)
    endpoint.addresses["tls"] = ("127.0.1.2", 5061)
    identity = LocalIdentity(
        frozenset({"net-a.test"}), frozenset({("127.0.1.2", 5060), ("127.0.1.2", 5061)})
    )
    gateway = NextHop("tls", "127.0.2.2", 5061)
    endpoint.router = Proxy(endpoint, identity, RouteTable({"net-b.test": (gateway,)}))
    endpoint.receive(subscribe(), UAC, 0.0)
    [(forwarded, peer)] = sent(endpoint)
    assert isinstance(forwarded, Request)
    assert peer == gateway.peer
    assert forwarded.headers.get_all("Record-Route") == [
        "<sip:127.0.1.2:5061;transport=tls;lr>, <sip:127.0.1.2:5060;transport=udp;lr>"
    ]
    notify = (
        b"NOTIFY sip:+447700900001@127.0.0.1:5070 SIP/2.0\r\n"
        b"Via: SIP/2.0/TLS 127.0.2.2:5061;branch=z9hG4bK-n1\r\n"
        b"Route: <sip:127.0.1.2:5061;transport=tls;lr>, <sip:127.0.1.2:5060;transport=udp;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:+447700900123@net-b.test>;tag=ps1\r\n"
        b"To: <sip:+447700900001@net-a.test>;tag=f1\r\n"
        b"Call-ID: sub1@127.0.0.1\r\nCSeq: 1 NOTIFY\r\nEvent: presence\r\n"
        b"Subscription-State: active;expires=600\r\nContent-Length: 0\r\n\r\n"
    )
    endpoint.receive(notify, Peer("tls", "127.0.2.2", 5061, 7), 0.2)
    [(relayed, to)] = sent(endpoint)
    assert isinstance(relayed, Request)
    assert to == UAC
    assert relayed.headers.get("Route") is None
    assert relayed.top_via.transport == "UDP"


def test_one_record_route_when_the_transport_stays() -> None:
    proxy = make_proxy()
    proxy.receive(subscribe(), UAC, 0.0)
    [(forwarded, _)] = sent(proxy)
    assert isinstance(forwarded, Request)
    assert forwarded.headers.get_all("Record-Route") == ["<sip:127.0.1.2:5060;transport=udp;lr>"]


def test_an_in_dialog_target_that_fails_is_not_marked_down() -> None:
    """Only a domain's route records are tried last after a failure: a watcher's Contact that
    went away must not fill the table (and push out the records' marks)."""
    proxy = make_proxy()
    notify = in_dialog_notify("sip:w@127.0.0.9:5099", branch="z9hG4bK-n9", call_id="n9@127.0.0.1")
    proxy.receive(notify, GW1.peer, 0.0)
    [(_, peer)] = sent(proxy)
    assert peer == Peer("udp", "127.0.0.9", 5099)
    run_to(proxy, 40.0)  # no answer: Timer F
    router = proxy.router
    assert isinstance(router, Proxy)
    assert router._down == {}


def test_an_answer_with_only_our_via_ends_the_server_transaction_with_502() -> None:
    """A next hop that copies only the top Via into its answer (seen with a SIPp watcher's 200
    to a relayed NOTIFY): the answer cannot be relayed (RFC 3261 §16.7 step 3), but the server
    transaction must still end; it used to stay in the table for good (96,000 of them after
    4 minutes of SUBSCRIBE/NOTIFY cycles through the proxy)."""
    proxy = make_proxy()
    notify = in_dialog_notify()
    notifier = Peer("udp", "127.0.2.11", 5060)
    proxy.receive(notify, notifier, 0.0)
    [(forwarded, peer)] = sent(proxy)
    assert isinstance(forwarded, Request)
    assert peer == UAC
    only_ours = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {forwarded.headers.get('Via')}\r\n"
        "From: <sip:+447700900123@net-b.test>;tag=ps1\r\n"
        "To: <sip:+447700900001@net-a.test>;tag=f1\r\n"
        "Call-ID: sub1@127.0.0.1\r\nCSeq: 2 NOTIFY\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    proxy.receive(only_ours, UAC, 0.1)
    [(answer_, to)] = sent(proxy)
    assert isinstance(answer_, Response)
    assert (answer_.status, to) == (502, notifier)
    proxy.handle_timer(40.0)  # past Timer J and Timer K
    assert len(proxy.transactions) == 0


def test_an_in_dialog_request_that_times_out_gets_no_408_upstream() -> None:
    """RFC 4320 §4.2 for in-dialog requests too: the 408 the endpoint makes for the timeout
    carries the request's own To-tag, so "no To-tag" could not tell it was ours (forward-soak
    audit: thousands of late 408s relayed back to the notifier)."""
    proxy = make_proxy()
    notify = in_dialog_notify(
        "sip:w@127.0.0.9:5099", branch="z9hG4bK-n10", call_id="n10@127.0.0.1", cseq=3
    )
    notifier = Peer("udp", "127.0.2.11", 5060)
    proxy.receive(notify, notifier, 0.0)
    sent(proxy)
    upstream = [m for m, p in run_to(proxy, 33.0) if p == notifier]
    assert upstream == []
    assert proxy.transactions.stats["abandoned"] == 1
