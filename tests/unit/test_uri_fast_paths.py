"""The shortcuts in ``sip/uri.py`` give exactly what the general scanners give (issue 8)."""

from __future__ import annotations

import importlib
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presence_sip.sip import SipParseError, grammar, parse_uri
from presence_sip.sip import uri as uri_module
from presence_sip.sip.uri import Via, parse_header_params, parse_name_addr, parse_via

_NEVER = re.compile(r"(?!)")

VIAS = [
    "SIP/2.0/UDP 127.0.0.1:16000;branch=z9hG4bK-5-1",
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport",
    "SIP/2.0/udp host.example.com;branch=z9hG4bK1;received=10.0.0.1;rport=5",
    "SIP/2.0/TLS [2001:db8::1]:5061;received=[2001:db8::2];rport=5;ttl=3;maddr=h",
    'SIP/2.0/TCP a.b;x="q"',
    "sip/2.0/udp a-b.c:1",
    "SIP / 2.0 / UDP h ; branch = z9hG4bK1",
    "SIP/2.0/UDP h.;branch=z9hG4bK1",
    "SIP/2.0/UDP a--b;branch=z9hG4bK1",
    "SIP/2.0/UDP h;branch",
    "SIP/2.0/UDP h;Branch=",
    "SIP/2.0/UDP h;rport=x",
    "SIP/2.0/UDP h;ttl=1;TTL=2",
    "SIP/2.0/UDP h:65536",
    "SIP/2.0/UDP h:65535",
    "SIP/2.0/UDP h:123456",
    "SIP/2.0/UDP h:5060 ;branch=z9hG4bK1",
    "SIP/2.0/UDP h;;branch=z9hG4bK1",
    "SIP/2.0/UDP h;branch=z9hG4bK1;",
    "SIP/2.0/UDP h x",
    "SIP/2.0/UDP",
]
_PIECES = [
    "SIP/2.0/UDP ",
    "SIP/2.0/tcp ",
    "sip/2.0/UDP ",
    "a.b",
    "1.2.3.4",
    "a-b",
    "a..b",
    "[::1]",
    ":5060",
    ":99999",
    ":",
    ";branch=z9hG4bK1",
    ";rport",
    ";rport=7",
    ";received=1.2.3.4",
    ";received=::1",
    ";ttl=x",
    ";ttl=5",
    ";rportx=1",
    ";Branch=z",
    ";received=[::1]",
    ";received=[]",
    ";maddr=1.2.3.4",
    ";x",
    ";x=y",
    ';x="q;r"',
    ";",
    "=",
    " ",
    "\t",
    ",",
    "-",
    ".",
]


def _slow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uri_module, "_c_split_via", None)
    monkeypatch.setattr(uri_module, "_SIMPLE_VIA_SENT", _NEVER)
    monkeypatch.setattr(uri_module, "_SIMPLE_PARAMS", _NEVER)
    monkeypatch.setattr(uri_module, "_SPLIT_VIA", _NEVER)
    monkeypatch.setattr(uri_module, "_SPLIT_SIP_URI", _NEVER)


def _outcome(parse: object, text: str) -> object:
    uri_module._URI_CACHE.clear()  # compare the parsers, not what an earlier run cached
    uri_module._NAME_ADDR_CACHE.clear()
    try:
        return parse(text)  # type: ignore[operator]
    except SipParseError as exc:
        return ("error", exc.reason)


def _compare(parse: object, texts: list[str]) -> None:
    fast = [_outcome(parse, text) for text in texts]
    with pytest.MonkeyPatch.context() as monkeypatch:
        _slow(monkeypatch)
        slow = [_outcome(parse, text) for text in texts]
    assert fast == slow


def test_via_fast_path_matches_the_general_parser() -> None:
    _compare(parse_via, VIAS)
    assert parse_via(VIAS[0]).branch == "z9hG4bK-5-1"


