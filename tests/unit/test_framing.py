"""StreamBuffer: Content-Length framing of TCP/TLS byte streams (RFC 3261 §18.3)."""

from __future__ import annotations

import re

import pytest
from vectors import load, names, wire

from presence_sip.sip import SipParseError, StreamBuffer, parse_message

_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$")


def _framed(data: bytes) -> bytes | None:
    """The message a framer must cut from ``data``: head + Content-Length octets, or None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lengths = _LENGTH.findall(data[:end].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" "))
    if len(lengths) != 1 or end + 4 + int(lengths[0]) > len(data):
        return None
    return data[: end + 4 + int(lengths[0])]


def _all_vectors() -> list[tuple[str, bytes]]:
    out = [(n, load(n)) for n in names("rfc4475") + names("sip")]
    out += [(n, wire(n)) for n in names("rfc5118")]
    return out


FRAMEABLE = [(n, d, f) for n, d in _all_vectors() if (f := _framed(d)) is not None]


def test_most_vectors_are_frameable() -> None:
    assert len(FRAMEABLE) >= 50
    assert "rfc4475/mpart01" in [n for n, _, _ in FRAMEABLE]


def _drain(buffer: StreamBuffer) -> list[bytes]:
    out = []
    while (message := buffer.next_message()) is not None:
        out.append(message)
    return out


@pytest.mark.parametrize(("name", "data", "framed"), FRAMEABLE, ids=[n for n, _, _ in FRAMEABLE])
def test_vector_fed_whole(name: str, data: bytes, framed: bytes) -> None:
    buffer = StreamBuffer()
    buffer.feed(framed)
    assert _drain(buffer) == [framed]
    assert len(buffer) == 0


@pytest.mark.parametrize(("name", "data", "framed"), FRAMEABLE, ids=[n for n, _, _ in FRAMEABLE])
def test_vector_fed_byte_by_byte(name: str, data: bytes, framed: bytes) -> None:
    buffer = StreamBuffer()
    out = []
    for i in range(len(framed)):
        buffer.feed(framed[i : i + 1])
        out.extend(_drain(buffer))
        if i < len(framed) - 1:
            assert out == []
    assert out == [framed]


@pytest.mark.parametrize(("name", "data", "framed"), FRAMEABLE, ids=[n for n, _, _ in FRAMEABLE])
def test_vector_with_trailing_bytes(name: str, data: bytes, framed: bytes) -> None:
    trailing = b"\r\n\r\nOPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n"
    buffer = StreamBuffer()
    buffer.feed(framed + trailing)
    assert buffer.next_message() == framed
    assert buffer.next_message() is None
    assert buffer.pings == 2
    assert len(buffer) == len(trailing) - 4


@pytest.mark.parametrize(("name", "data", "framed"), FRAMEABLE, ids=[n for n, _, _ in FRAMEABLE])
def test_stream_and_datagram_parses_agree(name: str, data: bytes, framed: bytes) -> None:
    try:
        expected: object = parse_message(data)
    except SipParseError as exc:
        expected = exc.status
    try:
        got: object = parse_message(framed, datagram=False)
    except SipParseError as exc:
        got = exc.status
    assert got == expected


def test_two_messages_in_one_segment_and_keepalives() -> None:
    one = load("sip/subscribe")
    two = load("sip/notify")
    buffer = StreamBuffer()
    buffer.feed(b"\r\n\r\n" + one + b"\r\n" + two[:10])
    assert buffer.next_message() == one
    assert buffer.next_message() is None
    buffer.feed(two[10:])
    assert buffer.next_message() == two
    assert buffer.pings == 3


def test_clerr_waits_for_more_data_on_a_stream() -> None:
    buffer = StreamBuffer()
    buffer.feed(load("rfc4475/clerr"))
    assert buffer.next_message() is None


@pytest.mark.parametrize(
    ("data", "reason", "status"),
    [
        (load("rfc4475/ncl"), "Malformed Content-Length", 400),
        (load("rfc4475/mcl01"), "Multiple Content-Length headers", 400),
        (load("rfc4475/inv2543"), "Missing Content-Length", 400),
        (
            load("sip/subscribe").replace(b"Content-Length: 0", b"Content-Length: 70000"),
            "Message too large",
            513,
        ),
        (b"OPTIONS " + b"x" * 70000, "Message too large", 513),
    ],
)
def test_framing_errors_are_sticky(data: bytes, reason: str, status: int) -> None:
    buffer = StreamBuffer()
    buffer.feed(data)
    with pytest.raises(SipParseError, match=f"^{reason}$") as info:
        buffer.next_message()
    assert info.value.status == status
    buffer.feed(load("sip/subscribe"))
    assert len(buffer) == 0
    with pytest.raises(SipParseError, match=f"^{reason}$"):
        buffer.next_message()


def test_size_cap_is_configurable() -> None:
    buffer = StreamBuffer(max_size=100)
    buffer.feed(load("sip/subscribe"))
    with pytest.raises(SipParseError) as info:
        buffer.next_message()
    assert info.value.status == 513


def test_folded_content_length_is_found() -> None:
    data = load("sip/notify").replace(b"Content-Length: ", b"Content-Length:\r\n ")
    buffer = StreamBuffer()
    buffer.feed(data)
    message = buffer.next_message()
    assert message is not None
    assert message == data
    assert parse_message(message, datagram=False).body == parse_message(load("sip/notify")).body
