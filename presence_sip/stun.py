"""STUN Binding on the SIP UDP port: the keep-alives of RFC 5626 §8 (SIP outbound).  Sans-IO.

RFC 5626 §8: a server that takes SIP requests on a UDP port is also a limited STUN server
(RFC 5389) on that port, so that a user agent can check and keep open its NAT binding with
Binding requests sent over the same flow (5-tuple) as its SIP.  STUN and SIP are told apart by
their first bytes: a STUN message starts with two zero bits (RFC 5389 §6; RFC 7983 §7: first
byte 0-3), carries the magic cookie in bytes 4-7 and a length that counts the whole datagram
past its 20-byte header; SIP text starts with a letter (a method, or ``SIP/`` of a response).

What this server does (:func:`binding_response`):

* a Binding request gets a Binding success response with the same transaction ID, an
  XOR-MAPPED-ADDRESS of the source address and port it came from (IPv4 or IPv6; an
  IPv4-mapped IPv6 source as the IPv4 address it is) and a FINGERPRINT;
* a Binding request with a comprehension-required attribute (0x0000-0x7FFF) this module does
  not know gets a 420 error response listing them in UNKNOWN-ATTRIBUTES (RFC 5389 §7.3.1);
* no authentication: RFC 5626 §8 asks for none, so USERNAME, MESSAGE-INTEGRITY, REALM and
  NONCE are known (RFC 5389 §15) and ignored, and no response carries a MESSAGE-INTEGRITY;
* everything else is not answered (None): indications, responses, other methods, a message
  whose attributes do not fill its length exactly, a FINGERPRINT that is wrong or not last
  (RFC 5389 §7.3, §15.5: silently discarded).
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from typing import Final

HEADER_SIZE: Final = 20
"""Type (2 bytes), length (2), magic cookie (4), transaction ID (12): RFC 5389 §6."""

MAGIC_COOKIE: Final = 0x2112A442
"""RFC 5389 §6."""
_COOKIE: Final = MAGIC_COOKIE.to_bytes(4, "big")

BINDING_REQUEST: Final = 0x0001
"""Method Binding, class request (RFC 5389 §6, §18.1)."""
BINDING_SUCCESS: Final = 0x0101
"""Method Binding, class success response."""
BINDING_ERROR: Final = 0x0111
"""Method Binding, class error response."""

MAPPED_ADDRESS: Final = 0x0001
USERNAME: Final = 0x0006
MESSAGE_INTEGRITY: Final = 0x0008
ERROR_CODE: Final = 0x0009
UNKNOWN_ATTRIBUTES: Final = 0x000A
REALM: Final = 0x0014
NONCE: Final = 0x0015
XOR_MAPPED_ADDRESS: Final = 0x0020
FINGERPRINT: Final = 0x8028
"""Attribute types of RFC 5389 §18.2 (SOFTWARE, ALTERNATE-SERVER and FINGERPRINT are the
comprehension-optional ones, 0x8000-0xFFFF)."""

KNOWN_REQUIRED: Final = frozenset(
    {MAPPED_ADDRESS, USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, UNKNOWN_ATTRIBUTES, REALM, NONCE,
     XOR_MAPPED_ADDRESS}
)  # fmt: skip
"""The comprehension-required attributes RFC 5389 defines: any other one in 0x0000-0x7FFF makes
a request get 420 (RFC 5389 §7.3.1)."""

FINGERPRINT_XOR: Final = 0x5354554E
"""RFC 5389 §15.5: the CRC-32 is XOR'ed with this ("STUN")."""

UNKNOWN_ATTRIBUTE_REASON: Final = b"Unknown Attribute"
"""The reason phrase of 420 (RFC 5389 §15.6)."""


def is_stun(data: bytes) -> bool:
    """Whether ``data`` is framed as a STUN message (RFC 5389 §6, §7.3): the first two bits
    zero (checked first: SIP text fails there), at least a header, the magic cookie, and a
    length, a multiple of 4, that counts exactly the bytes past the header."""
    return (
        bool(data)
        and data[0] < 0x40
        and len(data) >= HEADER_SIZE
        and len(data) % 4 == 0
        and data[4:8] == _COOKIE
        and int.from_bytes(data[2:4], "big") == len(data) - HEADER_SIZE
    )


