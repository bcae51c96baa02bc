"""The value types of the SIP layer: Headers, URIs, name-addr, Via, grammar helpers."""

from __future__ import annotations

import pytest
from vectors import load

from presence_sip.sip import (
    AbsoluteUri,
    Headers,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    TelUri,
    Via,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from presence_sip.sip.grammar import split_commas, unquote
from presence_sip.sip.headers import canonical_name
from presence_sip.sip.message import Message, parse_cseq
from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import (
    format_params,
    get_param,
    has_param,
    is_ip,
    parse_header_params,
    unescape,
)
from presence_sip.sip.validate import VALIDATORS

# --- Headers ------------------------------------------------------------------------------------


def test_headers_multimap() -> None:
    headers = Headers([("v", "a"), ("Via", "b, c"), ("X-Foo", "1"), ("x-foo", "2")])
    assert list(headers) == [("Via", "a"), ("Via", "b, c"), ("X-Foo", "1"), ("x-foo", "2")]
    assert len(headers) == 4
    assert "VIA" in headers
    assert "v" in headers
    assert 5 not in headers
    assert headers.get("x-FOO") == "1"
    assert headers.get("Route") is None
    assert headers.get_all("X-Foo") == ["1", "2"]
    assert headers.values("Via") == ["a", "b", "c"]
    assert headers.count("Via") == 2
    assert repr(headers).startswith("Headers([('Via', 'a')")
    assert headers != [("Via", "a")]


def test_headers_edits() -> None:
    headers = Headers([("Via", "a"), ("To", "t"), ("Via", "b, c")])
    headers.prepend("Via", "z")
    assert headers.get_all("Via") == ["z", "a", "b, c"]
    headers.prepend("Route", "r")
    assert next(iter(headers)) == ("Route", "r")
    headers.set("Via", "only")
    assert list(headers) == [("Route", "r"), ("Via", "only"), ("To", "t")]
    headers.set("Expires", "5")
    assert list(headers)[-1] == ("Expires", "5")
    assert headers.remove("To") == 1
    assert headers.remove("To") == 0
    headers.add("Via", "x, y")
    assert headers.pop_first_value("Via") == "only"
    assert headers.pop_first_value("Via") == "x"
    assert headers.get_all("Via") == ["y"]
    assert headers.pop_first_value("Via") == "y"
    assert headers.pop_first_value("Via") is None
    copy = headers.copy()
    copy.add("A", "1")
    assert "A" not in headers


def test_canonical_names() -> None:
    assert canonical_name("i") == "Call-ID"
    assert canonical_name("CALL-ID") == "Call-ID"
    assert canonical_name("X-Unknown") == "X-Unknown"


# --- Typed accessors on hand-built messages -----------------------------------------------------


def test_accessors_raise_on_bad_or_missing_values() -> None:
    message = Request("OPTIONS", "sip:a@b", [("CSeq", "x OPTIONS")])
    with pytest.raises(SipParseError, match=r"^Malformed CSeq$"):
        _ = message.cseq
    with pytest.raises(SipParseError, match=r"^Missing Call-ID$"):
        _ = message.call_id
    with pytest.raises(SipParseError, match=r"^Missing Via$"):
        _ = message.vias
    with pytest.raises(SipParseError, match=r"^Missing Via$"):
        _ = message.top_via
    assert message.max_forwards is None
    assert message.expires is None
    assert message.event is None
    message.headers.add("SIP-ETag", "a b")
    with pytest.raises(SipParseError, match=r"^Malformed SIP-ETag$"):
        _ = message.sip_etag
    message.headers.add("Allow", "INVITE, , BYE")
    assert message.token_list("Allow") == ["INVITE", "BYE"]
    message.headers.add("Supported", "a b")
    with pytest.raises(SipParseError, match=r"^Malformed Supported$"):
        message.token_list("Supported")


def test_accessors_are_cached_until_invalidated() -> None:
    message = parse_message(load("sip/notify"))
    first = message.top_via
    assert message.top_via is first
    assert message.event is message.event
    message.headers.set("Event", "dialog")
    assert message.event is not None
    assert message.event.package == "presence"
    message.invalidate()
    assert message.event is not None
    assert message.event.package == "dialog"


def test_cseq_parse() -> None:
    assert parse_cseq("  12   INVITE ").seq == 12
    with pytest.raises(SipParseError, match=r"^CSeq out of range$"):
        parse_cseq("4294967296 INVITE")
    with pytest.raises(SipParseError, match=r"^Malformed CSeq$"):
        parse_cseq("1 INVITE x")


def test_message_base_and_equality() -> None:
    message = Message(Headers())
    assert message.body == b""
    response = Response(200, "OK")
    assert response != Request("OPTIONS", "sip:a@b")
    assert Request("OPTIONS", "sip:a@b") != response
    with pytest.raises(TypeError):
        hash(response)


def test_general_validators_accept_empty_lists() -> None:
    for name in ("Allow", "Supported", "Accept", "Allow-Events"):
        VALIDATORS[name]("")


# --- URIs ---------------------------------------------------------------------------------------


def test_sip_uri_round_trip_and_accessors() -> None:
    text = "SIPS:alice:secret@Example.COM:5061;transport=TLS;lr?subject=x&h=y"
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "Example.COM",
        5061,
    )
    assert uri.transport == "tls"
    assert uri.param("LR") == ""
    assert uri.headers == "subject=x&h=y"
    assert str(uri) == "sips:alice:secret@Example.COM:5061;transport=TLS;lr?subject=x&h=y"
    assert uri.aor == "sips:alice@example.com"
    bare = parse_uri("sip:example.com")
    assert isinstance(bare, SipUri)
    assert str(bare) == "sip:example.com"
    assert bare.transport is None
    assert bare.aor == "sip:example.com"
    assert str(bare.with_params((("lr", None),))) == "sip:example.com;lr"


