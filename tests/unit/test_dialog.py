"""RFC 3261 §12 UAS dialogs: creation, loose/strict routing, CSeq, target refresh, next hop."""

from __future__ import annotations

import pytest

from presence_sip.dialog import Dialog, DialogError, next_hop_peer
from presence_sip.dialog.dialog import MAX_CSEQ
from presence_sip.sip import Request, parse_message, parse_uri, to_bytes
from presence_sip.sip.peer import Peer

SOURCE = Peer("udp", "127.0.0.1", 5070)


def request(*extra: str, cseq: int = 1, to_tag: str = "", contact: str | None = None) -> Request:
    lines = [
        "SUBSCRIBE sip:+447700900123@net-b.test SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@net-a.test>;tag=from1',
        f"To: <sip:+447700900123@net-b.test>{';tag=' + to_tag if to_tag else ''}",
        "Call-ID: c1@x",
        f"CSeq: {cseq} SUBSCRIBE",
        f"Contact: {contact or '<sip:alice@127.0.0.1:5070>'}",
        "Event: presence",
        *extra,
    ]
    return parsed(lines)


def parsed(header_lines: list[str]) -> Request:
    """The request of a start line and headers (no body)."""
    message = parse_message("\r\n".join([*header_lines, "Content-Length: 0", "", ""]).encode())
    assert isinstance(message, Request)
    return message


def dialog(*extra: str, source: Peer = SOURCE) -> Dialog:
    return Dialog.from_request(
        request(*extra), local_tag="L1", source=source, local_contact="sip:127.0.2.11:5060"
    )


def test_creation_and_id() -> None:
    d = dialog()
    assert d.id == ("c1@x", "L1", "from1")
    assert d.remote_target == "sip:alice@127.0.0.1:5070"
    assert d.remote_uri == '"Alice" <sip:alice@net-a.test>'
    assert d.local_uri == "sip:+447700900123@net-b.test"
    assert d.remote_cseq == 1
    assert d.local_cseq == 0
    assert d.route_set == ()


def test_notify_without_routes() -> None:
    d = dialog()
    notify = d.build_request(
        "NOTIFY",
        via="SIP/2.0/UDP 127.0.2.11:5060;branch=z9hG4bKn1",
        headers=[("Event", "presence")],
        body=b"x",
    )
    assert notify.uri == "sip:alice@127.0.0.1:5070"
    assert notify.headers.get_all("Route") == []
    assert notify.headers.get("From") == "<sip:+447700900123@net-b.test>;tag=L1"
    assert notify.headers.get("To") == '"Alice" <sip:alice@net-a.test>;tag=from1'
    assert notify.cseq.seq == 1
    assert notify.cseq.method == "NOTIFY"
    assert notify.headers.get("Contact") == "<sip:127.0.2.11:5060>"
    assert notify.headers.get("Content-Length") == "1"
    again = parse_message(to_bytes(notify))
    assert again == notify
    second = d.build_request("NOTIFY", via="SIP/2.0/UDP 127.0.2.11:5060;branch=z9hG4bKn2")
    assert second.cseq.seq == 2  # strictly rising


