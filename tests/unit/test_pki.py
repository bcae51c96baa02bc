"""presence_sip.transport.pki: per-network CAs and RFC 5922 node certificates (files only)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from presence_sip.sip.errors import ConfigError
from presence_sip.transport import pki

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
GW1 = pki.NodeSpec("net-b.test", "gw1", ("127.0.2.2",), ("gateway.net-b.test", "net-b.test"))


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _policy(ca_path: Path, when: dt.datetime = NOW) -> PolicyBuilder:
    return PolicyBuilder().store(Store([_cert(ca_path)])).time(when)


@pytest.fixture
def gw1(tmp_path):
    return pki.load_or_create(tmp_path, GW1, now=NOW)


def test_node_chain_verifies_as_server_and_as_client(gw1):
    leaf = _cert(gw1.cert)
    policy = _policy(gw1.ca)

    chain = policy.build_server_verifier(DNSName("gateway.net-b.test")).verify(leaf, [])
    assert chain[-1] == _cert(gw1.ca)
    policy.build_server_verifier(IPAddress(ipaddress.ip_address("127.0.2.2"))).verify(leaf, [])
    client = policy.build_client_verifier().verify(leaf, [])
    assert client.subjects is not None
    assert x509.DNSName("gw1.net-b.test") in client.subjects


def test_a_name_the_node_does_not_have_fails_verification(gw1):
    verifier = _policy(gw1.ca).build_server_verifier(DNSName("ps1.net-b.test"))
    with pytest.raises(VerificationError):
        verifier.verify(_cert(gw1.cert), [])


def test_another_networks_ca_does_not_verify_the_node(tmp_path, gw1):
    other = pki.load_or_create_ca(tmp_path, "net-a.test", now=NOW)
    verifier = _policy(other.cert).build_server_verifier(DNSName("gw1.net-b.test"))
    with pytest.raises(VerificationError):
        verifier.verify(_cert(gw1.cert), [])


def test_expired_node_certificate_fails_verification(gw1):
    later = NOW + pki.NODE_VALIDITY + dt.timedelta(days=1)
    verifier = _policy(gw1.ca, later).build_server_verifier(DNSName("gw1.net-b.test"))
    with pytest.raises(VerificationError):
        verifier.verify(_cert(gw1.cert), [])


def test_node_certificate_has_both_ekus_and_rfc5922_alt_names(gw1):
    leaf = _cert(gw1.cert)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "gw1.net-b.test",
        "gateway.net-b.test",
        "net-b.test",
    ]
    assert "sip:net-b.test" in san.get_values_for_type(x509.UniformResourceIdentifier)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.2.2")]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


def test_ca_is_a_p256_ca_valid_ten_years(gw1):
    ca = _cert(gw1.ca)
    assert ca.subject == ca.issuer
    assert ca.subject.rfc4514_string() == "CN=net-b.test CA,O=net-b.test"
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=3650) <= lifetime < dt.timedelta(days=3651)


def test_private_keys_are_owner_only(gw1):
    ca_key = gw1.ca.with_suffix(".key")
    for path in (gw1.key, gw1.combined, ca_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(gw1.cert.stat().st_mode) == 0o644


def test_chain_and_combined_files(gw1):
    assert pki.load_certificates(gw1.chain) == [_cert(gw1.cert), _cert(gw1.ca)]
    combined = gw1.combined.read_bytes()
    assert gw1.cert.read_bytes() in combined
    assert gw1.key.read_bytes() in combined


def test_load_or_create_is_idempotent(tmp_path, gw1):
    files = [gw1.cert, gw1.key, gw1.chain, gw1.combined, gw1.ca]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    again = pki.load_or_create(tmp_path, GW1, now=NOW + dt.timedelta(days=100))
    assert gw1.created
    assert not again.created
    assert again == gw1
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    assert not pki.load_or_create_ca(tmp_path, "net-b.test", now=NOW).created


def test_a_changed_identity_is_refused_without_force_and_keeps_the_ca(tmp_path, gw1):
    """A typo of --ip must not silently replace the node's key and certificate."""
    ca_before, cert_before = gw1.ca.read_bytes(), gw1.cert.read_bytes()
    moved = pki.NodeSpec("net-b.test", "gw1", ("127.0.2.9",), GW1.dns_names)
    with pytest.raises(
        ConfigError, match=r"refusing to replace .*gw1\.pem: it names .*127\.0\.2\.2"
    ):
        pki.load_or_create(tmp_path, moved, now=NOW)
    assert gw1.cert.read_bytes() == cert_before
    again = pki.load_or_create(tmp_path, moved, now=NOW, force=True)
    assert again.created
    san = _cert(again.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.2.9")]
    assert gw1.ca.read_bytes() == ca_before


def test_a_certificate_near_expiry_is_renewed(tmp_path, gw1):
    late = NOW + pki.NODE_VALIDITY - pki.RENEW_BEFORE + dt.timedelta(days=1)
    again = pki.load_or_create(tmp_path, GW1, now=late)
    assert again.created
    assert _cert(again.cert).not_valid_after_utc > late + dt.timedelta(days=700)


def test_renew_makes_a_new_key_for_a_valid_certificate_and_keeps_the_ca(tmp_path, gw1):
    """``certs node --renew``: a key that may have leaked is replaced at once, by the same CA
    (its peers keep trusting the node); the identities are still checked."""
    ca_before, key_before = gw1.ca.read_bytes(), gw1.key.read_bytes()
    serial_before = _cert(gw1.cert).serial_number
    again = pki.load_or_create(tmp_path, GW1, now=NOW, renew=True)
    assert again.created
    assert gw1.key.read_bytes() != key_before
    assert _cert(again.cert).serial_number != serial_before
    assert gw1.ca.read_bytes() == ca_before
    _policy(gw1.ca).build_server_verifier(DNSName("gateway.net-b.test")).verify(
        _cert(again.cert), []
    )
    moved = pki.NodeSpec("net-b.test", "gw1", ("127.0.2.9",), GW1.dns_names)
    with pytest.raises(ConfigError, match="refusing to replace"):
        pki.load_or_create(tmp_path, moved, now=NOW, renew=True)


def test_a_damaged_key_is_replaced(tmp_path, gw1):
    gw1.key.write_bytes(b"not a key")
    again = pki.load_or_create(tmp_path, GW1, now=NOW)
    assert again.created
    key = serialization.load_pem_private_key(again.key.read_bytes(), password=None)
    assert _cert(again.cert).public_key() == key.public_key()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda key: key.unlink(), "is missing (kept offline?)"),
        (lambda key: key.write_bytes(b"lost"), "unreadable, encrypted or not an EC/RSA"),
        (
            lambda key: key.write_bytes(pki._key_pem(ec.generate_private_key(ec.SECP256R1()))),
            "is not the key of",
        ),
    ],
)
def test_an_unusable_ca_is_never_replaced_silently(tmp_path, gw1, damage, reason):
    """The CA is what peer networks trust: a new one would break every node and peer."""
    ca_before = gw1.ca.read_bytes()
    damage(gw1.ca.with_suffix(".key"))
    assert not pki.load_or_create(tmp_path, GW1, now=NOW).created  # valid: kept, no key needed
    match = f"refusing to replace the CA of net-b.test: .*{re.escape(reason)}"
    with pytest.raises(ConfigError, match=match):  # a new node needs the CA's key
        pki.load_or_create(tmp_path, pki.NodeSpec("net-b.test", "gw2", ("127.0.2.3",)), now=NOW)
    with pytest.raises(ConfigError, match="refusing to replace the CA"):
        pki.load_or_create_ca(tmp_path, "net-b.test", now=NOW)
    assert gw1.ca.read_bytes() == ca_before


