"""The C fast path (``presence_sip/sip/_speedups.c``) against the pure Python parser.

The extension must be built in the test venv (``make install`` compiles it; CI has gcc), so a
missing one is a failure, not a skip.  Its contract: ``_speedups.parse`` returns None or exactly
what the pure Python parser (``parser._parse``) returns, and only for input that parser accepts;
each header recogniser accepts a subset of the regex of ``grammar.py`` it stands for.  Checked on
every test vector, on variants of them, and on hypothesis mutations (random bytes, CR/LF, quotes,
brackets, semicolons, non-ASCII, long runs), with the line caches both cold and warm.
"""

from __future__ import annotations

import importlib
import os
import random
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import load, names, wire

from presence_sip.sip import Request, SipParseError, grammar, parser, to_bytes
from presence_sip.sip.parser import ParseFailure

PURE = bool(os.environ.get("PRESENCE_SIP_PURE"))
speedups = importlib.import_module("presence_sip.sip._speedups")  # ImportError fails the module
if PURE:  # parser.py left it unconfigured: give it the parser's caches here
    speedups.configure(
        parser._LINE_CACHE,
        parser._scan_line,
        parser._fast_ruri,
        parser._RURI_CACHE,
        parser._SINGLE_KEYS,
        SipParseError,
    )

VECTORS = [load(n) for n in names("rfc4475") + names("sip")] + [wire(n) for n in names("rfc5118")]
SIP_VECTORS = [load(n) for n in names("sip")]
REGEXES = {
    "Via": grammar.FAST_VIA_LIST,
    "From": grammar.FAST_NAME_ADDR,
    "To": grammar.FAST_NAME_ADDR,
    "Call-ID": grammar.CALL_ID,
    "CSeq": grammar.FAST_CSEQ,
}
PIECES = [
    b"\r\n",
    b"\r",
    b"\n",
    b"\r\n ",
    b"\t",
    b" ",
    b":",
    b";",
    b",",
    b"=",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"%4",
    b"%41",
    b"@",
    b"[",
    b"]",
    b"/",
    b"?",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"\xc3\xa9",
    b"sip:",
    b"sips:",
    b"SIP/2.0/",
    b";branch=",
    b";rport",
    b";received=",
    b";ttl=",
    b";maddr=",
    b";RPORT",
    b";rportx",
    b":5060",
    b":65535",
    b":65536",
    b":05060",
    b"::1",
    b"0",
    b"9" * 12,
    b"a" * 300,
    b"Content-Length: 0",
    b"CSeq: 1 SUBSCRIBE",
]
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_extension_is_used_unless_pure_is_forced() -> None:
    if PURE:
        assert parser._fast_parse is None
    else:
        assert parser._fast_parse is speedups.parse


def test_recognised_names_are_canonical_as_parser_sees_them() -> None:
    """The C code writes these five names and keys itself: they must be what _scan_line uses."""
    for name in REGEXES:
        canonical, key, exact, check, _cacheable = parser._name_info(name)
        assert (canonical, key, exact) == (name, name.lower(), True)
        assert check is not None
        assert REGEXES[name].fullmatch.__self__ is check.__self__  # type: ignore[attr-defined]


def _summary(message: object) -> tuple[object, ...]:
    """Everything a parse result carries, for exact comparison."""
    if isinstance(message, Request):
        start: tuple[object, ...] = (message.method, message.uri, message.version)
    else:
        start = (message.status, message.reason, message.version)  # type: ignore[attr-defined]
    headers = message.headers  # type: ignore[attr-defined]
    return (
        type(message),
        *start,
        headers._items,
        headers._keys,
        headers._raw,
        headers._raw_length,
        message.body,  # type: ignore[attr-defined]
        dict(message._cache),  # type: ignore[attr-defined]
    )


def _outcome(
    parse: Callable[[bytes, bool], object], data: bytes, datagram: bool
) -> tuple[object, ...]:
    try:
        message = parse(data, datagram)
    except ParseFailure as exc:
        return ("error", exc.status, exc.reason, _summary(exc.partial))
    except SipParseError as exc:
        return ("error", exc.status, exc.reason)
    return ("ok", _summary(message))


def agree(data: bytes, *, cold: bool = False) -> bool:
    """Assert the contract on ``data`` (both framings); True when the C path accepted it."""
    accepted = False
    for datagram in (True, False):
        if cold:
            parser._LINE_CACHE.clear()
            parser._RURI_CACHE.clear()
        found = speedups.parse(data, datagram)
        expected = _outcome(parser._parse, data, datagram)
        if found is not None:
            accepted = True
            message = _built(found)
            assert expected == ("ok", _summary(message)), data
        # and parse_message, whichever path it takes, gives the pure outcome
        got = _outcome(lambda d, g: parser.parse_message(d, datagram=g), data, datagram)
        assert got == expected, data
    return accepted


