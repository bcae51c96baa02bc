"""Inbound TLS on uvloop, the loop ``serve`` runs: uvloop starts reading a new connection when
``connection_made`` returns, even if the protocol paused it, so the ClientHello can reach the
node before its TLS upgrade begins.  It must still reach the TLS layer: a lost ClientHello
stalled the handshake until the client gave up (5 s here, the handshake timeout in general)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
import uvloop
from certs_helper import Pki, make_pki, options
from loopback import LOOPBACK, free_port

from presence_sip.node import Node, NodeConfig, TlsSettings
from presence_sip.transport.listen import ListenSpec

pytestmark = pytest.mark.integration

CONNECTIONS = 20
CLIENT_TIMEOUT = 3.0


def ask(port: int, context: ssl.SSLContext, n: int) -> bytes:
    """One blocking TLS connection (in a thread): an OPTIONS, the first bytes of the answer."""
    raw = socket.create_connection((LOOPBACK, port), timeout=CLIENT_TIMEOUT)
    with raw, context.wrap_socket(raw) as tls:
        tls.sendall(options(LOOPBACK, 1, "TLS", call_id=f"h{n}@test"))
        return tls.recv(65536)


def test_every_handshake_completes_at_once(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    pki: Pki = make_pki(pki_dir)
    port = free_port()
    config = NodeConfig(
        domain="net-b.test",
        data_dir=str(tmp_path / "data"),
        auth="none",
        # With a UDP listener too, as every real configuration has: without one the race did
        # not show on this machine.
        listen=(ListenSpec("tls", LOOPBACK, port), ListenSpec("udp", LOOPBACK, free_port())),
        tls=TlsSettings(
            cert=str(pki.server.cert),
            key=str(pki.server.key),
            ca=str(pki.ca),
            require_client_cert=True,
        ),
    )
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    context.check_hostname = False
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))

    async def run() -> list[bytes]:
        node = Node(config)
        await node.start()
        try:
            return [await asyncio.to_thread(ask, port, context, n) for n in range(CONNECTIONS)]
        finally:
            await node.stop()
            node.close()

    answers = uvloop.run(run())
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"SIP/2.0 200 OK"] * CONNECTIONS
