"""transport.certificate_check: what TLS peers would refuse of a node's own certificate (expired,
not yet valid, not chaining to the configured CA bundle), with certificates made by
``transport.pki`` at other times than now, and by ``cryptography`` for a chain through an
intermediate CA (which ``pki`` does not make)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from presence_sip.sip.errors import ConfigError
from presence_sip.transport import pki
from presence_sip.transport.certificate_check import certificate_problem
from presence_sip.transport.tls import certificate_warnings

NOW = dt.datetime.now(dt.UTC)
PS1 = pki.NodeSpec("net-b.test", "ps1", ("127.0.2.11",))
FOREIGN = pki.NodeSpec("net-a.test", "ps1", ("127.0.1.11",))


def at(when: dt.datetime) -> float:
    return when.timestamp()


def test_a_valid_certificate_of_the_configured_ca_is_taken(tmp_path: Path) -> None:
    files = pki.load_or_create(tmp_path, PS1, now=NOW)
    assert certificate_problem(files.cert, files.ca, at(NOW)) is None
    assert certificate_problem(files.chain, files.ca, at(NOW)) is None  # (a chain file)
    assert certificate_problem(files.cert, None, at(NOW)) is None


def test_an_expired_certificate_is_refused_with_its_end(tmp_path: Path) -> None:
    """Made 900 days ago by the pki code (a node certificate is valid 825)."""
    files = pki.load_or_create(tmp_path, PS1, now=NOW - dt.timedelta(days=900))
    end = x509.load_pem_x509_certificate(files.cert.read_bytes()).not_valid_after_utc
    assert end < NOW
    assert certificate_problem(files.cert, files.ca, at(NOW)) == (
        f"TLS certificate {files.cert} expired on {end}: peers refuse it"
    )
    assert certificate_problem(files.cert, None, at(NOW)) is not None  # (no CA needed)


def test_a_certificate_not_valid_yet_is_refused(tmp_path: Path) -> None:
    files = pki.load_or_create(tmp_path, PS1, now=NOW + dt.timedelta(days=10))
    begins = x509.load_pem_x509_certificate(files.cert.read_bytes()).not_valid_before_utc
    assert certificate_problem(files.cert, files.ca, at(NOW)) == (
        f"TLS certificate {files.cert} is not valid before {begins}"
    )


def test_a_certificate_expiring_within_30_days_is_taken_and_warned_about_once(
    tmp_path: Path,
) -> None:
    files = pki.load_or_create(tmp_path, PS1, now=NOW - dt.timedelta(days=805))
    end = x509.load_pem_x509_certificate(files.cert.read_bytes()).not_valid_after_utc
    assert certificate_problem(files.cert, files.ca, at(NOW)) is None
    assert certificate_warnings(files.cert, at(NOW)) == [
        f"TLS certificate {files.cert} expires in 20 days ({end})"
    ]


def test_a_certificate_of_another_networks_ca_is_refused_naming_its_issuer(
    tmp_path: Path,
) -> None:
    ours = pki.load_or_create(tmp_path, PS1, now=NOW)
    foreign = pki.load_or_create(tmp_path, FOREIGN, now=NOW)
    expected = (
        f"TLS certificate {{cert}} does not chain to the CA bundle {ours.ca} (it is issued by"
        " CN=net-a.test CA,O=net-a.test): peers trusting that bundle refuse it"
        " (a certificate of another network?)"
    )
    assert certificate_problem(foreign.cert, ours.ca, at(NOW)) == expected.format(cert=foreign.cert)
    # Its chain file carries its own CA: still not the one the peers trust.
    assert certificate_problem(foreign.chain, ours.ca, at(NOW)) == expected.format(
        cert=foreign.chain
    )


def test_a_bundle_of_several_cas_takes_a_certificate_of_any(tmp_path: Path) -> None:
    ours = pki.load_or_create(tmp_path, PS1, now=NOW)
    foreign = pki.load_or_create(tmp_path, FOREIGN, now=NOW)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(foreign.ca.read_bytes() + ours.ca.read_bytes())
    assert certificate_problem(ours.cert, bundle, at(NOW)) is None
    assert certificate_problem(foreign.cert, bundle, at(NOW)) is None


def test_a_certificate_with_the_name_but_not_the_signature_of_the_ca_is_refused(
    tmp_path: Path,
) -> None:
    """A CA made again with ``--force`` has the same name and another key: the certificates of
    the old one no longer chain to it."""
    old = pki.load_or_create(tmp_path / "old", PS1, now=NOW)
    new = pki.load_or_create(tmp_path / "new", PS1, now=NOW)
    problem = certificate_problem(old.cert, new.ca, at(NOW))
    assert problem is not None
    assert "does not chain to the CA bundle" in problem


def test_unreadable_files_are_one_config_error(tmp_path: Path) -> None:
    files = pki.load_or_create(tmp_path, PS1, now=NOW)
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=re.escape(f"cannot read CA bundle {missing}: No such")):
        certificate_problem(files.cert, missing, at(NOW))
    files.ca.write_text("not PEM")
    with pytest.raises(ConfigError, match=re.escape(f"CA bundle {files.ca} holds no PEM")):
        certificate_problem(files.cert, files.ca, at(NOW))


# -- a chain through an intermediate CA (an operator's PKI) ----------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    days: tuple[int, int] = (-1, 365),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return certificate, key


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


@pytest.mark.parametrize("intermediate_days", [(-1, 365), (-400, -2)])
def test_a_chain_through_an_intermediate_ca_in_the_certificate_file(
    tmp_path: Path, intermediate_days: tuple[int, int]
) -> None:
    root, root_key = _issue("Root CA", None, ca=True)
    middle, middle_key = _issue(
        "Issuing CA", (root.subject, root_key), ca=True, days=intermediate_days
    )
    leaf, _ = _issue("ps1.net-b.test", (middle.subject, middle_key), ca=False)
    cert, ca = tmp_path / "ps1-chain.pem", tmp_path / "root.pem"
    cert.write_bytes(_pem(leaf, middle))
    ca.write_bytes(_pem(root))
    problem = certificate_problem(cert, ca, at(NOW))
    if intermediate_days[1] > 0:
        assert problem is None
    else:
        assert problem == (
            f"CA certificate CN=Issuing CA in {cert} expired on {middle.not_valid_after_utc}:"
            " peers refuse it"
        )
    cert.write_bytes(_pem(leaf))  # the intermediate left out: nothing leads to the root
    problem = certificate_problem(cert, ca, at(NOW))
    assert problem is not None
    assert "(it is issued by CN=Issuing CA)" in problem


def test_an_expired_ca_of_the_bundle_is_refused(tmp_path: Path) -> None:
    root, root_key = _issue("Root CA", None, ca=True, days=(-400, -1))
    leaf, _ = _issue("ps1.net-b.test", (root.subject, root_key), ca=False)
    cert, ca = tmp_path / "ps1.pem", tmp_path / "root.pem"
    cert.write_bytes(_pem(leaf))
    ca.write_bytes(_pem(root))
    assert certificate_problem(cert, ca, at(NOW)) == (
        f"CA certificate CN=Root CA of {ca} expired on {root.not_valid_after_utc}: peers refuse it"
    )


def _reissue(
    ca: x509.Certificate, key: ec.EllipticCurvePrivateKey, by: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """``ca`` issued again by its issuer (the key ``by``) with the same name and key, valid
    from yesterday."""
    return (
        x509.CertificateBuilder()
        .subject_name(ca.subject)
        .issuer_name(ca.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(by, hashes.SHA256())
    )


def test_a_ca_issued_again_with_its_key_is_taken_beside_its_expired_predecessor(
    tmp_path: Path,
) -> None:
    """An operator's CA renewed with the same name and key: the bundle (and a chain file) may
    keep the expired certificate before the new one; OpenSSL picks the valid one, so must we."""
    root, root_key = _issue("Root CA", None, ca=True, days=(-400, -1))
    middle, middle_key = _issue("Issuing CA", (root.subject, root_key), ca=True, days=(-400, -2))
    leaf, _ = _issue("ps1.net-b.test", (middle.subject, middle_key), ca=False)
    cert, ca = tmp_path / "ps1-chain.pem", tmp_path / "bundle.pem"
    cert.write_bytes(_pem(leaf, middle, _reissue(middle, middle_key, root_key)))
    ca.write_bytes(_pem(root, _reissue(root, root_key, root_key)))
    assert certificate_problem(cert, ca, at(NOW)) is None
    ca.write_bytes(_pem(root))  # only the expired one: still refused, naming it
    assert certificate_problem(cert, ca, at(NOW)) == (
        f"CA certificate CN=Root CA of {ca} expired on {root.not_valid_after_utc}: peers refuse it"
    )