def _built(found: tuple[object, ...]) -> object:
    """What parse_message makes of a C result (its own code path, called through a stub)."""
    saved = parser._fast_parse
    parser._fast_parse = lambda _data, _datagram: found  # type: ignore[assignment,return-value]
    try:
        return parser.parse_message(b"")
    finally:
        parser._fast_parse = saved


def variants(data: bytes, count: int) -> list[bytes]:
    """``count`` copies of ``data`` with fresh branch, tags, Call-ID and CSeq (as the bench)."""
    out = []
    for i in range(count):
        msg = re.sub(rb"branch=z9hG4bK[^;\r\n]*", b"branch=z9hG4bK%08x" % (i * 7919), data)
        msg = re.sub(rb"(\r\n(?:From|To): [^\r\n]*;tag=)[^;\r\n]*", rb"\g<1>%x" % (i * 31), msg)
        msg = re.sub(rb"(\r\nCall-ID: )[^\r\n]*", rb"\g<1>%d@127.0.0.1" % (10**9 + i), msg)
        msg = re.sub(rb"(\r\nCSeq: )[0-9]+", rb"\g<1>%d" % (i + 1), msg)
        out.append(msg)
    return out


@pytest.mark.parametrize("cold", [True, False])
def test_every_vector_agrees(cold: bool) -> None:
    for data in VECTORS:
        agree(data, cold=cold)


def test_the_canonical_vectors_take_the_c_path() -> None:
    for data in SIP_VECTORS:
        assert agree(data, cold=True)
        assert agree(data)
        message = parser.parse_message(data)
        assert message.headers._raw is not None
        assert to_bytes(message) == data


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (rb"Content-Length: (\d+)", rb"Content-Length:   \1"),  # SIPp pads [len] to 5 columns
        (rb"Content-Length: (\d+)", rb"l: \1"),
        (rb"Max-Forwards: ", rb"max-forwards:  "),
        (rb"Via: ", rb"v: "),
        (rb"CSeq: ", rb"CSeq:  "),
        (rb"Call-ID: ([^\r]*)", rb"i: \1 "),
    ],
)
def test_lines_in_another_form_take_the_c_path(old: bytes, new: bytes) -> None:
    """A proven line that is not in canonical form keeps the message on the C path; as in the
    pure parser, the raw header block is then not reused for serialising."""
    edited_vectors = [re.sub(old, new, data, count=1) for data in SIP_VECTORS]
    edited_vectors = [e for e, data in zip(edited_vectors, SIP_VECTORS, strict=True) if e != data]
    assert len(edited_vectors) >= 5
    for edited in edited_vectors:
        assert agree(edited, cold=True)
        assert agree(edited)
        message = parser.parse_message(edited)
        assert message.headers._raw is None
        assert parser.parse_message(to_bytes(message)) == message


def test_variants_agree() -> None:
    for data in SIP_VECTORS:
        for variant in variants(data, 50):
            assert agree(variant)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"SIP/2.0 099 Low\r\nVia: SIP/2.0/UDP h\r\n\r\n",
        b"SIP/2.0 700 High\r\n\r\n",
        b"sip/2.0 200 OK\r\n\r\n",
        b"OPTIONS sip:h SIP/2.0",
        b"OPTIONS  sip:h SIP/2.0\r\n\r\n",
        b"OPTIONS sip:h SIP/2.0 \r\n\r\n",
        b"OPTIONS sip:h SIP/2.1\r\n\r\n",
    ],
)
def test_odd_start_lines_agree(data: bytes) -> None:
    agree(data, cold=True)


def test_message_level_rules_agree() -> None:
    base = load("sip/subscribe")
    edits = [
        (b"Content-Length: 0", b"Content-Length: 0\r\nContent-Length: 0"),
        (b"Content-Length: 0", b"Content-Length: 5"),
        (b"Content-Length: 0", b"Content-Length: 0000000000"),
        (b"Content-Length: 0\r\n", b""),
        (b"Expires: 600", b"Expires: 600\r\nExpires: 600"),
        (b"Event: presence", b"Event: presence\r\nEvent: presence"),
        (b"CSeq: 17766 SUBSCRIBE", b"CSeq: 17766 NOTIFY"),
        (b"CSeq: 17766 SUBSCRIBE", b"CSeq: 17766 SUBSCRIBE\r\nCSeq: 17766 SUBSCRIBE"),
        (b"Call-ID: 2010@watcherhost.example.com\r\n", b""),
        (b"To: <sip:resource@example.com>\r\n", b""),
        (b"SUBSCRIBE sip:resource@example.com", b"SUBSCRIBE sip:resource@example.com?a=b"),
        (b"SUBSCRIBE sip:resource@example.com", b"SUBSCRIBE <sip:resource@example.com>"),
        (b"\r\n\r\n", b"\r\n\r\nbody"),
        (b"Via:", b"v:"),
        (b"Via: ", b"Via:  "),
        (b"Via: ", b"Via:"),
        (b"From: ", b"From:\t"),
    ]
    for old, new in edits:
        assert old in base
        agree(base.replace(old, new, 1), cold=True)
        agree(b"\r\n\r\n" + base.replace(old, new, 1))


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with 1-4 random edits: delete, insert a piece, flip bytes, repeat, splice."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randint(0, 4)
        i = rng.randint(0, len(buf))
        j = min(len(buf), i + rng.randint(0, 8))
        if op == 0:
            buf[i:j] = b""
        elif op == 1:
            buf[i:i] = rng.choice(PIECES)
        elif op == 2:
            buf[i:j] = bytes(b ^ rng.randint(1, 255) for b in buf[i:j])
        elif op == 3:
            buf[i:i] = buf[i:j] * rng.randint(1, 40)
        else:
            other = rng.choice(VECTORS)
            k = rng.randint(0, len(other))
            buf[i:j] = other[k : k + rng.randint(0, 30)]
    return bytes(buf)


