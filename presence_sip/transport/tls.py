"""Mutual-TLS contexts and the verified identity of a TLS peer (RFC 3261 §26.2, RFC 5922)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from presence_sip.sip.errors import ConfigError
from presence_sip.transport.certificate_check import validity_problem

StrPath = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What a verified TLS peer certificate says about the peer.

    Only built for certificates the handshake verified against our CA bundle; the gateway maps it
    to a peer network (RFC 5922 §7: identities come from SAN dNSName, else the subject CN).
    """

    subject_cn: str | None
    """Subject common name, if any."""
    dns_names: tuple[str, ...] = ()
    """subjectAltName dNSName entries, in certificate order."""
    ip_addresses: tuple[str, ...] = ()
    """subjectAltName iPAddress entries, as compressed IP literals."""
    issuer_cn: str | None = None
    """Issuer common name (the CA that signed the peer certificate)."""
    uris: tuple[str, ...] = ()
    """subjectAltName uniformResourceIdentifier entries, in certificate order."""

    def sip_domains(self) -> frozenset[str]:
        """The SIP domains the certificate stands for, as RFC 5922 §7.1 reads them: its
        ``sip:`` URIs without a user part; only when it has no ``sip:`` URI, its dNSNames; only
        when it has neither, its subject CN.  Lower-case; a wildcard is never one (§7.2)."""
        sip_uris = [uri for uri in self.uris if uri[:4].lower() == "sip:"]
        if sip_uris:
            names = [uri[4:].split(";", 1)[0] for uri in sip_uris if "@" not in uri]
        elif self.dns_names:
            names = list(self.dns_names)
        else:
            names = [self.subject_cn] if self.subject_cn else []
        return frozenset(name.lower() for name in names if "*" not in name)

    @classmethod
    def from_certificate(cls, der: bytes) -> PeerIdentity:
        """Read the identity fields of a DER certificate."""
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            dns: tuple[str, ...] = ()
            ips: tuple[str, ...] = ()
            uris: tuple[str, ...] = ()
        else:
            dns = tuple(san.get_values_for_type(x509.DNSName))
            ips = tuple(ip.compressed for ip in san.get_values_for_type(x509.IPAddress))
            uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        return cls(_common_name(cert.subject), dns, ips, _common_name(cert.issuer), uris)

    @classmethod
    def from_ssl_object(cls, sslobj: ssl.SSLObject | ssl.SSLSocket) -> PeerIdentity | None:
        """The peer's identity, or None when it sent no certificate or nothing was verified."""
        if sslobj.context.verify_mode == ssl.CERT_NONE:
            return None
        der = sslobj.getpeercert(binary_form=True)
        if not der:
            return None
        return cls.from_certificate(der)


