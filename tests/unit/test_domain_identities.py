"""RFC 5922 §7.1-7.2: the SIP domains a peer certificate stands for (its PeerIdentity)."""

from __future__ import annotations

import pytest

from presence_sip.transport.tls import PeerIdentity, domain_certificate_problem


def cert(*sans: tuple[str, str], cn: str | None = None) -> PeerIdentity:
    def of(kind: str) -> tuple[str, ...]:
        return tuple(value for k, value in sans if k == kind)

    return PeerIdentity(cn, of("DNS"), of("IP Address"), None, of("URI"))


def domain_identities(identity: PeerIdentity) -> frozenset[str]:
    return identity.sip_domains()


@pytest.mark.parametrize(
    ("peercert", "identities"),
    [
        # sip: URIs are the identities when there are any; dNSNames are not looked at then
        (cert(("URI", "sip:net-b.test"), ("DNS", "gw1.net-b.test")), {"net-b.test"}),
        (cert(("URI", "sip:other.test"), ("DNS", "net-b.test")), {"other.test"}),
        # a URI with a user part, or of another scheme, is no identity
        (cert(("URI", "sip:alice@net-b.test"), ("URI", "https://net-b.test")), set()),
        (cert(("URI", "https://x.test"), ("DNS", "net-b.test")), {"net-b.test"}),
        # without sip: URIs, the dNSNames; never a wildcard
        (
            cert(("DNS", "Net-B.test"), ("DNS", "*.net-b.test"), ("IP Address", "127.0.0.1")),
            {"net-b.test"},
        ),
        # without either, the subject CN
        (cert(cn="net-b.test"), {"net-b.test"}),
    ],
)
def test_identities(peercert: PeerIdentity, identities: set[str]) -> None:
    assert domain_identities(peercert) == identities


def test_problem_names_what_the_certificate_is_for() -> None:
    assert domain_certificate_problem(cert(("DNS", "net-b.test")), {"NET-B.test"}) is None
    problem = domain_certificate_problem(cert(("URI", "sip:other.test")), {"net-b.test"})
    assert problem == "certificate is for other.test, not net-b.test (RFC 5922)"
    assert domain_certificate_problem(None, {"net-b.test"}) == "no verified certificate"