def _header_values(kind: str) -> list[bytes]:
    prefix = kind.encode() + b": "
    seeds = [
        line[len(prefix) :]
        for data in VECTORS
        for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")
        if line.startswith(prefix)
    ]
    return seeds or [b"x"]


EXTRA_SEEDS = {
    "Via": [
        b'SIP/2.0/UDP h;rport;ttl=1;maddr=m;received=r;branch=z9hG4bKx;x="q";y',
        b"SIP/2.0/TCP [::1]:5060;branch=z9hG4bKx",
        b"SIP/2.0/UDP a-b.c:65535;rportx=1",
        b"SIP/2.0/UDP a.b:5060;branch=z9hG4bK1, SIP/2.0/UDP c;branch=z9hG4bK2",
    ],
    "From": [
        b'"Alice \\"A\\"" <sip:a:pw@h:5060;transport=udp;lr>;tag=1',
        b'Alice Smith  <sips:%41b;c=d@h.example>;tag=x;q="v"',
        b"sip:alice@example.com;tag=1",
        b"<sip:h;x=%zz>",
    ],
    "Call-ID": [b"a@b@c", b'()<>:\\"/[]?{}@x', b"@x"],
    "CSeq": [b"123456789 INVITE", b"1234567890 INVITE", b"1  INVITE", b"1 INV ITE"],
}
EXTRA_SEEDS["To"] = EXTRA_SEEDS["From"]


@settings(FUZZ, max_examples=3_000)
@given(st.sampled_from(sorted(REGEXES)), st.integers(0, 2**64 - 1))
def test_recognisers_accept_a_subset_of_their_regex_fuzz(kind: str, seed: int) -> None:
    rng = random.Random(seed)
    value = rng.choice(_header_values(kind) + EXTRA_SEEDS[kind])
    if rng.random() < 0.9:
        value = mutate(rng, value)
    if speedups.recognise(kind, value):
        assert REGEXES[kind].fullmatch(value.decode("ascii")), value


def test_recognisers_accept_the_common_forms() -> None:
    for kind in REGEXES:
        assert any(speedups.recognise(kind, value) for value in _header_values(kind))
    assert speedups.recognise("Via", b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport")
    assert speedups.recognise("From", b'"A B" <sip:a@b.c:5060;lr>;tag=1')
    assert speedups.recognise("To", b"A B <sip:a@b.c>")
    assert speedups.recognise("Call-ID", b"1@127.0.0.1")
    assert speedups.recognise("CSeq", b"1 REGISTER")
    assert not speedups.recognise("Via", b"SIP/2.0/UDP h;rportx=1")  # the regex refuses it too


@settings(FUZZ, max_examples=4_000)
@given(st.integers(0, 2**64 - 1), st.booleans())
def test_mutated_messages_agree_fuzz(seed: int, cold: bool) -> None:
    rng = random.Random(seed)
    data = rng.choice(SIP_VECTORS + VECTORS)
    if rng.random() < 0.5:
        data = variants(data, rng.randint(1, 3))[-1]
    agree(mutate(rng, data), cold=cold)


@settings(FUZZ, max_examples=2_000)
@given(st.integers(0, 2**64 - 1))
def test_mutated_header_lines_agree_fuzz(seed: int) -> None:
    """One header line of a canonical message mutated: the C recognisers and the line cache."""
    rng = random.Random(seed)
    head, _, body = rng.choice(SIP_VECTORS).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    i = rng.randint(1, len(lines) - 1)
    lines[i] = mutate(rng, lines[i])
    agree(b"\r\n".join(lines) + b"\r\n\r\n" + body)


@settings(FUZZ, max_examples=1_000)
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_agree_fuzz(data: bytes, canonical_head: bool) -> None:
    if canonical_head:
        data = b"SIP/2.0 200 OK\r\n" + data + b"\r\n\r\n"
    agree(data)


def test_configure_and_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        speedups.parse(b"")
    with pytest.raises(TypeError):
        speedups.configure({}, None, None, [], frozenset(), SipParseError)
    assert speedups.parse(bytearray(SIP_VECTORS[0]), True) is None
    with pytest.raises(ValueError, match="unknown header"):
        speedups.recognise("Contact", b"<sip:a@b>")
