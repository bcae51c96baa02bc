"""What makes TLS peers refuse a node's own certificate, read before they do (``serve --check``).

A peer refuses a certificate outside its validity period, and one that does not chain to the CA
it trusts: for a node configured with a CA bundle (``ca``), the certificate must chain to one of
its certificates, as the peers of the network are given the same CA (a certificate of another
network's CA, a "foreign" one, is refused by every peer).  The chain is followed through the
certificates after the node's own in its file (a chain file), each signature checked; every
certificate on the way must be valid now.

A key that is not the certificate's is OpenSSL's to refuse, when the contexts are loaded
(:func:`presence_sip.transport.tls.load_contexts`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from presence_sip.sip.errors import ConfigError

StrPath = str | os.PathLike[str]

MAX_CHAIN = 8
"""Certificates followed from the node's own towards the CA bundle before giving up."""


def validity_problem(certificate: x509.Certificate, what: str, now: float) -> str | None:
    """Why ``certificate`` (named ``what`` in the reason) is refused at ``now`` (a Unix time):
    not valid yet, or expired; None while it is valid."""
    if now < certificate.not_valid_before_utc.timestamp():
        return f"{what} is not valid before {certificate.not_valid_before_utc}"
    if now >= certificate.not_valid_after_utc.timestamp():
        return f"{what} expired on {certificate.not_valid_after_utc}: peers refuse it"
    return None


def certificate_problem(cert: StrPath, ca_file: StrPath | None, now: float) -> str | None:
    """Why TLS peers would refuse the node certificate in ``cert`` (the first of the file) at
    ``now``: not valid, or (with ``ca_file``) not chaining to a valid CA of that bundle.  None
    when they would take it.  :class:`ConfigError` when a file cannot be read."""
    chain = _read_certificates(cert, "TLS certificate")
    own = chain[0]
    problem = validity_problem(own, f"TLS certificate {os.fspath(cert)}", now)
    if problem is not None or ca_file is None:
        return problem
    return _chain_problem(own, chain[1:], cert, ca_file, now)


def _chain_problem(
    own: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    cert: StrPath,
    ca_file: StrPath,
    now: float,
) -> str | None:
    """Why ``own`` does not chain to a valid CA of ``ca_file`` through ``intermediates`` (the
    rest of its file, in any order), or None when it does."""
    anchors = _read_certificates(ca_file, "CA bundle")
    current = own
    for _ in range(MAX_CHAIN):
        anchor = _issuer_among(current, anchors, now)
        if anchor is not None:
            what = f"CA certificate {_subject(anchor)} of {os.fspath(ca_file)}"
            return validity_problem(anchor, what, now)
        issuer = _issuer_among(current, intermediates, now)
        if issuer is None or issuer == current:
            break
        what = f"CA certificate {_subject(issuer)} in {os.fspath(cert)}"
        problem = validity_problem(issuer, what, now)
        if problem is not None:
            return problem
        current = issuer
    return (
        f"TLS certificate {os.fspath(cert)} does not chain to the CA bundle {os.fspath(ca_file)}"
        f" (it is issued by {own.issuer.rfc4514_string() or 'an unnamed CA'}):"
        " peers trusting that bundle refuse it (a certificate of another network?)"
    )


def _issuer_among(
    certificate: x509.Certificate, candidates: Sequence[x509.Certificate], now: float
) -> x509.Certificate | None:
    """The candidate whose key signed ``certificate``, if any: one valid at ``now`` when there
    is one, as OpenSSL's issuer lookup prefers (a CA certificate issued again with the same
    name and key, its expired predecessor still in the bundle), else the first."""
    found: x509.Certificate | None = None
    for candidate in candidates:
        if certificate.issuer != candidate.subject:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        if validity_problem(candidate, "", now) is None:
            return candidate
        if found is None:
            found = candidate
    return found


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(no subject)"


def _read_certificates(path: StrPath, what: str) -> list[x509.Certificate]:
    try:
        with open(path, "rb") as pem:
            data = pem.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {os.fspath(path)}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{what} {os.fspath(path)} holds no PEM certificate") from None
