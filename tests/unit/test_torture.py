"""RFC 4475 (SIP torture tests) and RFC 5118 (SIPv6 torture tests) through ``parse_message``.

Classes and expected outcomes follow ``shared/torture/README.md``: every "valid" message parses
with the fields its RFC section calls out, every "invalid" one raises ``SipParseError`` with the
status the RFC asks for, the "semantic" ones parse except insuf, multi01 and mcl01.
"""

from __future__ import annotations

import pytest
from vectors import load, names, wire

from presence_sip.sip import (
    AbsoluteUri,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    TelUri,
    parse_message,
    to_bytes,
)

VALID = [
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
]
INVALID = {
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": 400,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    "baddate": 400,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 501,
    "bigcode": 400,
}
SEMANTIC_REJECTED = {
    "insuf": "Missing",
    "multi01": "Multiple",
    "mcl01": "Multiple Content-Length headers",
}
SEMANTIC_PARSED = [
    "badbranch",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    "inv2543",
]


def torture(name: str) -> Request | Response:
    return parse_message(load(f"rfc4475/{name}"))


def request(name: str) -> Request:
    message = torture(name)
    assert isinstance(message, Request)
    return message


def response(name: str) -> Response:
    message = torture(name)
    assert isinstance(message, Response)
    return message


def sip_uri(value: object) -> SipUri:
    assert isinstance(value, SipUri)
    return value


def test_the_set_is_complete() -> None:
    everything = set(VALID) | set(INVALID) | set(SEMANTIC_REJECTED) | set(SEMANTIC_PARSED)
    assert len(VALID) == 13
    assert len(INVALID) == 19
    assert len(SEMANTIC_REJECTED) + len(SEMANTIC_PARSED) == 17
    assert {f"rfc4475/{n}" for n in everything} == set(names("rfc4475"))


# --- RFC 4475 §3.1.1: valid messages ----------------------------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse_and_reserialise(name: str) -> None:
    message = torture(name)
    again = parse_message(to_bytes(message))
    assert again == message


def test_wsinv_short_tortuous_invite() -> None:
    msg = request("wsinv")
    assert msg.method == "INVITE"
    assert msg.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert sip_uri(msg.request_uri).params == (("unknownparam", None),)
    # folded values, LWS around ':' and ';', mixed short and long names
    assert msg.to.tag == "1918181833n"
    assert msg.from_.tag == "98asjd8"
    assert msg.from_.display_name == '"J Rosenberg \\\\\\""'
    assert msg.max_forwards == 68
    assert msg.cseq.seq == 9
    assert msg.cseq.method == "INVITE"
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    vias = msg.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    [contact] = msg.contacts
    assert contact.display_name == '"Quoted string \\"\\""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert sip_uri(msg.name_addrs("Route")[0].uri).params == (
        ("lr", None),
        ("unknownwith", "value"),
        ("unknown-no-value", None),
    )
    assert len(msg.body) == 150


def test_intmeth_wide_range_of_valid_characters() -> None:
    msg = request("intmeth")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq.method == msg.method
    ruri = sip_uri(msg.request_uri)
    assert ruri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert ruri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert ruri.host == "example.com"
    assert msg.to.display_name == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.max_forwards == 255
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"
    assert msg.body == b""


def test_intmeth_utf8_param_value_is_kept() -> None:
    value = request("intmeth").from_.param("fromParam''~+*_!.-%")
    assert value is not None
    assert value.startswith('"')
    assert value.endswith('"')
    assert value.encode("utf-8") in load("rfc4475/intmeth")


def test_esc01_escapes_are_never_unescaped_twice() -> None:
    msg = request("esc01")
    ruri = sip_uri(msg.request_uri)
    assert ruri.user == "sips%3Auser%40example.com"
    assert ruri.host == "example.net"
    assert sip_uri(msg.to.uri).user == "%75se%72"
    assert sip_uri(msg.from_.uri).user == "I%20have%20spaces"
    [contact] = msg.contacts
    uri = sip_uri(contact.uri)
    assert uri.user == "cal%6Cer"
    assert uri.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"
    assert msg.content_type is not None
    assert msg.content_type.mime == "application/sdp"