def test_a_new_ca_by_force_reissues_its_nodes(tmp_path, gw1):
    gw1.ca.with_suffix(".key").write_bytes(b"lost")
    again = pki.load_or_create(tmp_path, GW1, now=NOW, force=True)
    assert again.created
    verifier = _policy(again.ca).build_server_verifier(DNSName("gw1.net-b.test"))
    verifier.verify(_cert(again.cert), [])


def test_an_expiring_ca_is_refused_and_named_not_replaced(tmp_path, gw1):
    late = NOW + pki.CA_VALIDITY - pki.RENEW_BEFORE + dt.timedelta(days=1)
    with pytest.raises(ConfigError, match="expires within 30 days"):
        pki.load_or_create_ca(tmp_path, "net-b.test", now=late)


def test_an_operators_own_rsa_ca_is_kept_and_signs_node_certificates(tmp_path):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "net-r.test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(pki._key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    base = tmp_path / "net-r.test"
    base.mkdir()
    (base / "ca.pem").write_bytes(pki._cert_pem(cert))
    (base / "ca.key").write_bytes(pki._key_pem(key))
    before = (base / "ca.pem").read_bytes()
    assert not pki.load_or_create_ca(tmp_path, "net-r.test", now=NOW).created
    node = pki.load_or_create(tmp_path, pki.NodeSpec("net-r.test", "ps1", ("127.0.3.11",)), now=NOW)
    assert (base / "ca.pem").read_bytes() == before
    verifier = _policy(node.ca).build_server_verifier(DNSName("ps1.net-r.test"))
    verifier.verify(_cert(node.cert), [])