@settings(max_examples=1500, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=7))
def test_via_fast_path_on_generated_input(pieces: list[str]) -> None:
    _compare(parse_via, ["".join(pieces), "SIP/2.0/UDP " + "".join(pieces)])


# The C path (sip/_speedups.c split_via): a subset of grammar.SPLIT_VIA, the Via the regex path
# builds.  Built by `make`, so a missing extension fails here; PURE=1 leaves parse_via without it.
C_SIP = importlib.import_module("presence_sip.sip._speedups")


def _c_via_agrees(text: str) -> bool:
    """C's answer is None, or the regex path's Via for text SPLIT_VIA takes; True if a Via."""
    via = C_SIP.split_via(text, Via)
    if via is None:
        return False
    assert grammar.SPLIT_VIA.fullmatch(text), text
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(uri_module, "_c_split_via", None)
        assert via == parse_via(text), text
    assert type(via) is Via
    assert via.protocol == "SIP/2.0"
    return True


def test_c_via_path_takes_the_usual_shapes_and_leaves_the_rest() -> None:
    taken = [
        "SIP/2.0/UDP 127.0.0.1:16000;branch=z9hG4bK-5-1",
        "SIP/2.0/udp host.example.com;branch=z9hG4bK1;received=10.0.0.1;rport=5",
        "SIP/2.0/TCP h:5060;rport;received=[2001:db8::2];ttl=3;maddr=h;x;y=z",
        "SIP/2.0/TLS h:1",
    ]
    assert all(_c_via_agrees(text) for text in taken)
    assert C_SIP.split_via(taken[1], Via) == Via(
        "UDP",
        "host.example.com",
        None,
        (("branch", "z9hG4bK1"), ("received", "10.0.0.1"), ("rport", "5")),
    )
    for text in VIAS:
        _c_via_agrees(text)
    left = [
        "SIP/2.0/UDP h;rportx=1",  # the regex stops at ";rport" and fails
        'SIP/2.0/UDP h;x="q"',  # quoted values: the general path
        "SIP/2.0/UDP h;" + "x;" * 16 + "y",  # more than 16 parameters
        "SIP/2.0/UDP h\u00e9",  # not ASCII
        "SIP/2.0/UDP h:00001",  # five digits from 0
        "SIP/2.0/U2 h",  # a transport that is not letters only
        "SIP/2.0/UDP [::1]",  # IPv6: the general path
    ]
    for text in left:
        assert C_SIP.split_via(text, Via) is None, text
    with pytest.raises(TypeError):
        C_SIP.split_via(taken[0], dict)


@settings(max_examples=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=7))
def test_c_via_path_on_generated_input(pieces: list[str]) -> None:
    _c_via_agrees("".join(pieces))
    _c_via_agrees("SIP/2.0/UDP " + "".join(pieces))


def test_parse_via_runs_the_c_path_unless_pure() -> None:
    expected = None if os.environ.get("PRESENCE_SIP_PURE") else C_SIP.split_via
    assert uri_module._c_split_via is expected


@settings(max_examples=1000, derandomize=True)
@given(st.lists(st.sampled_from([";", "=", "a", "Tag", "1", "-", " ", '"', "%", ":", "[", "]"])))
def test_header_params_fast_path_matches_the_scanner(pieces: list[str]) -> None:
    text = "".join(pieces)
    _compare(lambda t: parse_header_params(t, "X"), [text, ";" + text])


def test_name_addr_fast_path() -> None:
    texts = ['"A" <sip:a@b>;tag=1', "A B <sips:a:pw@b:5060;lr>", "sip:a@b;tag=1", "<sip:a@b>;tag"]
    _compare(lambda t: parse_name_addr(t, "From"), texts)