def _common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def server_context(
    cert: StrPath, key: StrPath, ca_file: StrPath | None = None, *, require_client_cert: bool
) -> ssl.SSLContext:
    """A TLS >= 1.2 server context presenting ``cert``/``key``.

    With ``ca_file`` clients may present a certificate, which must chain to that bundle; with
    ``require_client_cert`` they must (``CERT_REQUIRED``: the handshake fails otherwise).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key)
    if ca_file is not None:
        _load_ca(context, ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ConfigError("requiring client certificates needs a CA bundle (ca_file)")
    return context


def client_context(
    cert: StrPath | None, key: StrPath | None, ca_file: StrPath | None
) -> ssl.SSLContext:
    """A TLS >= 1.2 client context: the server is verified (chain + host name or IP SAN).

    Without ``ca_file`` the system trust store is used; without ``cert`` no client certificate
    is presented.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        _load_ca(context, ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert is not None:
        if key is None:
            raise ConfigError("a TLS client certificate needs its key")
        _load_chain(context, cert, key)
    return context


def route_context(
    cert: StrPath | None, key: StrPath | None, ca_file: StrPath | None
) -> ssl.SSLContext:
    """:func:`client_context` for a route's next hop: the chain is verified as there, the
    host name check is left out, to be done against the route's SIP domains as RFC 5922 reads
    a certificate (``domain_certificate_problem``), not as RFC 6125 does."""
    context = client_context(cert, key, ca_file)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass(frozen=True, slots=True)
class TlsContexts:
    """Every context a node's TLS files make, loaded together by :func:`load_contexts`."""

    server: ssl.SSLContext
    """Serves ``tls:`` listeners (:func:`server_context`)."""
    client: ssl.SSLContext
    """Opens TLS connections, the host name checked (:func:`client_context`)."""
    route: ssl.SSLContext
    """Opens TLS connections to a route's next hop (:func:`route_context`)."""
    certificate: str
    """The certificate presented, for the log: subject, serial and end of validity."""


def load_contexts(
    cert: StrPath, key: StrPath, ca_file: StrPath | None, *, require_client_cert: bool
) -> TlsContexts:
    """The server, client and route contexts of a node's files, at start and on SIGHUP; blocks
    while it reads them.  :class:`ConfigError` naming the file and the reason when one is
    missing, cannot be parsed or the key is not the certificate's: nothing is returned then, so
    a reload keeps every context in use (all or nothing)."""
    server = server_context(cert, key, ca_file, require_client_cert=require_client_cert)
    client = client_context(cert, key, ca_file)
    route = route_context(cert, key, ca_file)
    return TlsContexts(server, client, route, _summary(cert))


def _summary(cert: StrPath) -> str:
    """Subject, serial (hex, as ``presence-sip certs show`` writes it) and end of validity of
    the first certificate in ``cert`` (a chain file begins with the node's own)."""
    try:
        with open(cert, "rb") as pem:
            certificate = x509.load_pem_x509_certificate(pem.read())
    except (OSError, ValueError) as exc:  # (OpenSSL took it: it is not ours to refuse)
        return f"{os.fspath(cert)} (not read back: {exc})"
    return (
        f"{os.fspath(cert)} ({certificate.subject.rfc4514_string()}, serial"
        f" {certificate.serial_number:x}, not after {certificate.not_valid_after_utc})"
    )


def _load_chain(context: ssl.SSLContext, cert: StrPath, key: StrPath) -> None:
    for path, what in ((cert, "certificate"), (key, "key")):
        try:  # an unreadable file is named as what it is, not always as the certificate
            with open(path, "rb") as readable:
                readable.read(1)
        except OSError as exc:
            raise ConfigError(f"cannot read TLS {what} {os.fspath(path)}: {exc.strerror}") from None
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(
            f"cannot load TLS certificate {os.fspath(cert)} with key {os.fspath(key)}: {exc}"
            " (is the key the certificate's, both PEM?)"
        ) from None


def _load_ca(context: ssl.SSLContext, ca_file: StrPath) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load CA bundle {os.fspath(ca_file)}: {exc}") from None


EXPIRY_WARNING_DAYS = 30
"""A node certificate this close to its end is warned about at start (``certs node`` renews it)."""


def certificate_warnings(cert: StrPath, now: float) -> list[str]:
    """What an operator must hear about the node's own certificate at start: peers refuse one
    that is expired or not yet valid, and soon one about to expire."""
    try:
        with open(cert, "rb") as pem:
            certificate = x509.load_pem_x509_certificate(pem.read())
    except (OSError, ValueError):
        return []  # (loading the context has already said what is wrong with the file)
    name = os.fspath(cert)
    problem = validity_problem(certificate, f"TLS certificate {name}", now)
    if problem is not None:
        return [problem]
    days = (certificate.not_valid_after_utc.timestamp() - now) / 86400
    if days < EXPIRY_WARNING_DAYS:
        return [
            f"TLS certificate {name} expires in {days:.0f} days ({certificate.not_valid_after_utc})"
        ]
    return []


def domain_certificate_problem(identity: PeerIdentity | None, domains: Iterable[str]) -> str | None:
    """Why the peer certificate does not stand for any of ``domains`` (RFC 5922 §7.2-7.3: the
    domain the client is trying to reach), or None when it does."""
    if identity is None:
        return "no verified certificate"
    identities = identity.sip_domains()
    wanted = {domain.lower() for domain in domains}
    if identities & wanted:
        return None
    return (
        f"certificate is for {', '.join(sorted(identities)) or 'no SIP domain'},"
        f" not {', '.join(sorted(wanted))} (RFC 5922)"
    )
