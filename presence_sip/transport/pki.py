"""Per-network certificate authorities and node (domain) certificates for mutual TLS.

Each network (``net-a.test``, ``net-b.test``, ...) has its own CA: an EC P-256 key and a
self-signed certificate valid ten years.  Each node gets an EC P-256 key and a certificate signed
by its network's CA with:

* ``extendedKeyUsage`` serverAuth + clientAuth: a node is a TLS server for inbound requests and a
  TLS client towards peer networks with the same certificate (RFC 5922 §7.3, §7.4).
* ``subjectAltName``: each SIP domain the node answers for as a ``dNSName`` and as a
  ``sip:`` ``uniformResourceIdentifier`` (RFC 5922 §7.1: the identities of a domain certificate;
  both forms carry the same set so either rule of matching finds it), plus an ``iPAddress`` per
  loopback address the node listens on.

Files (the layout the network config of ``presence-sip serve`` points at)::

    OUT/NETWORK/ca.pem          CA certificate (the trust anchor peers configure)
    OUT/NETWORK/ca.key          CA private key, mode 0600
    OUT/NETWORK/NODE.pem        node certificate
    OUT/NETWORK/NODE.key        node private key, mode 0600
    OUT/NETWORK/NODE-chain.pem  node certificate + CA certificate
    OUT/NETWORK/NODE-combined.pem  node certificate + key (baresip's sip_certificate), 0600

:func:`load_or_create_ca` and :func:`load_or_create` are idempotent: files that exist, parse, match
the request and are valid for at least :data:`RENEW_BEFORE` are kept untouched.  The only I/O
here is reading and writing those files; keys are written atomically with mode 0600.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from presence_sip.sip.errors import ConfigError

__all__ = [
    "CA_VALIDITY",
    "DEMO_NODES",
    "NODE_VALIDITY",
    "RENEW_BEFORE",
    "CaFiles",
    "NodeFiles",
    "NodeSpec",
    "create_demo",
    "describe_certificate",
    "load_certificates",
    "load_or_create",
    "load_or_create_ca",
    "make_ca",
    "make_node_certificate",
]

CA_VALIDITY = dt.timedelta(days=3650)
NODE_VALIDITY = dt.timedelta(days=825)
RENEW_BEFORE = dt.timedelta(days=30)
"""A certificate expiring sooner than this is re-issued by ``load_or_create*``."""
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between nodes

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_NODE_RE = re.compile(rf"^{_LABEL}$")

PrivateKey = ec.EllipticCurvePrivateKey
CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""A CA key: ours are EC P-256; an operator's own CA may be RSA."""


def _check_domain(name: str, what: str) -> str:
    lowered = name.lower().rstrip(".")
    if len(lowered) > 253 or not _DOMAIN_RE.match(lowered):
        raise ConfigError(f"{what} {name!r} is not a domain name")
    return lowered


def _check_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(f"{text!r} is not an IP address") from None


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """The identity one node's certificate asserts."""

    network: str
    """The network (SIP domain) whose CA signs the certificate, e.g. ``net-b.test``."""
    name: str
    """Node name inside the network (``gw1``); its own host name is ``name.network``."""
    ips: tuple[str, ...] = ()
    """Addresses the node listens on, as ``iPAddress`` subjectAltNames."""
    dns_names: tuple[str, ...] = ()
    """Further domains it answers for (``gateway.net-b.test``, the network domain itself)."""

    def __post_init__(self) -> None:
        _check_domain(self.network, "network")
        if not _NODE_RE.match(self.name):
            raise ConfigError(f"node name {self.name!r} must be one DNS label (a-z, 0-9, -)")
        for ip in self.ips:
            _check_ip(ip)
        for name in self.dns_names:
            _check_domain(name, "DNS name")

    @property
    def host_name(self) -> str:
        return f"{self.name}.{self.network}"

    @property
    def identities(self) -> tuple[str, ...]:
        """Every domain in the certificate, own host name first, without duplicates."""
        names = [self.host_name, *(_check_domain(n, "DNS name") for n in self.dns_names)]
        return tuple(dict.fromkeys(names))

    @property
    def addresses(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return tuple(dict.fromkeys(ipaddress.ip_address(ip) for ip in self.ips))


@dataclass(frozen=True, slots=True)
class CaFiles:
    """A network's CA on disk."""

    network: str
    cert: Path
    key: Path
    created: bool = field(default=False, compare=False)
    """True when this call wrote the files (False: they were valid and kept)."""


@dataclass(frozen=True, slots=True)
class NodeFiles:
    """A node's credentials on disk."""

    spec: NodeSpec
    cert: Path
    key: Path
    chain: Path
    combined: Path
    ca: Path
    """The certificate of the CA that signed it (what peers must trust)."""
    created: bool = field(default=False, compare=False)


# -- building certificates (pure: no I/O) ---------------------------------------------------


def make_ca(network: str, *, now: dt.datetime) -> tuple[x509.Certificate, PrivateKey]:
    """A new self-signed CA for ``network`` (EC P-256, ten years)."""
    network = _check_domain(network, "network")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, network),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{network} CA"),
        ]
    )
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return builder.sign(key, hashes.SHA256()), key