def test_sip_uri_port_edge_cases() -> None:
    with pytest.raises(SipParseError, match=r"^Malformed port$"):
        parse_uri("sip:[::1]:")
    with pytest.raises(SipParseError, match=r"^Malformed port$"):
        parse_uri("sip:h:")
    with pytest.raises(SipParseError, match=r"^Malformed IPv6 reference$"):
        parse_uri("sip:[zz]")
    uri = parse_uri("sip:[2001:db8::1]:5060")
    assert isinstance(uri, SipUri)
    assert uri.port == 5060


def test_tel_and_absolute_uris() -> None:
    tel = parse_uri("tel:+44-7700-900123;phone-context=example.com")
    assert isinstance(tel, TelUri)
    assert tel.scheme == "tel"
    assert tel.aor == "tel:+447700900123"
    assert str(tel) == "tel:+44-7700-900123;phone-context=example.com"
    other = parse_uri("urn:service:sos")
    assert isinstance(other, AbsoluteUri)
    assert other.aor == "urn:service:sos"
    with pytest.raises(SipParseError, match=r"^Malformed URI$"):
        parse_uri("no-scheme")


def test_unescape_and_params() -> None:
    assert unescape("a%41%2") == "aA%2"
    assert unescape("plain") == "plain"
    params = (("a", None), ("B", "2"))
    assert get_param(params, "b") == "2"
    assert get_param(params, "a") == ""
    assert get_param(params, "c") is None
    assert has_param(params, "A")
    assert not has_param(params, "c")
    assert format_params(params) == ";a;B=2"


# --- name-addr ----------------------------------------------------------------------------------