@pytest.mark.parametrize(
    ("from_header", "remote_uri", "to_header"),
    [
        ("<sip:bob@net-a.test>;tag=f9", "sip:bob@net-a.test", "<sip:bob@net-a.test>;tag=f9"),
        ("sip:bob@net-a.test;tag=f9", "sip:bob@net-a.test", "<sip:bob@net-a.test>;tag=f9"),
        (  # URI parameters stay inside the brackets (outside they would be header parameters)
            "<sip:+447700900001@net-a.test;user=phone>;tag=f9",
            "sip:+447700900001@net-a.test;user=phone",
            "<sip:+447700900001@net-a.test;user=phone>;tag=f9",
        ),
        (
            "<sip:bob@net-a.test>;x=1;tag=f9",
            "<sip:bob@net-a.test>;x=1",
            "<sip:bob@net-a.test>;x=1;tag=f9",
        ),
        ('"Bob" <sip:bob@net-a.test>;tag=f9', '"Bob" <sip:bob@net-a.test>', None),
    ],
)
def test_remote_uri_is_the_bare_uri_when_the_from_holds_nothing_else(
    from_header: str, remote_uri: str, to_header: str | None
) -> None:
    data = to_bytes(request()).replace(
        b'From: "Alice" <sip:alice@net-a.test>;tag=from1', b"From: " + from_header.encode()
    )
    message = parse_message(data)
    assert isinstance(message, Request)
    d = Dialog.from_request(message, local_tag="L1", source=SOURCE, local_contact="sip:h")
    assert d.remote_uri == remote_uri
    notify = d.build_request("NOTIFY", via="SIP/2.0/UDP 127.0.2.11:5060;branch=z9hG4bKn1")
    assert notify.headers.get("To") == (to_header or f"{remote_uri};tag=f9")
    assert parse_message(to_bytes(notify)).to.tag == "f9"


def test_loose_routes_in_record_route_order() -> None:
    d = dialog("Record-Route: <sip:127.0.2.2:5061;transport=tls;lr>, <sip:gw.net-a.test;lr>")
    assert d.route_set == ("<sip:127.0.2.2:5061;transport=tls;lr>", "<sip:gw.net-a.test;lr>")
    uri, routes = d.request_uri_and_routes()
    assert uri == "sip:alice@127.0.0.1:5070"
    assert routes == list(d.route_set)
    assert d.destination() == Peer("tls", "127.0.2.2", 5061)


def test_strict_router_first() -> None:
    d = dialog(
        "Record-Route: <sip:127.0.0.9:5080;maddr=127.0.0.8>", "Record-Route: <sip:p2.test;lr>"
    )
    uri, routes = d.request_uri_and_routes()
    assert uri == "sip:127.0.0.9:5080"  # maddr is not allowed in a Request-URI
    assert routes == ["<sip:p2.test;lr>", "<sip:alice@127.0.0.1:5070>"]
    notify = d.build_request("NOTIFY", via="SIP/2.0/UDP h;branch=z9hG4bKx")
    assert notify.uri == uri
    assert notify.headers.get_all("Route") == routes


def test_destination_rules() -> None:
    assert dialog().destination() == Peer("udp", "127.0.0.1", 5070)
    named = Dialog.from_request(
        request(contact="<sip:alice@watcher.net-a.test>"),
        local_tag="L",
        source=SOURCE,
        local_contact="sip:h",
    )
    assert named.destination() == SOURCE  # no DNS: back where it came from
    stream = Peer("tls", "127.0.0.1", 40001, connection=3)
    assert dialog(source=stream).destination() == stream  # connection reuse
    restored = dialog(source=Peer("tls", "127.0.0.1", 40001))
    assert restored.destination() == Peer("udp", "127.0.0.1", 5070)
    assert next_hop_peer(parse_uri("sips:[::1]"), SOURCE) == Peer("tls", "::1", 5061)
    assert next_hop_peer(parse_uri("sip:10.0.0.1;transport=sctp"), SOURCE) == SOURCE
    assert next_hop_peer(parse_uri("tel:+1234"), SOURCE) == SOURCE
    bad = dialog("Record-Route: <sip:127.0.0.9;lr>")
    bad.route_set = ("not a route",)
    assert bad.destination() == SOURCE


def proxied(*extra: str, cseq: int = 1, to_tag: str = "") -> Request:
    """A SUBSCRIBE as a proxy (Kamailio, 127.80.0.1) forwards it over TCP: two Vias."""
    lines = [
        "SUBSCRIBE sip:+447700900123@example.test SIP/2.0",
        "Via: SIP/2.0/TCP 127.80.0.1;branch=z9hG4bKddbb.8bb41c55a5704f7ee88cf85726c363b3.0",
        "Via: SIP/2.0/UDP 127.80.0.11:5071;received=127.80.0.11;branch=z9hG4bK13d2c5be;rport=5071",
        "Max-Forwards: 69",
        "From: <sip:+447700900124@example.test>;tag=9cd7ec95",
        f"To: <sip:+447700900123@example.test>{';tag=' + to_tag if to_tag else ''}",
        "Call-ID: 8e0bf21e@b",
        f"CSeq: {cseq} SUBSCRIBE",
        "Contact: <sip:b@127.80.0.11:5071>",
        *extra,
        "Event: presence",
    ]
    return parsed(lines)


