"""bytes -> message: table tests both ways, typed accessors, invalid input and its exact reply."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import load, names

from presence_sip.sip import (
    ParseFailure,
    Request,
    Response,
    SipParseError,
    SipUri,
    TelUri,
    grammar,
    make_response,
    memo,
    parse_message,
    parser,
    to_bytes,
)
from presence_sip.sip.validate import (
    CORE_VALIDATORS,
    FAST_CHECKS,
    VALIDATORS,
    Check,
    validate_message,
)

SUBSCRIBE = load("sip/subscribe")

# --- Table: canonical bytes <-> message, both directions ----------------------------------------

CASES: list[tuple[bytes, Request | Response]] = [
    (
        b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=a\r\n"
        b"To: <sip:bob@127.0.0.1>\r\n"
        b"Call-ID: c1@127.0.0.1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n",
        Request(
            "OPTIONS",
            "sip:bob@127.0.0.1",
            [
                ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"),
                ("From", "<sip:alice@127.0.0.1>;tag=a"),
                ("To", "<sip:bob@127.0.0.1>"),
                ("Call-ID", "c1@127.0.0.1"),
                ("CSeq", "1 OPTIONS"),
                ("Content-Length", "0"),
            ],
        ),
    ),
    (
        b"SIP/2.0 404 Not Found\r\n"
        b"Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK2;received=127.0.0.1\r\n"
        b"From: sip:alice@127.0.0.1;tag=a\r\n"
        b"To: sip:bob@127.0.0.1;tag=b\r\n"
        b"Call-ID: c2\r\n"
        b"CSeq: 7 SUBSCRIBE\r\n"
        b"Content-Length: 0\r\n\r\n",
        Response(
            404,
            "Not Found",
            [
                ("Via", "SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK2;received=127.0.0.1"),
                ("From", "sip:alice@127.0.0.1;tag=a"),
                ("To", "sip:bob@127.0.0.1;tag=b"),
                ("Call-ID", "c2"),
                ("CSeq", "7 SUBSCRIBE"),
                ("Content-Length", "0"),
            ],
        ),
    ),
    (
        b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK3\r\n"
        b'From: "Alice A." <sip:alice@127.0.0.1>;tag=x\r\n'
        b"To: Bob <sip:bob@127.0.0.1>\r\n"
        b"Call-ID: c3\r\n"
        b"CSeq: 2 MESSAGE\r\n"
        b"Content-Type: text/plain;charset=UTF-8\r\n"
        b"Content-Length: 6\r\n\r\n"
        b"hello\n",
        Request(
            "MESSAGE",
            "sip:bob@127.0.0.1",
            [
                ("Via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK3"),
                ("From", '"Alice A." <sip:alice@127.0.0.1>;tag=x'),
                ("To", "Bob <sip:bob@127.0.0.1>"),
                ("Call-ID", "c3"),
                ("CSeq", "2 MESSAGE"),
                ("Content-Type", "text/plain;charset=UTF-8"),
                ("Content-Length", "6"),
            ],
            b"hello\n",
        ),
    ),
]


@pytest.mark.parametrize(("data", "message"), CASES)
def test_bytes_to_message(data: bytes, message: Request | Response) -> None:
    assert parse_message(data) == message


@pytest.mark.parametrize(("data", "message"), CASES)
def test_message_to_bytes(data: bytes, message: Request | Response) -> None:
    assert to_bytes(message) == data


@pytest.mark.parametrize("name", names("sip"))
def test_canonical_vectors_round_trip_byte_exact(name: str) -> None:
    data = load(name)
    message = parse_message(data)
    assert to_bytes(message) == data
    assert parse_message(to_bytes(message)) == message
    validate_message(message)


@pytest.mark.parametrize("name", names("sip"))
def test_canonical_vectors_stream_framing(name: str) -> None:
    data = load(name)
    assert parse_message(data, datagram=False) == parse_message(data)


def test_subscribe_accessors() -> None:
    msg = parse_message(SUBSCRIBE)
    assert isinstance(msg, Request)
    assert msg.method == "SUBSCRIBE"
    assert msg.call_id == "2010@watcherhost.example.com"
    assert (msg.cseq.seq, msg.cseq.method) == (17766, "SUBSCRIBE")
    assert str(msg.cseq) == "17766 SUBSCRIBE"
    assert msg.from_.tag == "xfg9"
    assert msg.to.tag is None
    via = msg.top_via
    assert (via.transport, via.host, via.port, via.branch, via.rport) == (
        "UDP",
        "127.0.0.1",
        5060,
        "z9hG4bKnashds7",
        True,
    )
    assert msg.vias == [via]
    assert msg.max_forwards == 70
    assert msg.expires == 600
    assert msg.event is not None
    assert msg.event.package == "presence"
    assert msg.event.id is None
    assert str(msg.event) == "presence"
    assert msg.subscription_state is None
    assert msg.sip_etag is None
    assert msg.sip_if_match is None
    assert msg.content_type is None
    [contact] = msg.contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.transport == "udp"
    assert not msg.contact_star
    assert isinstance(msg.request_uri, SipUri)
    assert msg.request_uri.aor == "sip:resource@example.com"
    assert repr(msg) == "<Request SUBSCRIBE sip:resource@example.com>"


def test_notify_and_publish_accessors() -> None:
    notify = parse_message(load("sip/notify"))
    state = notify.subscription_state
    assert state is not None
    assert (state.state, state.expires, state.reason) == ("active", 599, None)
    assert notify.content_type is not None
    assert notify.content_type.mime == "application/pidf+xml"
    assert notify.body.startswith(b"<?xml")
    refresh = parse_message(load("sip/publish_refresh"))
    assert refresh.sip_if_match == "dx200xyz"
    ok = parse_message(load("sip/publish_200"))
    assert isinstance(ok, Response)
    assert ok.sip_etag == "dx200xyz"
    assert ok.expires == 1800
    assert repr(ok) == "<Response 200 OK>"


def test_compact_forms_and_case_are_canonicalised() -> None:
    data = (
        b"NOTIFY sip:w@127.0.0.1 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKc\r\n"
        b"f: <sip:r@example.com>;tag=1\r\nt: <sip:w@example.com>;tag=2\r\n"
        b"i: cc\r\nCSEQ: 3 NOTIFY\r\no: presence;id=7\r\nu: presence, dialog\r\n"
        b"m: <sip:r@127.0.0.1>\r\nk: eventlist\r\ns: hi\r\ne: gzip\r\n"
        b"subscription-state: terminated;reason=timeout\r\nX-Custom:  opaque ; thing \r\n"
        b"c: application/pidf+xml\r\nl: 2\r\n\r\nab"
    )
    msg = parse_message(data)
    assert [name for name, _ in msg.headers] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Event",
        "Allow-Events",
        "Contact",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Subscription-State",
        "X-Custom",
        "Content-Type",
        "Content-Length",
    ]
    assert msg.headers.get("x-custom") == "opaque ; thing"
    assert msg.event is not None
    assert msg.event.id == "7"
    assert str(msg.event) == "presence;id=7"
    assert msg.token_list("Allow-Events") == ["presence", "dialog"]
    state = msg.subscription_state
    assert state is not None
    assert (state.state, state.reason, state.expires) == (
        "terminated",
        "timeout",
        None,
    )
    assert msg.body == b"ab"
    out = to_bytes(msg)
    assert b"\r\nVia: SIP/2.0/UDP" in out
    assert b"\r\nX-Custom: opaque ; thing\r\n" in out
    assert parse_message(out) == msg


def test_folding_and_lws() -> None:
    data = SUBSCRIBE.replace(b"Event: presence", b"Event:\r\n  presence\r\n\t;id=1")
    msg = parse_message(data)
    assert msg.headers.get("Event") == "presence ;id=1"
    assert msg.event is not None
    assert msg.event.id == "1"


def test_comma_lists_respect_quotes_and_angles() -> None:
    data = SUBSCRIBE.replace(
        b"Contact: <sip:watcher@127.0.0.1:5060;transport=udp>",
        b'Contact: "a, b" <sip:x,y@127.0.0.1>;q=0.5, <sip:z@127.0.0.1>\r\nContact: sip:w@h',
    )
    msg = parse_message(data)
    assert [c.display_name for c in msg.contacts] == ['"a, b"', None, None]
    assert [str(c.uri) for c in msg.contacts] == [
        "sip:x,y@127.0.0.1",
        "sip:z@127.0.0.1",
        "sip:w@h",
    ]
    assert msg.contacts[0].param("q") == "0.5"


def test_contact_star() -> None:
    data = load("sip/register").replace(
        b"Contact: <sip:bob@127.0.0.1:5060>\r\nExpires: 7200", b"Contact: *\r\nExpires: 0"
    )
    msg = parse_message(data)
    assert msg.contact_star
    assert msg.contacts == []
    assert msg.expires == 0


def test_leading_crlf_and_trailing_datagram_bytes() -> None:
    msg = parse_message(b"\r\n\r\n" + SUBSCRIBE + b"garbage")
    assert msg == parse_message(SUBSCRIBE)
    assert to_bytes(msg) == SUBSCRIBE


def test_missing_content_length_datagram_and_stream() -> None:
    data = SUBSCRIBE.replace(b"Content-Length: 0\r\n", b"") + b"body"
    assert parse_message(data).body == b"body"
    assert parse_message(data, datagram=False).body == b""


def test_header_block_without_blank_line() -> None:
    data = SUBSCRIBE.removesuffix(b"\r\n")
    assert parse_message(data) == parse_message(SUBSCRIBE)
    assert to_bytes(parse_message(data)) == SUBSCRIBE


def test_lowercase_sip_version_and_tel_uri() -> None:
    data = SUBSCRIBE.replace(b"sip:resource@example.com SIP/2.0", b"tel:+447700900123 sip/2.0")
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert isinstance(msg.request_uri, TelUri)
    assert msg.request_uri.aor == "tel:+447700900123"
    assert to_bytes(msg).startswith(b"SUBSCRIBE tel:+447700900123 SIP/2.0\r\n")


def test_repeated_parse_gives_equal_independent_messages() -> None:
    first = parse_message(SUBSCRIBE)
    second = parse_message(SUBSCRIBE)
    assert first == second
    first.headers.add("X-A", "1")
    assert first != second
    assert "X-A" not in second.headers


def test_line_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parser, "_CACHE_LIMIT", 3)
    monkeypatch.setattr(memo, "MEMO_LIMIT", 3)  # the R-URI cache is a memo table
    monkeypatch.setattr(memo, "MEMO_DROP", 1)
    parser._RURI_CACHE.clear()  # what earlier tests left: a table drops 1 per entry from here
    for i in range(8):
        parse_message(SUBSCRIBE.replace(b"Expires: 600", b"Expires: %d" % i))
        parse_message(SUBSCRIBE.replace(b"sip:resource@", b"sip:r%d@" % i))
        parse_message(SUBSCRIBE.replace(b"Max-Forwards", b"X-H%d: 1\r\nMax-Forwards" % i))
    assert len(parser._LINE_CACHE) <= 3
    assert len(parser._RURI_CACHE) <= 3
    assert len(parser._NAME_INFO) <= 3


# --- Invalid input: the error, and the exact reply make_response builds from it ------------------


def _replace(old: bytes, new: bytes) -> bytes:
    assert old in SUBSCRIBE
    return bytes(SUBSCRIBE.replace(old, new))


REPLY_HEAD = (
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"To: <sip:resource@example.com>;tag=srv1\r\n"
    b"From: <sip:watcher@example.com>;tag=xfg9\r\n"
    b"Call-ID: 2010@watcherhost.example.com\r\n"
    b"CSeq: 17766 SUBSCRIBE\r\n"
    b"Content-Length: 0\r\n\r\n"
)

INVALID_REQUESTS = [
    (_replace(b"Expires: 600", b"Expires: soon"), 400, "Malformed Expires"),
    (_replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400, "Malformed Max-Forwards"),
    (_replace(b"Event: presence", b"Event: presence;;id=1"), 400, "Malformed Event parameter"),
    (_replace(b"Accept: application/pidf+xml", b"Accept: pidf"), 400, "Malformed Content-Type"),
    (_replace(b"Accept: application/pidf+xml", b"Accept: a/b,,c/d"), 400, "Malformed Accept"),
    (_replace(b"Contact: <", b"Contact: <>, <"), 400, "Malformed Contact: spaces in addr-spec"),
    (_replace(b"Expires: 600", b"Expires: 600\r\nExpires: 60"), 400, "Multiple Expires headers"),
    (_replace(b"Expires: 600", b"Allow: INVITE, BAD METHOD"), 400, "Malformed Allow"),
    (_replace(b"Expires: 600", b"Retry-After: 99999999999"), 400, "Retry-After out of range"),
    (_replace(b"Expires: 600", b"Retry-After: x"), 400, "Malformed Retry-After"),
    (_replace(b"Expires: 600", b"SIP-If-Match: a b"), 400, "Malformed SIP-If-Match"),
    (_replace(b"Expires: 600", b"Date: yesterday"), 400, "Malformed Date"),
    (_replace(b"Expires: 600", b"Min-Expires: -1"), 400, "Malformed Min-Expires"),
    (_replace(b"Expires: 600", b"Route: <sip:p@h>,"), 400, "Malformed Route"),
    (
        _replace(b"Expires: 600", b"Record-Route: sip:a b"),
        400,
        "Malformed Record-Route: spaces in addr-spec",
    ),
    (_replace(b"Expires: 600", b"Path: <sip:p@h"), 400, "Malformed Path: missing '>'"),
    (
        _replace(b"Expires: 600", b"Subscription-State: "),
        400,
        "Malformed Subscription-State",
    ),
    (_replace(b"Expires: 600", b"Content-Type: text"), 400, "Malformed Content-Type"),
    (_replace(b"17766 SUBSCRIBE", b"17766 NOTIFY"), 400, "CSeq method mismatch"),
    (
        _replace(b"Content-Length: 0", b"Content-Length: 5"),
        400,
        "Content-Length larger than message",
    ),
    (_replace(b"Content-Length: 0", b"Content-Length: 0x1"), 400, "Malformed Content-Length"),
    (
        _replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 0"),
        400,
        "Multiple Content-Length headers",
    ),
    (
        _replace(b"sip:resource@example.com SIP", b"sip:resource@example.com?x=y SIP"),
        400,
        "Request-URI must not contain headers",
    ),
    (
        _replace(b"sip:resource@example.com SIP", b"sip:res@ex ample.com SIP"),
        400,
        "Malformed Request-Line",
    ),
    (_replace(b"sip:resource@example.com SIP", b"sip:[::1 SIP"), 400, "Malformed IPv6 reference"),
    (_replace(b"sip:resource@example.com SIP", b"sip:a@b:99999 SIP"), 400, "Malformed port"),
    (_replace(b"sip:resource@example.com SIP", b"sip:a@b;=x SIP"), 400, "Malformed URI parameter"),
    (_replace(b"sip:resource@example.com SIP", b"sip:a@b?x SIP"), 400, "Malformed URI headers"),
    (_replace(b"sip:resource@example.com SIP", b"sip:a b@c:d SIP"), 400, "Malformed Request-Line"),
    (_replace(b"sip:resource@example.com SIP", b"sip:a%zz@b SIP"), 400, "Malformed URI user part"),
    (_replace(b"sip:resource@example.com SIP", b"sip:a@b_c SIP"), 400, "Malformed host"),
    (_replace(b"sip:resource@example.com SIP", b"sip:a@[::1]x SIP"), 400, "Malformed host"),
    (_replace(b"sip:resource@example.com SIP", b"tel:xyz SIP"), 400, "Malformed tel URI"),
    (_replace(b"sip:resource@example.com SIP", b"1x:y SIP"), 400, "Malformed URI"),
    (_replace(b"sip:resource@example.com SIP", b"x:a<b SIP"), 400, "Malformed URI"),
    (
        _replace(
            b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnashds7;rport",
            b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnashds7;rport, SIP/2.0/UDP h;ttl=x",
        ),
        400,
        "Malformed Via",
    ),
    (
        _replace(b"Call-ID: 2010@watcherhost.example.com", b"Call-ID: a@b@c"),
        400,
        "Malformed Call-ID",
    ),
    (
        _replace(b"To: <sip:resource@example.com>", b"To: <sip:resource@example.com> x"),
        400,
        "Malformed To",
    ),
]


@pytest.mark.parametrize(("data", "status", "reason"), INVALID_REQUESTS)
def test_invalid_requests_and_their_replies(data: bytes, status: int, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    error = info.value
    assert (error.status, error.reason) == (status, reason)
    if status == 400 and "Request-Line" not in reason:
        assert isinstance(error, ParseFailure)
        partial = error.partial
        assert isinstance(partial, Request)
        reply = make_response(partial, error.status, error.reason, to_tag="srv1")
        if "To" in reason or "Via" in reason or "Call-ID" in reason:
            return  # the reply copies the (bad) header verbatim; nothing more to compare
        cseq = re.search(rb"CSeq: [^\r]*", data)
        assert cseq is not None
        head = REPLY_HEAD.replace(b"CSeq: 17766 SUBSCRIBE", cseq.group())
        assert to_bytes(reply) == b"SIP/2.0 400 " + reason.encode() + b"\r\n" + head


def test_unknown_method_with_mismatch_gets_501_and_its_reply() -> None:
    data = _replace(b"SUBSCRIBE sip:", b"FROBNICATE sip:")
    with pytest.raises(ParseFailure) as info:
        parse_message(data)
    assert (info.value.status, info.value.reason) == (501, "CSeq method mismatch")
    partial = info.value.partial
    assert isinstance(partial, Request)
    reply = make_response(partial, 501, to_tag="srv1", headers=[("Allow", "SUBSCRIBE, NOTIFY")])
    assert to_bytes(reply) == (
        b"SIP/2.0 501 Not Implemented\r\n"
        + REPLY_HEAD.replace(b"Content-Length: 0", b"Allow: SUBSCRIBE, NOTIFY\r\nContent-Length: 0")
    )


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"", 400, "Empty message"),
        (b"\r\n\r\n", 400, "Empty message"),
        (b"\xff\xfe" + SUBSCRIBE, 400, "Invalid UTF-8 in header section"),
        (b"x" * 70000, 513, "Message too large"),
        (SUBSCRIBE.replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1), 505, "Version Not Supported"),
        (SUBSCRIBE.replace(b" SIP/2.0\r\n", b" HTTP/1.1\r\n", 1), 400, "Malformed SIP-Version"),
        (SUBSCRIBE.replace(b"SUBSCRIBE sip:", b"SUB(SCRIBE sip:", 1), 400, "Malformed method"),
        (
            SUBSCRIBE.replace(b"SUBSCRIBE sip:", b" SUBSCRIBE sip:", 1),
            400,
            "Malformed Request-Line",
        ),
        (SUBSCRIBE.replace(b"Expires: 600", b"Expires 600"), 400, "Malformed header line"),
        (SUBSCRIBE.replace(b"Expires: 600", b": 600"), 400, "Malformed header line"),
        (SUBSCRIBE.replace(b"Expires: 600", b"Exp(ires: 600"), 400, "Malformed header name"),
        (SUBSCRIBE.replace(b"Expires: 600", b"Expires: 6\n00"), 400, "Malformed header line"),
        (SUBSCRIBE.replace(b"Expires: 600", b"Expires: 6\r00"), 400, "Malformed header line"),
        (b"SIP/2.0 200\r\n\r\n", 400, "Malformed Status-Line"),
        (b"SIP/2.0 2000 OK\r\n\r\n", 400, "Invalid status code"),
        (b"SIP/2.0 099 OK\r\n\r\n", 400, "Invalid status code"),
        (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n", 400, "Missing From"),
    ],
)
def test_unanswerable_input(data: bytes, status: int, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert (info.value.status, info.value.reason) == (status, reason)


def test_max_size_is_configurable() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(SUBSCRIBE, max_size=100)
    assert info.value.status == 513
    assert parse_message(SUBSCRIBE, max_size=len(SUBSCRIBE)) is not None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnashds7;rport\r\n", b""),
        (b"From: <sip:watcher@example.com>;tag=xfg9\r\n", b""),
        (b"To: <sip:resource@example.com>\r\n", b""),
        (b"Call-ID: 2010@watcherhost.example.com\r\n", b""),
        (b"CSeq: 17766 SUBSCRIBE\r\n", b""),
    ],
)
def test_missing_mandatory_headers(old: bytes, new: bytes) -> None:
    name = old.split(b":")[0].decode()
    with pytest.raises(ParseFailure, match=f"^Missing {name}$"):
        parse_message(SUBSCRIBE.replace(old, new))


@pytest.mark.parametrize("name", ["From", "To", "Call-ID", "CSeq", "Max-Forwards", "Event"])
def test_single_valued_headers_appear_once(name: str) -> None:
    line = next(line for line in SUBSCRIBE.split(b"\r\n") if line.startswith(name.encode() + b":"))
    data = SUBSCRIBE.replace(line, line + b"\r\n" + line)
    with pytest.raises(ParseFailure, match=f"^Multiple {name} headers$"):
        parse_message(data)


def test_validate_message_on_built_messages() -> None:
    message = parse_message(SUBSCRIBE)
    validate_message(message)
    message.headers.set("Max-Forwards", "x")
    message.invalidate()
    with pytest.raises(SipParseError, match="Max-Forwards"):
        validate_message(message)


# --- The fast path proves, the general path decides: they must agree -----------------------------


def test_fast_table_covers_exactly_the_validated_headers() -> None:
    assert set(FAST_CHECKS) == set(VALIDATORS) | set(CORE_VALIDATORS)


def _general(name: str) -> Check:
    return VALIDATORS.get(name) or CORE_VALIDATORS[name]


SAMPLES = {
    "Via": [
        "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport",
        "SIP/2.0/TLS [2001:db8::1]:5061;received=[2001:db8::2];rport=5;ttl=3;maddr=h",
        'SIP/2.0/TCP a.b;x="q", SIP/2.0/UDP c;branch=d',
        "SIP/2.0/UDP h;branch",
        "SIP/2.0/UDP h;Branch",
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h:65536",
        "SIP/2.0/UDP h:65535",
    ],
    "From": [
        '"A" <sip:a@b>;tag=1',
        "A B <sips:a:pw@b:5060;lr>",
        "sip:a@b;tag=1",
        "<sip:a@b?x=y>",
        'sip:a@b;x="<"',
        "<tel:+1>",
    ],
    "Contact": ["*", "<sip:a@b>, <sip:c@d>;q=1", "sip:a,b@c"],
    "CSeq": ["1 INVITE", "4294967296 INVITE", "1  INVITE"],
    "Max-Forwards": ["0", "255", "256", "070"],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in SAMPLES.items() for v in vs])
def test_fast_match_implies_general_accepts(name: str, value: str) -> None:
    if FAST_CHECKS[name](value) is not None:
        _general(name)(value)


GOOD = {
    "Via": "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport, SIP/2.0/TCP [::1];received=h;ttl=1",
    "Call-ID": "abc@127.0.0.1",
    "From": '"A b" <sip:u:pw@h.example.com:5060;lr;x=y>;tag=1;q="v"',
    "To": "sip:u@h;tag=2",
    "CSeq": "1 INVITE",
    "Contact": "<sip:a@b>;expires=5, B <sips:c@[::1]>",
    "Route": "<sip:p1@h;lr>, <sip:p2@h:5061;lr>",
    "Record-Route": "<sip:p1@h;lr>",
    "Path": "<sip:p1@h;lr>",
    "Max-Forwards": "70",
    "Expires": "3600",
    "Min-Expires": "60",
    "Content-Type": "application/pidf+xml;charset=utf-8",
    "Event": "presence;id=1",
    "Subscription-State": "active;expires=60",
    "SIP-ETag": "dx200xyz",
    "SIP-If-Match": "dx200xyz",
    "Date": "Sat, 13 Nov 2010 23:29:00 GMT",
    "Accept": "application/pidf+xml, multipart/related;type=x",
    "Retry-After": "120",
    "Allow": "INVITE, ACK",
    "Supported": "eventlist",
    "Require": "100rel",
    "Proxy-Require": "foo",
    "Unsupported": "bar",
    "Allow-Events": "presence, dialog",
}
_NOISE = [*list("azAZ09.-_!%*+`'~ \t;=,:@<>\"\\/[]?&$()#\x00é"), "sip:", "SIP/2.0/", "%4", "%41"]


@st.composite
def _mutated(draw: st.DrawFn, name: str) -> str:
    text = GOOD[name]
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 3)))
        text = text[:i] + draw(st.sampled_from(["", *_NOISE])) + text[j:]
    return text.strip(" \t")


def test_good_samples_take_the_fast_path() -> None:
    assert set(GOOD) == set(FAST_CHECKS)
    for name, value in GOOD.items():
        assert FAST_CHECKS[name](value) is not None, name
        _general(name)(value)


@settings(max_examples=1500, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(FAST_CHECKS)))
def test_fast_checks_accept_a_subset_of_the_general_grammar(data: st.DataObject, name: str) -> None:
    value = data.draw(_mutated(name))
    if FAST_CHECKS[name](value) is not None:
        _general(name)(value)


@settings(max_examples=500, derandomize=True)
@given(
    uri=st.sampled_from(["sip:a@b", "sips:u:p@h.example.com:5061;lr;m=x", "sip:[::1]:5"]),
    data=st.data(),
)
def test_fast_request_uri_is_a_valid_request_uri(uri: str, data: st.DataObject) -> None:
    for _ in range(data.draw(st.integers(0, 2))):
        i = data.draw(st.integers(0, len(uri)))
        uri = uri[:i] + data.draw(st.sampled_from(_NOISE)) + uri[i:]
    message = SUBSCRIBE.replace(b"sip:resource@example.com SIP", uri.encode() + b" SIP")
    try:
        parsed = parse_message(message)
    except SipParseError:
        assert grammar.FAST_SIP_URI.fullmatch(uri) is None or " " in uri
        return
    validate_message(parsed)


# --- Hypothesis: parse(to_bytes(m)) == m --------------------------------------------------------

_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12
)
_host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True),
    st.just("127.0.0.1"),
    st.just("[2001:db8::1]"),
)
_port = st.one_of(st.none(), st.integers(1, 65535))
_user = st.text(alphabet="abcxyz0123456789-_.", min_size=1, max_size=10)


@st.composite
def _sip_uri(draw: st.DrawFn) -> str:
    user = draw(st.one_of(st.none(), _user))
    port = draw(_port)
    params = draw(st.lists(_token, max_size=2))
    return (
        "sip:"
        + (f"{user}@" if user else "")
        + draw(_host)
        + (f":{port}" if port else "")
        + "".join(f";{p}" for p in params)
    )


@st.composite
def _name_addr(draw: st.DrawFn, tag: bool) -> str:
    display = draw(
        st.one_of(st.just(""), _token.map(lambda t: t + " "), _token.map(lambda t: f'"{t}" '))
    )
    out = f"{display}<{draw(_sip_uri())}>"
    assert isinstance(out, str)
    if tag:
        out += f";tag={draw(_token)}"
    return out


_extra_header = st.tuples(
    st.sampled_from(["Subject", "User-Agent", "X-Thing", "Expires", "Event", "Allow", "Accept"]),
    st.text(alphabet="abc 0123;=/", max_size=12),
).filter(lambda nv: nv[1] == nv[1].strip())


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    method = draw(st.sampled_from(["SUBSCRIBE", "NOTIFY", "PUBLISH", "REGISTER", "OPTIONS", "FOO"]))
    headers = [
        (
            "Via",
            f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(_host)}"
            f";branch=z9hG4bK{draw(_token)}",
        ),
        ("From", draw(_name_addr(True))),
        ("To", draw(_name_addr(draw(st.booleans())))),
        ("Call-ID", draw(_token)),
        ("CSeq", f"{draw(st.integers(0, 2**31))} {method}"),
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
    ]
    extras = draw(st.lists(_extra_header, max_size=4, unique_by=lambda nv: nv[0]))
    body = draw(st.binary(max_size=40))
    for name, value in extras:
        headers.append((name, value))
    headers.append(("Content-Length", str(len(body))))
    if draw(st.booleans()):
        return Request(method, draw(_sip_uri()), headers, body)
    code = draw(st.integers(100, 699))
    return Response(code, draw(st.text(alphabet="abc OK", max_size=10)), headers, body)


@settings(max_examples=200, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_parse_of_serialised_message_is_the_message(message: Request | Response) -> None:
    try:
        validate_message(message)
    except SipParseError:
        with pytest.raises(SipParseError):
            parse_message(to_bytes(message))
        return
    data = to_bytes(message)
    parsed = parse_message(data)
    assert parsed == message
    assert to_bytes(parsed) == data


def test_known_methods_skip_the_method_regex() -> None:
    assert "SUBSCRIBE" in parser.KNOWN_METHODS
    assert re.fullmatch(grammar.TOKEN, "SUBSCRIBE")
