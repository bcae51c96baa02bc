"""message -> bytes: canonical form, Content-Length, the reused header block, make_response."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from vectors import load, names

from presence_sip.sip import (
    Headers,
    Request,
    Response,
    StatusCode,
    make_response,
    parse_message,
    reason_phrase,
    to_bytes,
)

SUBSCRIBE = load("sip/subscribe")


def test_built_request_gets_content_length() -> None:
    request = Request(
        "OPTIONS", "sip:a@127.0.0.1", [("Via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1")]
    )
    assert to_bytes(request) == (
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_stale_and_duplicate_content_length_are_fixed() -> None:
    response = Response(
        200,
        "OK",
        [("Content-Length", "99"), ("l", "3"), ("Content-Type", "text/plain")],
        b"abc",
    )
    assert to_bytes(response) == (
        b"SIP/2.0 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabc"
    )
    response.headers.set("Content-Length", "0003")
    assert b"\r\nContent-Length: 0003\r\n" in to_bytes(response)
    response.headers.set("Content-Length", "\u0663")  # a non-ASCII digit is not a length
    assert b"\r\nContent-Length: 3\r\n" in to_bytes(response)


def test_compact_and_odd_spacing_come_out_canonical() -> None:
    data = (
        b"SIP/2.0 200 OK\r\n"
        b"v:SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        b"f:   <sip:a@b>;tag=1\r\nt: <sip:c@d>;tag=2 \r\n"
        b"i: x\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
    )
    assert to_bytes(parse_message(data)) == (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n"
        b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )


def test_folded_header_comes_out_on_one_line() -> None:
    data = SUBSCRIBE.replace(b"Event: presence", b"Event: presence\r\n ;id=4")
    assert b"\r\nEvent: presence ;id=4\r\n" in to_bytes(parse_message(data))


@pytest.mark.parametrize("name", names("sip"))
def test_edits_after_parse_are_serialised(name: str) -> None:
    message = parse_message(load(name))
    message.headers.add("X-Added", "1")
    assert to_bytes(message).endswith(b"\r\nX-Added: 1\r\n\r\n" + message.body)


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h.prepend("Via", "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKp"),
        lambda h: h.set("Max-Forwards", "69"),
        lambda h: h.remove("Expires"),
        lambda h: h.pop_first_value("Via"),
        lambda h: h.add("Route", "<sip:p@127.0.0.1;lr>"),
    ],
)
def test_every_header_edit_drops_the_reused_block(edit: Callable[[Headers], object]) -> None:
    message = parse_message(SUBSCRIBE)
    assert isinstance(message, Request)
    before = to_bytes(message)
    edit(message.headers)
    after = to_bytes(message)
    assert after != before
    assert after == to_bytes(Request(message.method, message.uri, list(message.headers)))


def test_body_and_start_line_edits() -> None:
    message = parse_message(SUBSCRIBE)
    assert isinstance(message, Request)
    message.body = b"xyz"
    assert to_bytes(message).endswith(b"\r\nContent-Length: 3\r\n\r\nxyz")
    message.body = b""
    message.uri = "sip:other@127.0.0.1"
    assert to_bytes(message) == SUBSCRIBE.replace(
        b"sip:resource@example.com", b"sip:other@127.0.0.1", 1
    )


def test_replaced_headers_object_is_serialised() -> None:
    message = parse_message(SUBSCRIBE)
    message.headers = Headers([("Call-ID", "x")])
    assert (
        to_bytes(message)
        == b"SUBSCRIBE sip:resource@example.com SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    )


def test_copied_headers_keep_and_then_drop_the_block() -> None:
    message = parse_message(SUBSCRIBE)
    assert isinstance(message, Request)
    copy = message.headers.copy()
    assert copy == message.headers
    assert to_bytes(Request(message.method, message.uri, copy)) == SUBSCRIBE
    copy.add("X", "y")
    assert to_bytes(message) == SUBSCRIBE


def test_utf8_reason_and_values() -> None:
    response = Response(480, "Нет", [("Subject", "café")])
    assert to_bytes(response) == (
        "SIP/2.0 480 Нет\r\nSubject: café\r\nContent-Length: 0\r\n\r\n".encode()
    )


# --- make_response ------------------------------------------------------------------------------


def test_make_response_copies_and_tags() -> None:
    request = parse_message(SUBSCRIBE)
    assert isinstance(request, Request)
    reply = make_response(request, 200, to_tag="t1", headers=[("Expires", "600")])
    assert to_bytes(reply) == (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnashds7;rport\r\n"
        b"To: <sip:resource@example.com>;tag=t1\r\n"
        b"From: <sip:watcher@example.com>;tag=xfg9\r\n"
        b"Call-ID: 2010@watcherhost.example.com\r\n"
        b"CSeq: 17766 SUBSCRIBE\r\n"
        b"Expires: 600\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_make_response_keeps_an_existing_to_tag_and_never_tags_100() -> None:
    data = load("sip/notify")
    request = parse_message(data)
    assert isinstance(request, Request)
    reply = make_response(request, 200, to_tag="new")
    assert reply.headers.get("To") == "<sip:watcher@example.com>;tag=xfg9"
    trying = make_response(
        Request("INVITE", "sip:a@b", [*request.headers, ("Timestamp", "54")]), 100, to_tag="t"
    )
    assert trying.reason == "Trying"
    assert trying.headers.get("To") == "<sip:watcher@example.com>;tag=xfg9"
    assert trying.headers.get("Timestamp") == "54"
    ok = make_response(Request("INVITE", "sip:a@b", [("Timestamp", "54")]), 200)
    assert "Timestamp" not in ok.headers


def test_make_response_body_and_custom_reason() -> None:
    request = parse_message(SUBSCRIBE)
    assert isinstance(request, Request)
    reply = make_response(request, 489, "Bad Event Package", body=b"x")
    assert (reply.status, reply.reason, reply.body) == (489, "Bad Event Package", b"x")
    assert reply.headers.get("Content-Length") == "1"
    assert reply.headers.get("To") == "<sip:resource@example.com>"


def test_make_response_copies_every_via_in_order() -> None:
    data = load("rfc4475/transports")
    request = parse_message(data)
    assert isinstance(request, Request)
    reply = make_response(request, 200, to_tag="x")
    assert [str(v) for v in reply.vias] == [str(v) for v in request.vias]


# --- status codes -------------------------------------------------------------------------------


def test_reason_phrases() -> None:
    assert reason_phrase(StatusCode.BAD_EVENT) == "Bad Event"
    assert reason_phrase(513) == "Message Too Large"
    assert [reason_phrase(c) for c in (183, 299, 399, 499, 599, 699)] == [
        "Provisional",
        "OK",
        "Redirect",
        "Client Error",
        "Server Error",
        "Global Failure",
    ]