def test_name_addr_forms() -> None:
    named = parse_name_addr('"Bob" <sip:bob@h>;tag=1;x', "To")
    assert (named.display_name, named.tag, named.bracketed) == ('"Bob"', "1", True)
    assert named.param("x") == ""
    assert str(named) == '"Bob" <sip:bob@h>;tag=1;x'
    bare = parse_name_addr("sip:bob@h;tag=2", "To")
    assert str(bare) == "sip:bob@h;tag=2"
    assert not bare.bracketed
    tagged = bare.with_param("tag", "3")
    assert str(tagged) == "sip:bob@h;tag=3"
    assert str(parse_name_addr("sip:b@h;x", "To").with_param("tag", "5")) == "<sip:b@h>;x;tag=5"
    plain = parse_name_addr("sip:bob@h", "To").with_param("tag", "4")
    assert str(plain) == "sip:bob@h;tag=4"
    assert str(NameAddr(parse_uri("sip:a@b"))) == "<sip:a@b>"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('"Bob" sip:bob@h', "Malformed To"),
        ("Bob <sip:bob@h> junk", "Malformed To"),
        ("B@b <sip:bob@h>", "Malformed To: bad display name"),
        ("< sip:bob@h>", "Malformed To: spaces in addr-spec"),
        ("", "Malformed To: spaces in addr-spec"),
        ("<sip:bob@h>;=x", "Malformed To parameter"),
        ("<sip:bob@h>;a=", "Malformed To parameter"),
    ],
)
def test_name_addr_errors(text: str, reason: str) -> None:
    with pytest.raises(SipParseError, match=f"^{reason}$"):
        parse_name_addr(text, "To")


# --- Via ----------------------------------------------------------------------------------------


def test_via_parse_and_accessors() -> None:
    via = parse_via("sip / 2.0 / udp h.example.com : 5060 ; received=1.2.3.4;rport=7;maddr=m;ttl=3")
    assert (via.protocol, via.transport, via.host, via.port) == (
        "SIP/2.0",
        "UDP",
        "h.example.com",
        5060,
    )
    assert (via.received, via.rport, via.maddr, via.ttl, via.branch) == ("1.2.3.4", 7, "m", 3, None)
    assert str(via) == "SIP/2.0/UDP h.example.com:5060;received=1.2.3.4;rport=7;maddr=m;ttl=3"
    moved = via.with_params((("branch", "z9hG4bK1"),))
    assert str(moved) == "SIP/2.0/UDP h.example.com:5060;branch=z9hG4bK1"
    assert moved.rport is None
    assert moved.ttl is None
    assert Via("UDP", "h", params=(("rport", "x"),)).rport is None


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/2.0/UDP h:70000",
        "SIP/2.0/UDP h;ttl=x",
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h;received",
        "SIP/2.0/UDP h;branch=",
        "SIP/2.0/UDP h x",
    ],
)
def test_via_errors(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


# --- grammar helpers ----------------------------------------------------------------------------


def test_split_commas() -> None:
    assert split_commas("a") == ["a"]
    assert split_commas(' "x,\\"y" , <a,b>,c,') == ['"x,\\"y"', "<a,b>", "c", ""]


def test_unquote() -> None:
    assert unquote('"abc"') == "abc"
    assert unquote('"a\\"b\\\\c\\"') == 'a"b\\c\\'


def test_header_params_allow_trailing_whitespace() -> None:
    assert parse_header_params(" ;b ; a = 1 ", "X") == (("b", None), ("a", "1"))


def test_lower_case_version_in_a_status_line() -> None:
    data = load("sip/publish_200").replace(b"SIP/2.0 200 OK", b"sip/2.0 200 OK", 1)
    response = parse_message(data)
    assert isinstance(response, Response)
    assert response.version == "SIP/2.0"


# --- Peer ---------------------------------------------------------------------------------------


def test_peer() -> None:
    udp = Peer("udp", "127.0.0.1", 5060)
    assert not udp.reliable
    assert str(udp) == "udp:127.0.0.1:5060"
    tcp = Peer("tcp", "::1", 5061, connection=7)
    assert tcp.reliable
    assert str(tcp) == "tcp:[::1]:5061"
    assert tcp.without_connection() == Peer("tcp", "::1", 5061)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.2.11", True),
        ("255.255.255.255", True),
        ("::1", True),
        ("[2001:db8::1]", True),
        ("256.1.1.1", False),
        ("1.2.3", False),
        ("[127.0.0.1]", False),  # brackets are for IPv6 references only (RFC 3261 §25.1)
        ("net-b.test", False),
        ("[net-b.test]", False),
        ("", False),
    ],
)
def test_is_ip_tells_literals_from_names(host: str, expected: bool) -> None:
    """One ``is_ip`` for dialogs, routing and the CLI (there were two that disagreed on
    ``[127.0.0.1]``); a name is never resolved, so only literals may be sent to directly."""
    assert is_ip(host) is expected
    assert is_ip(host) is expected  # the remembered answer