def test_demo_covers_the_design_address_table(tmp_path):
    made = pki.create_demo(tmp_path, now=NOW)
    by_node = {(f.spec.network, f.spec.name): f.spec.ips for f in made}
    assert by_node == {
        ("net-a.test", "registrar"): ("127.0.1.1",),
        ("net-a.test", "gateway"): ("127.0.1.2",),
        ("net-a.test", "ps1"): ("127.0.1.11",),
        ("net-b.test", "registrar"): ("127.0.2.1",),
        ("net-b.test", "gw1"): ("127.0.2.2",),
        ("net-b.test", "gw2"): ("127.0.2.3",),
        ("net-b.test", "ps1"): ("127.0.2.11",),
        ("net-b.test", "ps2"): ("127.0.2.12",),
    }
    assert all(f.created for f in made)
    assert not any(f.created for f in pki.create_demo(tmp_path, now=NOW))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net-a.test", "net-b.test"]


@pytest.mark.parametrize(
    ("network", "name", "ips", "dns"),
    [
        ("net_b.test", "gw1", (), ()),
        ("-net.test", "gw1", (), ()),
        ("net-b.test", "gw.1", (), ()),
        ("net-b.test", "GW1!", (), ()),
        ("net-b.test", "gw1", ("127.0.2",), ()),
        ("net-b.test", "gw1", (), ("bad..name",)),
    ],
)
def test_bad_names_and_addresses_are_config_errors(network, name, ips, dns):
    with pytest.raises(ConfigError):
        pki.NodeSpec(network, name, ips, dns)


def test_describe_certificate_names_the_essentials(gw1):
    lines = dict(pki.describe_certificate(_cert(gw1.cert)))
    assert lines["subject"] == "CN=gw1.net-b.test,O=net-b.test"
    assert lines["extended key usage"] == "serverAuth, clientAuth"
    assert "IP:127.0.2.2" in lines["subject alt names"]
    assert lines["ca"] == "no"


def test_load_certificates_errors_are_one_line_config_errors(tmp_path, gw1):
    with pytest.raises(ConfigError, match="cannot read"):
        pki.load_certificates(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        pki.load_certificates(gw1.key)


def test_unwritable_output_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write"):
        pki.load_or_create_ca(blocker, "net-a.test", now=NOW)


def test_the_nodes_own_certificate_is_warned_about_when_expired_or_expiring(tmp_path, gw1):
    from presence_sip.transport.tls import certificate_warnings

    ends = _cert(gw1.cert).not_valid_after_utc.timestamp()
    assert certificate_warnings(gw1.cert, NOW.timestamp()) == []
    (soon,) = certificate_warnings(gw1.cert, ends - 5 * 86400)
    assert soon.startswith(f"TLS certificate {gw1.cert} expires in 5 days")
    (expired,) = certificate_warnings(gw1.cert, ends + 1)
    assert expired.endswith("peers refuse it")
    (early,) = certificate_warnings(gw1.cert, NOW.timestamp() - 10 * 86400)
    assert "is not valid before" in early
    assert certificate_warnings(tmp_path / "missing.pem", NOW.timestamp()) == []