TAGGED = [
    "<sip:a@b>;tag=1",
    '"A" <sip:a@b>;tag=x.y-z',
    "A B <sips:a:pw@b:5060;lr>;tag=7",
    " <sip:a@b>;tag=1",
    "<sip:a@b;tag=in>;tag=out",
    '"x>;tag=y" <sip:a@b>',
    '"x>;tag=y" <sip:a@b>;tag=z',
    '"unterminated <sip:a@b>;tag=1',
    "<sip:a@b>;tag=",
    "<sip:a@b>;tag=a b",
    "<sip:a@b>;tag=1 ",
    '<sip:a@b>;tag="q"',
    "<sip:a@b>;lr;tag=1",
    "<sip:a@b> ;tag=1",
    "<sip:a@b>;tag=1;x",
    "<sip:a@b>;TAG=1",
    "<sip:a@b>>;tag=1",
    "<>;tag=1",
    ">;tag=1",
    ";tag=1",
    "sip:a@b;tag=1",
    "sip:a@b>;tag=1",
]


def _whole_text(text: str) -> object:
    """The name-addr parse of the whole text, the memo left out."""
    return uri_module._parse_name_addr(text, "From")


def test_a_tagged_name_addr_is_what_the_whole_text_parse_gives() -> None:
    for text in TAGGED:
        assert _outcome(lambda t: parse_name_addr(t, "From"), text) == _outcome(_whole_text, text)


@settings(max_examples=1500, derandomize=True)
@given(
    st.lists(
        st.sampled_from(
            ["<sip:a@b>", "<", ">", '"A"', '"', " ", ";tag=", ";", "=", "x", "1", ".", "sip:a@b"]
        ),
        min_size=1,
        max_size=6,
    )
)
def test_tagged_name_addrs_on_generated_input(pieces: list[str]) -> None:
    for text in ("".join(pieces), "".join(pieces) + ";tag=t1"):
        assert _outcome(lambda t: parse_name_addr(t, "From"), text) == _outcome(_whole_text, text)


def test_the_memo_keeps_the_part_before_the_tag() -> None:
    uri_module._NAME_ADDR_CACHE.clear()
    one = parse_name_addr("<sip:a@b>;tag=1", "From")
    two = parse_name_addr("<sip:a@b>;tag=2", "From")
    assert list(uri_module._NAME_ADDR_CACHE) == ["<sip:a@b>"]  # not one entry per dialog
    assert (one.tag, two.tag) == ("1", "2")
    assert one.uri is two.uri
    assert parse_name_addr("<sip:a@b>", "To") is uri_module._NAME_ADDR_CACHE["<sip:a@b>"]


URIS = [
    "sip:alice@example.test",
    "sip:w1@127.0.0.1:16000;transport=UDP",
    "sips:a.b-c.d:5061;lr;maddr=x",
    "sip:%41b@h;a=%2F",
    "SIP:alice@example.test",
    "sip:alice@example.test:05060",
    "sip:alice@example.test:65536",
    "sip:alice@[::1]:5060",
    "sip:alice:pw@host",
    "sip:a;b@host",
    "sip:a@host?subject=x",
    "sip:a@host;",
    "sip:a@host;x=",
    "sip:a@host;x=y=z",
    "sip:a@host.",
    "sip:a@a..b",
    "sip:a@-a",
    "sip:@host",
    "sip:",
    "tel:+123",
]
_URI_PIECES = [
    "sip:",
    "sips:",
    "a",
    "B1",
    "@",
    ":",
    "5060",
    "99999",
    ";",
    "=",
    "-",
    ".",
    "%41",
    "%4",
    "?",
    "[",
    "]",
    "&",
    "/",
    " ",
]


def test_sip_uri_fast_path_matches_the_general_parser() -> None:
    _compare(parse_uri, URIS)


@settings(max_examples=1500, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_URI_PIECES), min_size=1, max_size=8))
def test_sip_uri_fast_path_on_generated_input(pieces: list[str]) -> None:
    text = "".join(pieces)
    _compare(parse_uri, [text, "sip:" + text, "sip:a@" + text])


def test_parsed_uris_are_shared_and_errors_are_not_cached() -> None:
    assert parse_uri("sip:cache@example.test") is parse_uri("sip:cache@example.test")
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_uri("sip:bad host")
