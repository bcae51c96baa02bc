"""Any byte string -> a message or ``SipParseError``, nothing else (STYLE.md §4).

Four hypothesis tests, derandomized so CI is stable, 20,000 inputs in all: mutated vectors,
random bytes, random SIP-looking text, and mutated streams cut into random segments.  Whatever
parses must also pass the general validator (the fast path never accepts more) and survive a
serialise/parse round trip.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import load, names, wire

from presence_sip.sip import (
    Request,
    Response,
    SipParseError,
    StreamBuffer,
    make_response,
    parse_message,
    to_bytes,
)
from presence_sip.sip.validate import validate_message

SEEDS = [load(n) for n in names("rfc4475") + names("sip")] + [wire(n) for n in names("rfc5118")]
PIECES = [
    b"\r\n",
    b"\r\n ",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"%00",
    b"@",
    b"[",
    b"]",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"sip:",
    b"SIP/2.0",
    b"Via: ",
    b"l: ",
    b"Content-Length: 4294967296",
    b"CSeq: 1 INVITE",
    b";branch=",
    b"=",
    b"9",
    b"-1",
]
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(data: bytes) -> None:
    """The fuzz invariant for one datagram."""
    try:
        message = parse_message(data)
    except SipParseError as exc:
        error: SipParseError = exc
    else:
        _check_accepted(message)
        return
    assert isinstance(error.status, int)
    assert 400 <= error.status <= 599
    assert error.reason


def _check_accepted(message: Request | Response) -> None:
    validate_message(message)
    wire_form = to_bytes(message)
    again = parse_message(wire_form)
    assert to_bytes(again) == wire_form
    if isinstance(message, Request):
        to_bytes(make_response(message, 400, "Bad Request", to_tag="fz"))


def mutate(seed: int) -> bytes:
    """A seed vector with 1-6 random edits (delete, insert, flip, repeat, splice).

    One integer drawn by hypothesis drives a ``random.Random``: cheap per example, reproducible.
    """
    rng = random.Random(seed)
    data = bytearray(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 6)):
        op = rng.randint(0, 4)
        i = rng.randint(0, len(data))
        j = min(len(data), i + rng.randint(0, 12))
        if op == 0:
            data[i:j] = b""
        elif op == 1:
            data[i:i] = rng.choice(PIECES)
        elif op == 2:
            data[i:j] = bytes(b ^ rng.randint(1, 255) for b in data[i:j])
        elif op == 3:
            data[i:i] = data[i:j] * rng.randint(1, 3)
        else:
            other = rng.choice(SEEDS)
            k = rng.randint(0, len(other))
            data[i:j] = other[k : k + rng.randint(0, 40)]
    return bytes(data)


SEED = st.integers(0, 2**64 - 1)


@settings(FUZZ, max_examples=10_000)
@given(SEED)
def test_mutated_vectors(seed: int) -> None:
    check(mutate(seed))


@settings(FUZZ, max_examples=3_000)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check(data)


@settings(FUZZ, max_examples=4_000)
@given(
    st.lists(
        st.sampled_from(
            [*PIECES, b"INVITE ", b"SIP/2.0 200 OK", b"From", b"To", b"a", b"\r\n\r\n"]
        ),
        max_size=40,
    )
)
def test_sip_like_text(pieces: list[bytes]) -> None:
    check(b"".join(pieces))


@settings(FUZZ, max_examples=3_000)
@given(SEED)
def test_stream_segments(seed: int) -> None:
    rng = random.Random(seed)
    stream = b"".join(mutate(rng.getrandbits(64)) for _ in range(rng.randint(1, 3)))
    cuts = [rng.randint(1, 64) for _ in range(rng.randint(1, 8))]
    buffer = StreamBuffer()
    pos = 0
    index = 0
    while pos < len(stream):
        step = cuts[index % len(cuts)]
        buffer.feed(stream[pos : pos + step])
        pos += step
        index += 1
        try:
            while (message := buffer.next_message()) is not None:
                try:
                    parse_message(message, datagram=False)
                except SipParseError:
                    pass
        except SipParseError:
            return
