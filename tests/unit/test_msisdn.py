"""E.164 normalisation and MSISDN extraction from AORs and digest usernames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presence_sip.hss.msisdn import (
    InvalidMsisdn,
    canonical_identity,
    identity_in_domain,
    is_msisdn,
    msisdn_from_identity,
    msisdn_from_uri,
    msisdn_from_username,
    normalize_msisdn,
    normalize_prefix,
)

B = "+447700900123"

msisdns = st.from_regex(r"\+[1-9][0-9]{2,14}", fullmatch=True)


@pytest.mark.parametrize(
    "text",
    [
        "+447700900123",
        "  +447700900123\n",
        "+44 7700 900123",
        "+44-7700-900123",
        "+44.7700.900123",
        "+(44)7700-900.123",
        "tel:+447700900123",
        "tel:+44-7700-900123",
        "TEL:+44-7700-900123;phone-context=+44",
        "sip:+447700900123@net-a.test;user=phone",
        "sips:+447700900123@net-a.test",
        "SIP:+44-7700-900123@net-a.test;user=phone",
        "sip:%2B447700900123@net-a.test;user=phone",
        "<sip:+447700900123@net-a.test;user=phone>",
        '"Bob" <tel:+447700900123>',
    ],
)
def test_normalize_msisdn_accepts_global_forms(text: str) -> None:
    assert normalize_msisdn(text) == B


@pytest.mark.parametrize(
    "text",
    [
        "",
        "+",
        "447700900123",  # no '+': refused for operator input (documented in msisdn.py)
        "07700900123",
        "+047700900123",  # no country code starts with 0
        "+1234567890123456",  # 16 digits, E.164 allows 15
        "+12",  # too short
        "+44 7700 9001x3",
        "+44\n7700900123",
        "tel:447700900123",  # local number
        "tel:",
        "tel:+44 7700 900123",  # spaces are not RFC 3966 visual separators
        "sip:alice@net-a.test",
        "sip:447700900123@net-a.test",  # no '+': not for operator input
        "sip:+447700900123",  # no host
        "mailto:+447700900123@x",
        "+44\u0661\u0662",  # non-ASCII digits
        "\uff0b447700900123",
    ],
)
def test_normalize_msisdn_rejects(text: str) -> None:
    with pytest.raises(InvalidMsisdn, match=r"not an E\.164 number"):
        normalize_msisdn(text)


def test_invalid_msisdn_is_a_value_error() -> None:
    assert issubclass(InvalidMsisdn, ValueError)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:+447700900123@net-a.test;user=phone", B),
        ("sip:+447700900123@net-a.test", B),
        ("sip:447700900123@net-a.test", B),
        ("sip:447700900123:secret@net-a.test;transport=tcp", B),
        ("sips:+44-7700-900123@net-a.test;user=phone", B),
        ("tel:+447700900123", B),
        ("tel:+44.7700.900123;isub=1", B),
        ("<sip:+447700900123@gateway.net-b.test>", B),
        ("tel:447700900123", None),
        ("tel:7042;phone-context=example.com", None),
        ("sip:alice@net-a.test", None),
        ("sip:0447700900123@net-a.test", None),
        ("sip:net-a.test", None),
        ("+447700900123", None),  # not a URI
        ("http://+447700900123@x", None),
        ("", None),
    ],
)
def test_msisdn_from_uri(uri: str, expected: str | None) -> None:
    assert msisdn_from_uri(uri) == expected


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("+447700900123", B),
        ("447700900123", B),
        (" 447700900123", None),  # digest usernames are exact
        ("+44-7700-900123", None),
        ("alice", None),
        ("", None),
    ],
)
def test_msisdn_from_username(username: str, expected: str | None) -> None:
    assert msisdn_from_username(username) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("447700900123", B),
        ("+447700900123", B),
        ("sip:447700900123@net-a.test", B),
        ("tel:+447700900123", B),
        ("sip:alice@net-a.test", None),
    ],
)
def test_msisdn_from_identity(text: str, expected: str | None) -> None:
    assert msisdn_from_identity(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+44", "+44"),
        ("+4477", "+4477"),
        ("+44-77", "+4477"),
        ("+1", "+1"),
    ],
)
def test_normalize_prefix(text: str, expected: str) -> None:
    assert normalize_prefix(text) == expected


@pytest.mark.parametrize("text", ["", "+", "44", "+04", "+4a", "+" + "1" * 16])
def test_normalize_prefix_rejects(text: str) -> None:
    with pytest.raises(InvalidMsisdn, match="prefix"):
        normalize_prefix(text)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:+447700900456@net-a.test;user=phone", "tel:+447700900456"),
        ("tel:+44-7700-900456", "tel:+447700900456"),
        ("sip:447700900456@net-a.test", "tel:+447700900456"),
        ("sip:alice@NET-A.test;transport=tcp", "sip:alice@net-a.test"),
        ("SIPS:Alice@Net-A.Test:5061?subject=x", "sips:Alice@net-a.test:5061"),
        ('"Alice" <sip:alice@net-a.test>', "sip:alice@net-a.test"),
        ("pres:alice@net-a.test", "pres:alice@net-a.test"),
        ("sip:net-a.test", "sip:net-a.test"),
    ],
)
def test_canonical_identity(uri: str, expected: str) -> None:
    assert canonical_identity(uri) == expected


@pytest.mark.parametrize(
    "uri", ["", "alice", "sip:", "sip:@net-a.test", "sip:a b@x", "http://x", "sip:alice@"]
)
def test_canonical_identity_rejects(uri: str) -> None:
    with pytest.raises(ValueError, match="URI"):
        canonical_identity(uri)


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ("sip:alice@127.90.0.1", "sip:alice@net-a.test"),  # Twinkle: the node's address
        ("sips:alice@gw.net-a.test", "sips:alice@net-a.test"),  # a configured alias
        ("sip:alice@net-a.test", None),  # already the domain
        ("sip:alice@net-b.test", None),  # another network's
        ("sip:alice@127.90.0.1:5060", None),  # a port: not compared as one of our hosts
        ("sip:net-a.test", None),  # no user
    ],
)
def test_identity_in_domain(identity: str, expected: str | None) -> None:
    hosts = frozenset({"net-a.test", "127.90.0.1", "gw.net-a.test"})
    assert identity_in_domain(identity, hosts, "net-a.test") == expected


@given(msisdns)
def test_every_form_of_a_number_normalises_to_it(msisdn: str) -> None:
    dashed = msisdn[:3] + "-" + msisdn[3:]
    assert is_msisdn(msisdn)
    assert normalize_msisdn(dashed) == msisdn
    assert normalize_msisdn(f"tel:{dashed}") == msisdn
    assert msisdn_from_uri(f"sip:{msisdn}@net-a.test;user=phone") == msisdn
    assert msisdn_from_uri(f"sip:{msisdn[1:]}@net-a.test") == msisdn
    assert msisdn_from_uri(f"tel:{msisdn}") == msisdn
    assert msisdn_from_username(msisdn[1:]) == msisdn


@given(st.text())
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        result = normalize_msisdn(text)
    except InvalidMsisdn:
        pass
    else:
        assert is_msisdn(result)
    found = msisdn_from_identity(text)
    assert found is None or is_msisdn(found)
    try:
        canonical_identity(text)
    except ValueError:
        pass
