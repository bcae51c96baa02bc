"""Helpers for the transport integration tests: a throw-away PKI and a recording endpoint.

The PKI is made here with ``cryptography`` (independent of ``presence_sip.transport.pki``) so the
transport tests do not depend on the code they would otherwise be checking against.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from presence_sip.sip import Request, Response, make_response, parse_message, to_bytes
from presence_sip.sip.errors import SipParseError
from presence_sip.sip.parser import ParseFailure
from presence_sip.sip.peer import Peer
from presence_sip.transport.tls import PeerIdentity

# -- certificates --------------------------------------------------------------------------------

_ONE_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and key written as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Two CAs: ``ca`` (trusted by the nodes) and ``rogue_ca`` (trusted by nobody)."""

    ca: Path
    rogue_ca: Path
    server: Issued
    client: Issued
    rogue_client: Issued
    rogue_server: Issued
    domain_server: Issued
    """Signed by ``ca``, naming only the domain ``net-b.test`` (no address), as other vendors'
    RFC 5922 domain certificates are made."""


class _Authority:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + 30 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, directory: Path, stem: str, cn: str, dns: list[str], ips: list[str]) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        ca_public = self.key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + 30 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(directory / f"{stem}.crt", directory / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued

    def write(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def make_pki(directory: Path) -> Pki:
    """A trusted CA with a server and a client certificate, and a rogue CA with its own pair."""
    ca = _Authority("Test CA net-b.test")
    rogue = _Authority("Rogue CA")
    return Pki(
        ca=ca.write(directory / "ca.crt"),
        rogue_ca=rogue.write(directory / "rogue-ca.crt"),
        server=ca.issue(directory, "server", "gw1.net-b.test", ["gw1.net-b.test"], ["127.0.0.1"]),
        client=ca.issue(directory, "client", "gw.net-a.test", ["gw.net-a.test"], ["127.0.0.1"]),
        rogue_client=rogue.issue(directory, "rogue-client", "mallory", ["mallory.test"], []),
        rogue_server=rogue.issue(
            directory, "rogue-server", "fake.net-b.test", ["fake.net-b.test"], ["127.0.0.1"]
        ),
        domain_server=ca.issue(directory, "domain-server", "net-b.test", ["net-b.test"], []),
    )


# -- a tiny endpoint ------------------------------------------------------------------------------


class RecordingEndpoint:
    """Answers OPTIONS with 200, records everything, and sends what a test asks it to."""

    def __init__(self) -> None:
        self.received: list[tuple[Request | Response, Peer]] = []
        self.raw: list[tuple[bytes, Peer]] = []
        self.malformed: list[tuple[bytes, SipParseError, Peer]] = []
        self.made: list[tuple[Peer, PeerIdentity | None]] = []
        self.lost: list[Peer] = []
        self.timer: float | None = None
        self.fired: list[float] = []
        self.raise_next = False
        self._out: list[tuple[bytes, Peer]] = []

    # -- Endpoint --------------------------------------------------------------------------------
    def receive(self, data: bytes, source: Peer, now: float) -> None:
        if self.raise_next:
            self.raise_next = False
            raise RuntimeError("injected endpoint bug")
        self.raw.append((data, source))
        try:
            message = parse_message(data, datagram=source.transport == "udp")
        except SipParseError as exc:
            self._answer_error(data, exc, source)
            return
        self.received.append((message, source))
        if isinstance(message, Request) and message.method == "OPTIONS":
            self.queue(to_bytes(make_response(message, 200)), source)

    def receive_malformed(
        self, data: bytes, error: SipParseError, source: Peer, now: float
    ) -> None:
        self.malformed.append((data, error, source))
        self._answer_error(data, error, source)

    def connection_made(self, peer: Peer, identity: PeerIdentity | None, now: float) -> None:
        self.made.append((peer, identity))

    def connection_lost(self, peer: Peer, now: float) -> None:
        self.lost.append(peer)

    def outbox(self) -> list[tuple[bytes, Peer]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.timer = None

    # -- test controls ---------------------------------------------------------------------------
    def queue(self, data: bytes, peer: Peer) -> None:
        self._out.append((data, peer))

    def responses(self) -> list[tuple[Response, Peer]]:
        return [(m, p) for m, p in self.received if isinstance(m, Response)]

    def requests(self) -> list[tuple[Request, Peer]]:
        return [(m, p) for m, p in self.received if isinstance(m, Request)]

    def _answer_error(self, data: bytes, error: SipParseError, source: Peer) -> None:
        try:
            message: object = parse_message(data)
        except ParseFailure as failure:
            message = failure.partial
        except SipParseError:
            return
        if isinstance(message, Request):
            self.queue(to_bytes(make_response(message, error.status, error.reason)), source)


# -- messages and waiting -----------------------------------------------------------------------


def options(
    host: str, port: int, transport: str = "UDP", *, call_id: str = "c1@test", cseq: int = 1
) -> bytes:
    """A byte-exact OPTIONS whose top Via points at ``host:port`` (the client's own socket)."""
    lines = [
        "OPTIONS sip:node@127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/{transport} {host}:{port};branch=z9hG4bK-{call_id.split('@')[0]}-{cseq}",
        "Max-Forwards: 70",
        "To: <sip:node@127.0.0.1>",
        "From: <sip:tester@127.0.0.1>;tag=t1",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} OPTIONS",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def expected_200(request: bytes) -> bytes:
    """The exact 200 the recording endpoint answers ``request`` with."""
    message = parse_message(request)
    assert isinstance(message, Request)
    return to_bytes(make_response(message, 200))


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; fail the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 -- polls state spread over several endpoints
            await asyncio.sleep(0.005)


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a client connection and wait for it, whatever the server did to it first."""
    writer.close()
    try:
        await writer.wait_closed()
    except (ssl.SSLError, ConnectionError):
        pass


def only_task_left() -> bool:
    """True when the running test's task is the only one left on the loop."""
    return asyncio.all_tasks() == {asyncio.current_task()}