def test_escnull_registers_two_distinct_contacts() -> None:
    msg = request("escnull")
    users = [sip_uri(c.uri).user for c in msg.contacts]
    assert users == ["%00", "%00%00"]
    assert sip_uri(msg.to.uri).user == "null-%00-null"
    assert sip_uri(msg.contacts[0].uri).aor != sip_uri(msg.contacts[1].uri).aor


def test_esc02_percent_that_is_not_an_escape() -> None:
    msg = request("esc02")
    assert msg.method == "RE%47IST%45R"
    assert msg.method != "REGISTER"
    assert msg.to.display_name == '"%Z%45"'
    assert [sip_uri(c.uri).host for c in msg.contacts] == [
        "host1.example.com",
        "host3.example.com",
    ]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_no_lws_between_display_name_and_angle() -> None:
    msg = request("lwsdisp")
    assert msg.from_.display_name == "caller"
    assert sip_uri(msg.from_.uri).user == "caller"
    assert msg.from_.tag == "323"


def test_longreq_long_values() -> None:
    msg = request("longreq")
    assert msg.method == "INVITE"
    to = msg.to
    assert to.display_name is not None
    assert "extremeextreme" in to.display_name
    uri = sip_uri(to.uri)
    assert uri.port == 6000
    assert len(uri.params) == 3
    assert msg.from_.tag is not None
    assert len(msg.from_.tag) > 100
    assert len(msg.call_id) > 100
    assert len(msg.vias) == 34
    assert msg.vias[-1].received == "192.0.2.5"
    assert len(msg.contacts) == 1
    assert msg.headers.get("Content-Length") == "150"
    assert len(msg.body) == 150


def test_dblreq_trailing_octets_are_ignored() -> None:
    msg = request("dblreq")
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert b"INVITE" not in to_bytes(msg)


def test_semiuri_semicolon_in_user_part() -> None:
    msg = request("semiuri")
    ruri = sip_uri(msg.request_uri)
    assert ruri.user == "user;par=u%40example.net"
    assert ruri.host == "example.com"
    assert ruri.params == ()
    assert msg.headers.values("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_varied_and_unknown() -> None:
    msg = request("transports")
    assert [(v.transport, v.host) for v in msg.vias] == [
        ("UDP", "t1.example.com"),
        ("SCTP", "t2.example.com"),
        ("TLS", "t3.example.com"),
        ("UNKNOWN", "t4.example.com"),
        ("TCP", "t5.example.com"),
    ]
    assert msg.top_via.transport == "UDP"


def test_mpart01_binary_body_framed_by_content_length() -> None:
    data = load("rfc4475/mpart01")
    msg = request("mpart01")
    assert msg.method == "MESSAGE"
    assert msg.headers.get("Content-Length") == str(len(msg.body))
    assert len(msg.body) == 553
    assert b"\x00" in msg.body
    assert data.endswith(msg.body)
    assert msg.content_type is not None
    assert msg.content_type.mime == "multipart/mixed"
    assert msg.content_type.params == (("boundary", "7a9cbec02ceef655"),)


def test_unreason_utf8_reason_phrase() -> None:
    msg = response("unreason")
    assert msg.status == 200
    assert msg.reason.startswith("= 2**3 * 5**2 ")
    assert msg.reason.endswith(" - \u043f\u0440\u043e\u0441\u0442\u043e\u0435")
    assert msg.reason.encode("utf-8") in load("rfc4475/unreason")
    assert len(msg.body) == 154


def test_noreason_empty_reason_phrase() -> None:
    msg = response("noreason")
    assert msg.status == 100
    assert msg.reason == ""
    assert to_bytes(msg).startswith(b"SIP/2.0 100 \r\n")


# --- RFC 4475 §3.1.2: invalid messages --------------------------------------------------------


@pytest.mark.parametrize(("name", "status"), sorted(INVALID.items()))
def test_invalid_messages_raise_with_the_rfc_status(name: str, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        torture(name)
    assert info.value.status == status
    assert info.value.reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("badinv01", "Malformed Via parameter"),
        ("clerr", "Content-Length larger than message"),
        ("ncl", "Malformed Content-Length"),
        ("scalar02", "CSeq out of range"),
        ("quotbal", "Malformed To: unterminated quoted string"),
        ("ltgtruri", "Malformed Request-URI"),
        ("lwsruri", "Malformed Request-Line"),
        ("escruri", "Request-URI must not contain headers"),
        ("baddate", "Malformed Date"),
        ("regbadct", "Malformed Contact: URI with headers must be in <>"),
        ("badaspec", "Malformed To: spaces in addr-spec"),
        ("badvers", "Version Not Supported"),
        ("mismatch01", "CSeq method mismatch"),
        ("bigcode", "Invalid status code"),
    ],
)
def test_invalid_messages_name_the_defect(name: str, reason: str) -> None:
    with pytest.raises(SipParseError, match=f"^{reason}$".replace("(", r"\(")):
        torture(name)


