"""Certificates from presence_sip.transport.pki carry a real mutual-TLS handshake (Python ssl).

A net-b.test gateway (server) and a net-a.test gateway (client) each trust the other network's
CA: the handshake succeeds and each side sees the other's domain certificate.  A client whose CA
the server does not trust, a client without a certificate, and a server the client does not
trust all make the handshake fail.  Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from presence_sip.transport import pki

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
TIMEOUT = 5.0
SERVER = pki.NodeSpec("net-b.test", "gw1", ("127.0.2.2",), ("gateway.net-b.test", "net-b.test"))
CLIENT = pki.NodeSpec("net-a.test", "gateway", ("127.0.1.2",), ("gateway.net-a.test",))
ROGUE = pki.NodeSpec("net-x.test", "gateway", ("127.0.9.2",), ("gateway.net-x.test",))


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")
    return {spec.network: pki.load_or_create(out, spec) for spec in (SERVER, CLIENT, ROGUE)}


def _server_context(node: pki.NodeFiles, trusted_ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(node.cert, node.key)
    ctx.load_verify_locations(cafile=trusted_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _client_context(node: pki.NodeFiles | None, trusted_ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=trusted_ca)
    if node is not None:
        ctx.load_cert_chain(node.cert, node.key)
    return ctx


@dataclass
class _Outcome:
    peer_cert: ssl._PeerCertRetDictType | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _serve_once(listener: socket.socket, ctx: ssl.SSLContext, outcome: _Outcome) -> None:
    """Accept one connection, handshake, echo one message; record what happened."""
    try:
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            outcome.peer_cert = tls.getpeercert()
            tls.sendall(tls.recv(1024))
    except (OSError, ssl.SSLError) as exc:
        outcome.error = exc
    finally:
        outcome.done.set()


def _exchange(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[_Outcome, bytes | BaseException]:
    """Run one TLS exchange on loopback; return (server outcome, client reply or exception)."""
    with socket.create_server((LOOPBACK, 0)) as listener:
        listener.settimeout(TIMEOUT)
        outcome = _Outcome()
        thread = threading.Thread(target=_serve_once, args=(listener, server_ctx, outcome))
        thread.start()
        reply: bytes | BaseException
        try:
            raw = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
            with client_ctx.wrap_socket(raw, server_hostname="gateway.net-b.test") as tls:
                tls.sendall(b"OPTIONS sip:net-b.test SIP/2.0\r\n")
                reply = tls.recv(1024)
        except (OSError, ssl.SSLError) as exc:
            reply = exc
        thread.join(TIMEOUT)
        assert outcome.done.is_set()
    return outcome, reply


def _alt_dns(cert: ssl._PeerCertRetDictType | None) -> set[str]:
    assert cert is not None
    alt = cast("tuple[tuple[str, str], ...]", cert.get("subjectAltName", ()))
    return {value for kind, value in alt if kind == "DNS"}


def test_mutual_tls_between_networks_that_trust_each_other(creds):
    server_ctx = _server_context(creds["net-b.test"], trusted_ca=creds["net-a.test"].ca)
    client_ctx = _client_context(creds["net-a.test"], trusted_ca=creds["net-b.test"].ca)

    outcome, reply = _exchange(server_ctx, client_ctx)

    assert outcome.error is None
    assert reply == b"OPTIONS sip:net-b.test SIP/2.0\r\n"
    assert "gateway.net-a.test" in _alt_dns(outcome.peer_cert)


def test_client_from_an_untrusted_network_is_refused(creds):
    server_ctx = _server_context(creds["net-b.test"], trusted_ca=creds["net-a.test"].ca)
    rogue_ctx = _client_context(creds["net-x.test"], trusted_ca=creds["net-b.test"].ca)

    outcome, reply = _exchange(server_ctx, rogue_ctx)

    assert isinstance(outcome.error, ssl.SSLCertVerificationError)
    assert outcome.peer_cert is None
    # TLS 1.3: the client finishes its side first, then reads the server's alert (or EOF).
    assert isinstance(reply, OSError) or reply == b""


def test_client_without_a_certificate_is_refused(creds):
    server_ctx = _server_context(creds["net-b.test"], trusted_ca=creds["net-a.test"].ca)
    anonymous = _client_context(None, trusted_ca=creds["net-b.test"].ca)

    outcome, reply = _exchange(server_ctx, anonymous)

    assert isinstance(outcome.error, ssl.SSLError)
    assert isinstance(reply, OSError) or reply == b""


def test_client_refuses_a_server_it_does_not_trust(creds):
    server_ctx = _server_context(creds["net-b.test"], trusted_ca=creds["net-a.test"].ca)
    client_ctx = _client_context(creds["net-a.test"], trusted_ca=creds["net-x.test"].ca)

    outcome, reply = _exchange(server_ctx, client_ctx)

    assert isinstance(reply, ssl.SSLCertVerificationError)
    assert outcome.error is not None
