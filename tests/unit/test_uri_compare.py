"""URI equivalence (RFC 3261 §19.1.4, RFC 3966 §4): the RFC's own examples first."""

from __future__ import annotations

import pytest

from presence_sip.sip.uri import parse_uri
from presence_sip.sip.uri_compare import uris_equal

# RFC 3261 §19.1.4, "the URIs within each of the following sets are equivalent".
EQUIVALENT = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    # and beyond the RFC's list:
    ("sip:bob@[::1]:5060", "sip:bob@[0:0::1]:5060"),
    ("sip:bob@127.0.0.1;lr", "sip:bob@127.0.0.1;LR"),
    ("sips:bob@host", "SIPS:bob@HOST"),
    ("tel:+1-201-555-0123", "tel:+12015550123"),
    ("tel:+12015550123;Phone-Context=x", "tel:+12015550123;phone-context=X"),
]

# RFC 3261 §19.1.4, "the URIs within each of the following sets are not equivalent".
NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # user
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # a default port is not filled in
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # never resolved
    # and beyond the RFC's list:
    ("sip:bob@host", "sips:bob@host"),
    ("sip:bob@host;maddr=127.0.0.1", "sip:bob@host"),
    ("sip:bob@host;user=phone", "sip:bob@host"),
    ("sip:bob@host;newparam=5", "sip:bob@host;newparam=6"),
    ("sip:bob:one@host", "sip:bob:two@host"),
    ("sip:bob@host", "tel:+12015550123"),
    ("tel:+12015550123", "tel:+12015550124"),
    ("tel:+12015550123", "tel:+12015550123;ext=1"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent(a: str, b: str) -> None:
    assert uris_equal(parse_uri(a), parse_uri(b))
    assert uris_equal(parse_uri(b), parse_uri(a))


@pytest.mark.parametrize(("a", "b"), NOT_EQUIVALENT)
def test_not_equivalent(a: str, b: str) -> None:
    assert not uris_equal(parse_uri(a), parse_uri(b))
    assert not uris_equal(parse_uri(b), parse_uri(a))


def test_other_schemes_compare_their_text_with_the_scheme_case_insensitive() -> None:
    assert uris_equal(parse_uri("urn:service:sos"), parse_uri("URN:service:sos"))
    assert not uris_equal(parse_uri("urn:service:sos"), parse_uri("urn:service:SOS"))