# --- RFC 4475 §3.2-3.4: semantic messages -----------------------------------------------------


@pytest.mark.parametrize(("name", "reason"), sorted(SEMANTIC_REJECTED.items()))
def test_semantic_messages_rejected(name: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        torture(name)
    assert info.value.status == 400
    assert info.value.reason.startswith(reason)


@pytest.mark.parametrize("name", SEMANTIC_PARSED)
def test_semantic_messages_parse(name: str) -> None:
    message = torture(name)
    wire_form = to_bytes(message)
    assert to_bytes(parse_message(wire_form)) == wire_form


def test_badbranch_empty_branch_suffix() -> None:
    assert request("badbranch").top_via.branch == "z9hG4bK"


def test_unkscm_unknown_scheme_is_kept() -> None:
    ruri = request("unkscm").request_uri
    assert isinstance(ruri, AbsoluteUri)
    assert (ruri.scheme, ruri.opaque) == ("nobodyKnowsThisScheme", "totallyopaquecontent")


def test_novelsc_known_but_atypical_scheme() -> None:
    ruri = request("novelsc").request_uri
    assert isinstance(ruri, AbsoluteUri)
    assert str(ruri) == "soap.beep://192.0.2.103:3002"


def test_unksm2_unknown_schemes_in_headers() -> None:
    msg = request("unksm2")
    assert str(msg.to.uri) == "isbn:2983792873"
    assert str(msg.from_.uri) == "http://www.example.com"
    assert str(msg.contacts[0].uri) == "name:John_Smith"


def test_bext01_require_and_proxy_require() -> None:
    msg = request("bext01")
    assert msg.token_list("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert msg.token_list("Proxy-Require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]


def test_invut_unknown_content_type() -> None:
    msg = request("invut")
    assert msg.content_type is not None
    assert msg.content_type.mime == "application/unknownformat"
    assert len(msg.body) == 40


def test_regaut01_unknown_authorization_scheme_is_opaque() -> None:
    msg = request("regaut01")
    assert msg.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"


def test_bcast_broadcast_via_is_parsed() -> None:
    msg = response("bcast")
    assert [v.host for v in msg.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf_max_forwards_zero() -> None:
    assert request("zeromf").max_forwards == 0


def test_cparam01_unknownparam_is_a_header_param() -> None:
    [contact] = request("cparam01").contacts
    assert not contact.bracketed
    assert contact.params == (("unknownparam", None),)
    assert sip_uri(contact.uri).params == ()
    assert sip_uri(contact.uri).user == "+19725552222"


def test_cparam02_unknownparam_is_a_uri_param() -> None:
    [contact] = request("cparam02").contacts
    assert contact.bracketed
    assert contact.params == ()
    assert sip_uri(contact.uri).params == (("unknownparam", None),)


def test_regescrt_keeps_the_escaped_route_in_the_contact_uri() -> None:
    [contact] = request("regescrt").contacts
    uri = sip_uri(contact.uri)
    assert uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert str(contact) == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"


def test_sdp01_accept_without_sdp() -> None:
    msg = request("sdp01")
    assert msg.headers.values("Accept") == ["text/nobodyKnowsThis"]
    assert msg.content_type is not None
    assert msg.content_type.mime == "application/sdp"


def test_inv2543_rfc2543_syntax() -> None:
    msg = request("inv2543")
    assert msg.top_via.branch is None
    assert msg.from_.tag is None
    assert msg.max_forwards is None
    assert "Content-Length" not in msg.headers
    assert msg.body.startswith(b"v=0\r\n")
    assert isinstance(msg.name_addrs("Record-Route")[0], NameAddr)
    # RFC 3261 §20: without <>, ";user=phone" belongs to the header, not the URI
    assert msg.to.param("user") == "phone"
    assert sip_uri(msg.to.uri).params == ()


# --- RFC 5118: IPv6 ---------------------------------------------------------------------------

RFC5118_VALID = [n for n in names("rfc5118") if n != "rfc5118/ipv6-bad"]


def test_rfc5118_archive_is_not_wire_ready_as_stored() -> None:
    assert b"\r" not in load("rfc5118/ipv6-good")
    assert wire("rfc5118/ipv6-good").count(b"\r\n") == load("rfc5118/ipv6-good").count(b"\n")


@pytest.mark.parametrize("name", RFC5118_VALID)
def test_rfc5118_valid_messages_parse(name: str) -> None:
    message = parse_message(wire(name))
    assert parse_message(to_bytes(message)) == message


def test_rfc5118_ipv6_bad_is_rejected() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(wire("rfc5118/ipv6-bad"))
    assert info.value.status == 400


def ipv6_request(name: str) -> Request:
    message = parse_message(wire(f"rfc5118/{name}"))
    assert isinstance(message, Request)
    return message


def test_rfc5118_ipv6_good() -> None:
    msg = ipv6_request("ipv6-good")
    assert sip_uri(msg.request_uri).host == "[2001:db8::10]"
    assert msg.top_via.host == "[2001:db8::9:1]"


def test_rfc5118_port_ambiguous_has_no_port() -> None:
    ruri = sip_uri(ipv6_request("port-ambiguous").request_uri)
    assert ruri.host == "[2001:db8::10:5070]"
    assert ruri.port is None


def test_rfc5118_port_unambiguous() -> None:
    ruri = sip_uri(ipv6_request("port-unambiguous").request_uri)
    assert ruri.host == "[2001:db8::10]"
    assert ruri.port == 5070


def test_rfc5118_received_with_brackets() -> None:
    assert ipv6_request("via-received-param-with-delim").top_via.received == "[2001:db8::9:255]"


def test_rfc5118_received_without_brackets() -> None:
    assert ipv6_request("via-received-param-no-delim").top_via.received == "2001:db8::9:255"


def test_rfc5118_ipv4_mapped() -> None:
    msg = ipv6_request("ipv4-mapped-ipv6")
    assert msg.top_via.host == "[::ffff:192.0.2.10]"
    assert msg.top_via.port == 19823
    assert msg.vias[1].host == "[::ffff:192.0.2.2]"
    assert sip_uri(msg.contacts[0].uri).host == "[::ffff:192.0.2.2]"
    assert b"IN IP6 ::ffff:192.0.2.2\r\n" in msg.body


def test_rfc5118_multiple_ip_in_header() -> None:
    msg = ipv6_request("mult-ip-in-header")
    assert [(v.host, v.port, v.received) for v in msg.vias] == [
        ("[2001:db8::9:1]", 6050, None),
        ("192.0.2.1", None, None),
        ("[2001:db8::9:255]", None, "192.0.2.200"),
    ]


def test_rfc5118_abnf_colons() -> None:
    three = ipv6_request("ipv6-bug-abnf-3-colons")
    two = ipv6_request("ipv6-correct-abnf-2-colons")
    assert sip_uri(three.request_uri).host == "[2001:db8:::192.0.2.1]"
    assert sip_uri(two.request_uri).host == "[2001:db8::192.0.2.1]"


def test_rfc5118_sdp_bodies_are_framed() -> None:
    for name in ("ipv6-in-sdp", "mult-ip-in-sdp"):
        msg = ipv6_request(name)
        assert msg.headers.get("Content-Length") == str(len(msg.body))
        assert msg.body.startswith(b"v=0\r\n")


def test_tel_uri_in_to_header() -> None:
    data = load("sip/subscribe").replace(
        b"To: <sip:resource@example.com>", b"To: <tel:+447700900123>"
    )
    msg = parse_message(data)
    assert isinstance(msg.to.uri, TelUri)
    assert msg.to.uri.number == "+447700900123"