PROXY_STREAM = Peer("tcp", "127.80.0.1", 38185, connection=7)


def test_a_notify_does_not_go_over_the_connection_of_a_proxy_that_did_not_record_route() -> None:
    """RFC 3261 §12.2.1.1 and §8.1.2: with no route set the NOTIFY goes to the remote target.
    Seen with Kamailio as an edge proxy without record_route(), forwarding over TCP: the NOTIFY
    went back over Kamailio's connection, Kamailio answered 404 (no Route naming it) and the
    subscription was removed.  A request straight from the UA still reuses its connection, and
    so does one with a route set (its first hop is the proxy that sent it)."""
    d = Dialog.from_request(
        proxied(), local_tag="L1", source=PROXY_STREAM, local_contact="sip:127.80.0.2:5060"
    )
    assert d.destination() == Peer("udp", "127.80.0.11", 5071)
    refresh = proxied(cseq=2, to_tag="L1")
    d.receive_request(refresh, PROXY_STREAM, target_refresh=True)
    assert d.destination() == Peer("udp", "127.80.0.11", 5071)
    routed = Dialog.from_request(
        proxied("Record-Route: <sip:127.80.0.1;transport=tcp;lr>"),
        local_tag="L2",
        source=PROXY_STREAM,
        local_contact="sip:127.80.0.2:5060",
    )
    assert routed.destination() == PROXY_STREAM
    stream = Peer("tcp", "127.0.0.1", 40001, connection=3)
    assert dialog(source=stream).destination() == stream


def test_in_dialog_request_checks_and_target_refresh() -> None:
    d = dialog()
    refresh = request(cseq=2, to_tag="L1", contact="<sip:alice@127.0.0.1:5999>")
    assert d.matches(refresh)
    d.receive_request(refresh, SOURCE, target_refresh=True)
    assert d.remote_target == "sip:alice@127.0.0.1:5999"
    assert d.remote_cseq == 2
    with pytest.raises(DialogError) as info:
        d.receive_request(request(cseq=2, to_tag="L1"), SOURCE, target_refresh=True)
    assert info.value.status == 500
    assert not d.matches(request(cseq=3, to_tag="other"))


@pytest.mark.parametrize(
    ("contact", "reason"),
    [
        ("<tel:+1234>", "Contact must be a SIP URI"),
        ("<sip:a@h>, <sip:b@h>", "More than one Contact"),
    ],
)
def test_bad_contacts(contact: str, reason: str) -> None:
    with pytest.raises(DialogError, match=reason):
        Dialog.from_request(
            request(contact=contact), local_tag="L", source=SOURCE, local_contact="sip:h"
        )


def test_from_tag_required_and_cseq_limit() -> None:
    message = request()
    message.headers.set("From", "<sip:alice@net-a.test>")
    message.invalidate()
    with pytest.raises(DialogError, match="From tag"):
        Dialog.from_request(message, local_tag="L", source=SOURCE, local_contact="sip:h")
    d = dialog()
    d.local_cseq = MAX_CSEQ
    with pytest.raises(DialogError):
        d.next_cseq()


def test_refresh_with_the_same_contact_keeps_the_next_hop_and_two_contacts_are_refused() -> None:
    d = dialog()
    hop = d.destination()  # known from creation (the Contact parsed then)
    d.receive_request(request(cseq=2, to_tag="L1"), SOURCE, target_refresh=True)
    assert d.destination() is hop
    assert d.remote_target == "sip:alice@127.0.0.1:5070"
    twice = request("Contact: <sip:alice@127.0.0.1:5070>", cseq=3, to_tag="L1")
    with pytest.raises(DialogError) as info:
        d.receive_request(twice, SOURCE, target_refresh=True)
    assert info.value.reason == "More than one Contact"
    moved = request(cseq=4, to_tag="L1", contact="<sip:alice@127.0.0.9:5070>")
    d.receive_request(moved, SOURCE, target_refresh=True)
    assert d.destination() == Peer("udp", "127.0.0.9", 5070)