def make_node_certificate(
    spec: NodeSpec, ca_cert: x509.Certificate, ca_key: CaKey, *, now: dt.datetime
) -> tuple[x509.Certificate, PrivateKey]:
    """A new node key and certificate for ``spec`` signed by the network's CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, spec.network),
            x509.NameAttribute(NameOID.COMMON_NAME, spec.host_name),
        ]
    )
    not_after = min(now + NODE_VALIDITY, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_alt_names(spec)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_ca_public_key(ca_cert)),
            critical=False,
        )
    )
    return builder.sign(ca_key, hashes.SHA256()), key


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _alt_names(spec: NodeSpec) -> list[x509.GeneralName]:
    # RFC 5922 §7.1: the domain identities are the sip: URIs and dNSNames of subjectAltName.
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.identities]
    names += [x509.UniformResourceIdentifier(f"sip:{n}") for n in spec.identities]
    names += [x509.IPAddress(a) for a in spec.addresses]
    return names


def _ca_public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ConfigError("CA certificate holds neither an EC nor an RSA key")
    return public


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _alt_name_set(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {f"{type(n).__name__}:{n.value}" for n in san}


def _fresh(cert: x509.Certificate, now: dt.datetime) -> bool:
    return (
        cert.not_valid_before_utc <= now + _BACKDATE
        and cert.not_valid_after_utc > now + RENEW_BEFORE
    )


# -- files ------------------------------------------------------------------------------------


def _utc_now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: CaKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path`` with ``data``; the file never exists with a wider mode."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _read_key(path: Path) -> PrivateKey | None:
    key = _read_ca_key(path)
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _read_ca_key(path: Path) -> CaKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else None


def _same_key(cert: x509.Certificate, key: CaKey) -> bool:
    return cert.public_key() == key.public_key()


def _ca_paths(out_dir: Path, network: str) -> tuple[Path, Path]:
    base = Path(out_dir) / network
    return base / "ca.pem", base / "ca.key"


def _load_ca(out_dir: Path, network: str) -> tuple[x509.Certificate, CaKey] | None:
    cert_path, key_path = _ca_paths(out_dir, network)
    cert, key = _read_cert(cert_path), _read_ca_key(key_path)
    if cert is None or key is None or not _same_key(cert, key):
        return None
    return cert, key


def _ca_problem(out_dir: Path, network: str, now: dt.datetime) -> str | None:
    """Why the CA files of ``network`` cannot be used as they are (None: they can)."""
    cert_path, key_path = _ca_paths(out_dir, network)
    cert = _read_cert(cert_path)
    if cert is None:
        return f"{cert_path} is missing or not a PEM certificate"
    if not key_path.exists():
        return f"{key_path} is missing (kept offline?): no node certificate can be signed"
    key = _read_ca_key(key_path)
    if key is None:
        return f"{key_path} is unreadable, encrypted or not an EC/RSA private key"
    if not _same_key(cert, key):
        return f"{key_path} is not the key of {cert_path}"
    if not _signed_by(cert, cert):
        return f"{cert_path} is not a self-signed CA certificate"
    if not _fresh(cert, now):
        until = cert.not_valid_after_utc.date().isoformat()
        return f"{cert_path} is not valid now or expires within 30 days ({until})"
    return None


def load_or_create_ca(
    out_dir: Path | str, network: str, *, now: dt.datetime | None = None, force: bool = False
) -> CaFiles:
    """The CA of ``network`` under ``out_dir``: kept when valid, made when there is none.

    A CA that exists but cannot be used (its key missing, unreadable or not its own, expired
    or expiring) is the trust anchor every peer network was given: it is never replaced
    silently.  ``ConfigError`` says why, unless ``force`` (then a new CA is made, and every
    node certificate it signed must be made again).
    """
    network = _check_domain(network, "network")
    out = Path(out_dir)
    now = _utc_now(now)
    cert_path, key_path = _ca_paths(out, network)
    if cert_path.exists() or key_path.exists():
        problem = _ca_problem(out, network, now)
        if problem is None:
            return CaFiles(network, cert_path, key_path, created=False)
        if not force:
            raise ConfigError(
                f"refusing to replace the CA of {network}: {problem}; peers trust it, so a new"
                " one means new node certificates for every node and a new ca.pem for every peer"
                " (--force makes it)"
            )
    cert, key = make_ca(network, now=now)
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, _cert_pem(cert), 0o644)
    return CaFiles(network, cert_path, key_path, created=True)


def load_or_create(
    out_dir: Path | str,
    spec: NodeSpec,
    *,
    now: dt.datetime | None = None,
    force: bool = False,
    renew: bool = False,
) -> NodeFiles:
    """Credentials for the node ``spec`` under ``out_dir`` (its network's CA made if missing).

    Existing files are kept when the certificate is signed by the network's current CA, matches
    the key, names exactly the identities and addresses of ``spec`` and is not about to expire.
    One about to expire, or signed by a CA that was replaced, is renewed; one naming other
    identities or addresses (a typo of ``--ip``?) is replaced only with ``force``.  ``renew``
    makes a new key and certificate even for valid ones (a key that may have leaked, a
    rotation on the operator's schedule); the CA is kept.
    """
    out = Path(out_dir)
    now = _utc_now(now)
    base = out / spec.network
    ca_path, _ = _ca_paths(out, spec.network)
    files = NodeFiles(
        spec=spec,
        cert=base / f"{spec.name}.pem",
        key=base / f"{spec.name}.key",
        chain=base / f"{spec.name}-chain.pem",
        combined=base / f"{spec.name}-combined.pem",
        ca=ca_path,
    )
    current_ca = _read_cert(ca_path)
    keep = not (force or renew)
    if current_ca is not None and keep and _node_files_valid(files, current_ca, now):
        return files  # (kept: the CA's key is not needed, it may be kept offline)
    load_or_create_ca(out, spec.network, now=now, force=force)
    ca = _load_ca(out, spec.network)
    if ca is None:  # pragma: no cover - just checked or written by load_or_create_ca
        raise ConfigError(f"cannot read the CA of {spec.network} in {out}")
    ca_cert, ca_key = ca
    if not renew and _node_files_valid(files, ca_cert, now):
        return files
    existing = _read_cert(files.cert)
    if existing is not None and not force and _alt_name_set(existing) != _alt_name_set_of(spec):
        names = sorted(n.split(":", 1)[1] for n in _alt_name_set(existing))
        raise ConfigError(
            f"refusing to replace {files.cert}: it names {', '.join(names)}, not what was asked"
            " (--force replaces it with a new key)"
        )
    cert, key = make_node_certificate(spec, ca_cert, ca_key, now=now)
    _write(files.key, _key_pem(key), 0o600)
    _write(files.combined, _cert_pem(cert) + _key_pem(key), 0o600)
    _write(files.chain, _cert_pem(cert) + _cert_pem(ca_cert), 0o644)
    _write(files.cert, _cert_pem(cert), 0o644)
    return dataclasses.replace(files, created=True)


def _node_files_valid(files: NodeFiles, ca_cert: x509.Certificate, now: dt.datetime) -> bool:
    cert, key = _read_cert(files.cert), _read_key(files.key)
    if cert is None or key is None or not all(p.exists() for p in (files.chain, files.combined)):
        return False
    expected = _alt_name_set_of(files.spec)
    return (
        _same_key(cert, key)
        and _signed_by(cert, ca_cert)
        and _fresh(cert, now)
        and _alt_name_set(cert) == expected
    )


def _alt_name_set_of(spec: NodeSpec) -> set[str]:
    return {f"{type(n).__name__}:{n.value}" for n in _alt_names(spec)}


# -- the demo networks (DESIGN.md address table) ------------------------------------------------

DEMO_NODES: tuple[NodeSpec, ...] = (
    NodeSpec("net-a.test", "registrar", ("127.0.1.1",), ("net-a.test",)),
    NodeSpec("net-a.test", "gateway", ("127.0.1.2",), ("gateway.net-a.test", "net-a.test")),
    NodeSpec("net-a.test", "ps1", ("127.0.1.11",)),
    NodeSpec("net-b.test", "registrar", ("127.0.2.1",), ("net-b.test",)),
    NodeSpec("net-b.test", "gw1", ("127.0.2.2",), ("gateway.net-b.test", "net-b.test")),
    NodeSpec("net-b.test", "gw2", ("127.0.2.3",), ("gateway.net-b.test", "net-b.test")),
    NodeSpec("net-b.test", "ps1", ("127.0.2.11",)),
    NodeSpec("net-b.test", "ps2", ("127.0.2.12",)),
)
"""Every node of the two demo networks, at the addresses DESIGN.md fixes."""


def create_demo(
    out_dir: Path | str, *, nodes: Iterable[NodeSpec] = DEMO_NODES, now: dt.datetime | None = None
) -> list[NodeFiles]:
    """CAs and node credentials for the demo networks (idempotent)."""
    now = _utc_now(now)
    return [load_or_create(out_dir, spec, now=now) for spec in nodes]


# -- inspection (`presence-sip certs show`) --------------------------------------------------------


def load_certificates(path: Path | str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a chain or combined file holds several)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{path} holds no PEM certificate") from None
    return certs


def describe_certificate(cert: x509.Certificate) -> list[tuple[str, str]]:
    """(label, value) lines describing ``cert`` for people."""
    lines = [
        ("subject", cert.subject.rfc4514_string()),
        ("issuer", cert.issuer.rfc4514_string()),
        ("serial", f"{cert.serial_number:x}"),
        ("not before", cert.not_valid_before_utc.isoformat()),
        ("not after", cert.not_valid_after_utc.isoformat()),
        ("sha256", cert.fingerprint(hashes.SHA256()).hex(":")),
    ]
    for ext in cert.extensions:
        lines.append(_describe_extension(ext.value))
    return [line for line in lines if line[1]]


def _describe_extension(value: x509.ExtensionType) -> tuple[str, str]:
    if isinstance(value, x509.BasicConstraints):
        return ("ca", "yes" if value.ca else "no")
    if isinstance(value, x509.ExtendedKeyUsage):
        return ("extended key usage", ", ".join(_oid_names(value)))
    if isinstance(value, x509.SubjectAlternativeName):
        names = [f"{_SAN_LABELS.get(type(n), type(n).__name__)}:{n.value}" for n in value]
        return ("subject alt names", ", ".join(names))
    return ("", "")


_SAN_LABELS: dict[type, str] = {
    x509.DNSName: "DNS",
    x509.UniformResourceIdentifier: "URI",
    x509.IPAddress: "IP",
}


_EKU_LABELS = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}


def _oid_names(oids: Iterable[x509.ObjectIdentifier]) -> list[str]:
    return [_EKU_LABELS.get(oid, oid.dotted_string) for oid in oids]
