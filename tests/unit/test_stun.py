"""The STUN codec of RFC 5626 §8 keep-alives (``presence_sip/stun.py``), byte for byte.

The three messages of RFC 5769 (Test Vectors for STUN, April 2010: §2.1 a Binding request, §2.2
and §2.3 its success response with an IPv4 and an IPv6 XOR-MAPPED-ADDRESS) are the published
bytes; they check FINGERPRINT and XOR-MAPPED-ADDRESS against values computed by others.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vectors import load, names, wire

from presence_sip import stun


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


TRANSACTION_ID = hexbytes("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")

RFC5769_REQUEST = hexbytes(
    """
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
    """
)
"""§2.1: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY, FINGERPRINT."""

RFC5769_IPV4_RESPONSE = hexbytes(
    """
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96
    """
)
"""§2.2: XOR-MAPPED-ADDRESS 192.0.2.1 port 32853."""

RFC5769_IPV6_RESPONSE = hexbytes(
    """
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c
    """
)
"""§2.3: XOR-MAPPED-ADDRESS 2001:db8:1234:5678:11:2233:4455:6677 port 32853."""

VECTORS = [RFC5769_REQUEST, RFC5769_IPV4_RESPONSE, RFC5769_IPV6_RESPONSE]


def bare_request(transaction_id: bytes = TRANSACTION_ID) -> bytes:
    """A Binding request without attributes: what RFC 5626 §8 keep-alives need."""
    return struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction_id


# -- the RFC 5769 vectors -----------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=["request", "ipv4", "ipv6"])
def test_fingerprint_matches_the_rfc_5769_vectors(vector: bytes) -> None:
    assert stun.is_stun(vector)
    assert stun.fingerprint(vector[:-8]).to_bytes(4, "big") == vector[-4:]
    assert stun.attributes(vector) is not None  # (its FINGERPRINT checks out)


@pytest.mark.parametrize(
    ("vector", "host"),
    [
        (RFC5769_IPV4_RESPONSE, "192.0.2.1"),
        (RFC5769_IPV6_RESPONSE, "2001:db8:1234:5678:11:2233:4455:6677"),
    ],
    ids=["ipv4", "ipv6"],
)
def test_xor_mapped_address_matches_the_rfc_5769_vectors(vector: bytes, host: str) -> None:
    found = stun.attributes(vector)
    assert found is not None
    [value] = [value for kind, value in found if kind == stun.XOR_MAPPED_ADDRESS]
    assert stun.xor_mapped_address(host, 32853, TRANSACTION_ID) == value


def test_an_ipv4_mapped_ipv6_source_is_given_as_ipv4() -> None:
    """A dual-stack socket sees an IPv4 client as ::ffff:a.b.c.d; the client knows itself by
    its IPv4 address."""
    assert stun.xor_mapped_address("::ffff:192.0.2.1", 32853, TRANSACTION_ID) == hexbytes(
        "00 01 a1 47 e1 12 a6 43"
    )


def test_the_rfc_5769_request_gets_420_for_its_ice_priority() -> None:
    """PRIORITY (0x0024, RFC 8445) is comprehension-required and not ours; USERNAME and
    MESSAGE-INTEGRITY are RFC 5389's own (ignored: no authentication, RFC 5626 §8);
    SOFTWARE and ICE-CONTROLLED are comprehension-optional."""
    answer = stun.binding_response(RFC5769_REQUEST, "192.0.2.1", 32853)
    assert answer is not None
    body = (
        hexbytes("00 09 00 15 00 00 04 14") + b"Unknown Attribute" + bytes(3)
        + hexbytes("00 0a 00 02 00 24 00 00")
    )  # fmt: skip
    head = hexbytes("01 11 00 2c 21 12 a4 42") + TRANSACTION_ID
    crc = zlib.crc32(head + body) ^ 0x5354554E
    assert answer == head + body + hexbytes("80 28 00 04") + crc.to_bytes(4, "big")


# -- Binding requests answered ------------------------------------------------------------------


def test_a_binding_request_gets_its_address_same_transaction_and_a_fingerprint() -> None:
    answer = stun.binding_response(bare_request(), "192.0.2.1", 32853)
    head = hexbytes("01 01 00 14 21 12 a4 42") + TRANSACTION_ID
    mapped = hexbytes("00 20 00 08 00 01 a1 47 e1 12 a6 43")  # RFC 5769 §2.2's
    crc = zlib.crc32(head + mapped) ^ 0x5354554E
    assert answer == head + mapped + hexbytes("80 28 00 04") + crc.to_bytes(4, "big")
    assert stun.is_stun(answer)
    assert stun.attributes(answer) is not None  # a valid FINGERPRINT, computed as §15.5 says


def test_an_ipv6_source_gets_an_ipv6_xor_mapped_address() -> None:
    answer = stun.binding_response(bare_request(), "2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert answer is not None
    assert answer[:4] == hexbytes("01 01 00 20")  # 24 + 8 bytes of attributes
    assert answer[20:44] == RFC5769_IPV6_RESPONSE[36:60]  # the vector's XOR-MAPPED-ADDRESS


def test_a_request_with_a_right_fingerprint_and_optional_attributes_is_answered() -> None:
    request = stun.encode(0x0001, TRANSACTION_ID, [(0x8022, b"keep-alive client")])
    answer = stun.binding_response(request, "127.0.0.1", 5070)
    assert answer is not None
    assert answer[:2] == b"\x01\x01"
    assert answer[8:20] == TRANSACTION_ID


def test_attributes_after_message_integrity_are_ignored() -> None:
    """RFC 5389 §15.4: only a FINGERPRINT counts after MESSAGE-INTEGRITY."""
    request = stun.encode(
        0x0001, TRANSACTION_ID, [(stun.MESSAGE_INTEGRITY, bytes(20)), (0x0024, bytes(4))]
    )
    answer = stun.binding_response(request, "127.0.0.1", 5070)
    assert answer is not None
    assert answer[:2] == b"\x01\x01"


def test_each_unknown_attribute_is_listed_once() -> None:
    request = stun.encode(
        0x0001, TRANSACTION_ID, [(0x0024, bytes(4)), (0x7FFF, b""), (0x0024, bytes(4))]
    )
    answer = stun.binding_response(request, "127.0.0.1", 5070)
    assert answer is not None
    found = stun.attributes(answer)
    assert found is not None
    assert dict(found)[stun.UNKNOWN_ATTRIBUTES] == hexbytes("00 24 7f ff")


# -- not answered -------------------------------------------------------------------------------


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def fingerprint_not_last() -> bytes:
    """A FINGERPRINT right for what precedes it, and a SOFTWARE after it (RFC 5389 §15.5)."""
    head = struct.pack("!HHI", 0x0001, 16, 0x2112A442) + TRANSACTION_ID
    crc = zlib.crc32(head) ^ 0x5354554E
    return (
        head + hexbytes("80 28 00 04") + crc.to_bytes(4, "big") + hexbytes("80 22 00 04") + b"abcd"
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(flip_last_byte(RFC5769_REQUEST), id="rfc5769-request-wrong-fingerprint"),
        pytest.param(
            flip_last_byte(stun.encode(0x0001, TRANSACTION_ID, [])), id="wrong-fingerprint"
        ),
        pytest.param(fingerprint_not_last(), id="fingerprint-not-last"),
        pytest.param(
            struct.pack("!HHI", 0x0001, 8, 0x2112A442)
            + TRANSACTION_ID
            + hexbytes("80 22 00 08")
            + bytes(4),
            id="attribute-overruns-the-message",
        ),
        pytest.param(
            struct.pack("!HHI", 0x0001, 4, 0x2112A442) + TRANSACTION_ID + hexbytes("00 20 00"),
            id="length-not-a-multiple-of-4",
        ),
        pytest.param(bare_request()[:-1], id="shorter-than-a-header"),
        pytest.param(
            struct.pack("!HHI", 0x0001, 4, 0x2112A442) + TRANSACTION_ID, id="length-too-long"
        ),
        pytest.param(bare_request() + bytes(4), id="length-too-short"),
        pytest.param(struct.pack("!HHI", 0x0001, 0, 0x2112A443) + TRANSACTION_ID, id="cookie"),
        pytest.param(struct.pack("!HHI", 0x0011, 0, 0x2112A442) + TRANSACTION_ID, id="indication"),
        pytest.param(RFC5769_IPV4_RESPONSE, id="success-response"),
        pytest.param(stun.encode(0x0111, TRANSACTION_ID, []), id="error-response"),
        pytest.param(struct.pack("!HHI", 0x0003, 0, 0x2112A442) + TRANSACTION_ID, id="allocate"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\r\n", id="crlf"),
    ],
)
def test_not_answered(data: bytes) -> None:
    assert stun.binding_response(data, "192.0.2.1", 32853) is None


@pytest.mark.parametrize(
    ("data", "framed"),
    [
        (bare_request(), True),
        (bare_request()[:-1], False),
        (bare_request() + bytes(4), False),  # its length says 0
        (b"\x40" + bare_request()[1:], False),  # a first byte with a bit of the two set
        (struct.pack("!HHI", 0x0001, 0, 0x2112A443) + TRANSACTION_ID, False),
    ],
)
def test_is_stun(data: bytes, framed: bool) -> None:
    assert stun.is_stun(data) is framed


def test_no_sip_vector_is_taken_for_stun() -> None:
    vectors = [name for group in ("rfc4475", "rfc5118", "sip") for name in names(group)]
    assert len(vectors) > 60
    for name in vectors:
        assert not stun.is_stun(load(name)), name
        assert not stun.is_stun(wire(name)), name


@given(st.sampled_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"), st.binary())
def test_text_starting_with_a_letter_is_never_stun(first: int, rest: bytes) -> None:
    data = bytes([first]) + rest[:3] + b"\x21\x12\xa4\x42" + rest[3:]
    assert not stun.is_stun(data)
    assert stun.binding_response(data, "192.0.2.1", 32853) is None


def test_encode_refuses_a_transaction_id_of_another_length() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        stun.encode(0x0101, bytes(11), [])


def test_xor_mapped_address_refuses_what_is_no_address() -> None:
    with pytest.raises(ValueError, match="not a port"):
        stun.xor_mapped_address("192.0.2.1", 65536, TRANSACTION_ID)
    with pytest.raises(ValueError, match="does not appear to be"):
        stun.xor_mapped_address("node.example", 5060, TRANSACTION_ID)
    assert stun.binding_response(bare_request(), "node.example", 5060) is None