NATTED = Peer("udp", "127.0.0.1", 40960)
"""Where a watcher behind a NAT is seen from: its Contact names the address behind the NAT."""


def test_a_udp_watcher_with_ob_gets_its_notifies_where_its_requests_come_from() -> None:
    """RFC 5626 §5.3: ``ob`` in the Contact of a request straight from the user agent asks for
    the dialog's requests over the same flow: over UDP, its NAT binding, not its Contact."""
    behind_nat = "<sip:alice@192.0.2.5:5060;ob>"
    d = Dialog.from_request(
        request(contact=behind_nat), local_tag="L1", source=NATTED, local_contact="sip:h"
    )
    assert d.flow
    assert d.destination() == NATTED
    notify = d.build_request("NOTIFY", via="SIP/2.0/UDP 127.0.2.11:5060;branch=z9hG4bKn1")
    assert notify.uri == "sip:alice@192.0.2.5:5060;ob"  # the Request-URI stays the Contact
    # Its NAT binding changed: the refresh came from elsewhere, the NOTIFYs follow it.
    rebound = Peer("udp", "127.0.0.1", 40961)
    d.receive_request(
        request(cseq=2, to_tag="L1", contact=behind_nat), rebound, target_refresh=True
    )
    assert d.destination() == rebound
    # A refresh whose Contact no longer has ob: the Contact again.
    d.receive_request(
        request(cseq=3, to_tag="L1", contact="<sip:alice@127.0.0.1:5999>"),
        rebound,
        target_refresh=True,
    )
    assert not d.flow
    assert d.destination() == Peer("udp", "127.0.0.1", 5999)


def test_ob_is_not_followed_through_a_proxy_or_a_route_set() -> None:
    """Through a proxy the source is the proxy: the flow is the proxy's to keep (by its
    Record-Route, RFC 5626 §5.4); without one the NOTIFY goes to the Contact as before."""
    through_proxy = Dialog.from_request(
        request("Via: SIP/2.0/UDP 127.80.0.1;branch=z9hG4bK2", contact="<sip:a@127.0.0.7;ob>"),
        local_tag="L1",
        source=NATTED,
        local_contact="sip:h",
    )
    assert not through_proxy.flow
    assert through_proxy.destination() == Peer("udp", "127.0.0.7", 5060)
    routed = Dialog.from_request(
        request("Record-Route: <sip:127.80.0.1;lr>", contact="<sip:a@127.0.0.7;ob>"),
        local_tag="L2",
        source=NATTED,
        local_contact="sip:h",
    )
    assert not routed.flow
    assert routed.destination() == Peer("udp", "127.80.0.1", 5060)
    plain = Dialog.from_request(
        request(contact="<sip:a@127.0.0.7>"), local_tag="L3", source=NATTED, local_contact="sip:h"
    )
    assert plain.destination() == Peer("udp", "127.0.0.7", 5060)


def test_a_stream_watcher_with_ob_whose_connection_closed_is_sent_to_its_contact() -> None:
    """Over TCP/TLS the flow is the connection; once it is gone there is no flow to go back
    over (RFC 5626 would answer 430): the Contact is tried, as without ob."""
    stream = Peer("tcp", "127.0.0.1", 40001, connection=3)
    d = Dialog.from_request(
        request(contact="<sip:a@127.0.0.7:5070;transport=tcp;ob>"),
        local_tag="L1",
        source=stream,
        local_contact="sip:h",
    )
    assert d.destination() == stream
    assert d.forget_connection()
    assert d.destination() == Peer("tcp", "127.0.0.7", 5070)