def fingerprint(message: bytes) -> int:
    """The FINGERPRINT value of a message whose bytes before that attribute are ``message``,
    their length field already counting it (RFC 5389 §15.5)."""
    return zlib.crc32(message) ^ FINGERPRINT_XOR


def xor_mapped_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """The value of an XOR-MAPPED-ADDRESS for ``host`` (an IP literal; an IPv4-mapped IPv6
    one is given as IPv4) and ``port`` (RFC 5389 §15.2): family, then port and address XOR'ed
    with the magic cookie (and, for IPv6, the transaction ID after it).  ValueError: ``host``
    is no IP address, or ``port`` none."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"not a port: {port}")
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    packed = address.packed
    family = 0x01 if len(packed) == 4 else 0x02
    mask = (_COOKIE + transaction_id)[: len(packed)]
    x_address = bytes(a ^ m for a, m in zip(packed, mask, strict=True))
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + x_address


def attributes(data: bytes) -> list[tuple[int, bytes]] | None:
    """The attributes (type, value) of the STUN message ``data`` (:func:`is_stun` true), up to
    a MESSAGE-INTEGRITY's and a FINGERPRINT's own; those after a MESSAGE-INTEGRITY but its
    FINGERPRINT are left out (RFC 5389 §15.4: ignored).  None when the message is to be
    discarded: an attribute overruns the length, or a FINGERPRINT is not the last attribute or
    does not match (RFC 5389 §15.5)."""
    found: list[tuple[int, bytes]] = []
    position = HEADER_SIZE
    integrity = False
    while position < len(data):
        if position + 4 > len(data):
            return None
        kind, length = struct.unpack_from("!HH", data, position)
        start = position + 4
        end = start + length + (-length % 4)  # values are padded to 4 bytes (RFC 5389 §15)
        if end > len(data):
            return None
        if kind == FINGERPRINT:
            if end != len(data) or length != 4:
                return None
            if int.from_bytes(data[start : start + 4], "big") != fingerprint(data[:position]):
                return None
        if not integrity or kind == FINGERPRINT:
            found.append((kind, data[start : start + length]))
        integrity = integrity or kind == MESSAGE_INTEGRITY
        position = end
    return found


def binding_response(data: bytes, host: str, port: int) -> bytes | None:
    """The answer to the STUN message ``data`` received from ``host``:``port``, or None when it
    gets none (see the module docstring): a Binding success response with XOR-MAPPED-ADDRESS,
    or a 420 error response with UNKNOWN-ATTRIBUTES, both with a FINGERPRINT."""
    if not is_stun(data) or int.from_bytes(data[0:2], "big") != BINDING_REQUEST:
        return None
    found = attributes(data)
    if found is None:
        return None
    transaction_id = data[8:HEADER_SIZE]
    unknown = list(dict.fromkeys(k for k, _ in found if k < 0x8000 and k not in KNOWN_REQUIRED))
    if unknown:
        # RFC 5389 §7.3.1: 420, the unknown comprehension-required attributes listed
        listed = b"".join(kind.to_bytes(2, "big") for kind in unknown)
        error = bytes((0, 0, 4, 20)) + UNKNOWN_ATTRIBUTE_REASON  # class 4, number 20 (§15.6)
        return encode(
            BINDING_ERROR, transaction_id, [(ERROR_CODE, error), (UNKNOWN_ATTRIBUTES, listed)]
        )
    try:
        mapped = xor_mapped_address(host, port, transaction_id)
    except ValueError:
        return None  # (a source that is no IP address: none comes from a socket)
    return encode(BINDING_SUCCESS, transaction_id, [(XOR_MAPPED_ADDRESS, mapped)])


def encode(kind: int, transaction_id: bytes, attrs: list[tuple[int, bytes]]) -> bytes:
    """A STUN message of type ``kind`` with ``attrs`` (each padded with zeros to 4 bytes) and a
    FINGERPRINT last (RFC 5389 §15.5)."""
    if len(transaction_id) != 12:
        raise ValueError(f"a transaction ID has 12 bytes, not {len(transaction_id)}")
    body = b"".join(
        struct.pack("!HH", t, len(value)) + value + bytes(-len(value) % 4) for t, value in attrs
    )
    head = struct.pack("!HHI", kind, len(body) + 8, MAGIC_COOKIE) + transaction_id
    return head + body + struct.pack("!HHI", FINGERPRINT, 4, fingerprint(head + body))
