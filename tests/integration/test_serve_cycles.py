"""A node under uvloop (what ``serve`` runs) leaves no reference cycles of ours behind: UDP
requests, TCP connections that end cleanly or lose their framing, TLS connections from a trusted
and from a rogue client.  ``serve`` collects old objects only every ten minutes
(``runtime/gc_policy.py``), so a cycle per connection would be memory held until then."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
import uvloop
from certs_helper import Pki, make_pki, options
from cycles import cyclic_garbage
from loopback import LOOPBACK, free_port

from presence_sip.node import Node, NodeConfig, TlsSettings
from presence_sip.transport.listen import ListenSpec

pytestmark = pytest.mark.integration

ROUNDS = 20


def exchange(port: int, payload: bytes, context: ssl.SSLContext | None = None) -> None:
    """One connection with a blocking socket, run in a thread so that the client's objects are
    not the event loop's: send, read until the node answers or closes, close."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
            sock = context.wrap_socket(raw) if context is not None else raw
            with sock:
                sock.sendall(payload)
                sock.recv(65536)
    except (ssl.SSLError, OSError):
        pass  # a rogue client is refused; a malformed message gets its answer, then a close


def client_context(pki: Pki, rogue: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    context.check_hostname = False
    issued = pki.rogue_client if rogue else pki.client
    context.load_cert_chain(str(issued.cert), str(issued.key))
    return context


async def traffic(node: Node, udp: int, tcp: int, tls: int, pki: Pki) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)
    )
    try:
        here = transport.get_extra_info("sockname")
        for n in range(ROUNDS):
            transport.sendto(options(*here, call_id=f"u{n}@test"), (LOOPBACK, udp))
            for port, payload, context in (
                (tcp, options(LOOPBACK, 1, "TCP", call_id=f"t{n}@test"), None),
                (tcp, b"OPTIONS sip:x SIP/2.0\r\nContent-Length: x\r\n\r\n", None),
                (tls, options(LOOPBACK, 1, "TLS", call_id=f"s{n}@test"), client_context(pki)),
                (tls, b"hello", client_context(pki, rogue=True)),
            ):
                await asyncio.to_thread(exchange, port, payload, context)
        await asyncio.sleep(0.5)  # lingering closes end, the last answers leave
    finally:
        transport.close()


def test_a_serving_node_leaves_no_reference_cycles(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    udp, tcp, tls = free_port(), free_port(), free_port()
    config = NodeConfig(
        domain="net-b.test",
        data_dir=str(tmp_path / "data"),
        auth="none",
        listen=(
            ListenSpec("udp", LOOPBACK, udp),
            ListenSpec("tcp", LOOPBACK, tcp),
            ListenSpec("tls", LOOPBACK, tls),
        ),
        tls=TlsSettings(
            cert=str(pki.server.cert),
            key=str(pki.server.key),
            ca=str(pki.ca),
            require_client_cert=True,
        ),
    )
    found: list[str] = []

    async def run() -> None:
        node = Node(config)
        await node.start()
        try:
            await traffic(node, udp, tcp, tls, pki)  # warm-up: caches, pools, first imports
            with cyclic_garbage() as garbage:
                await traffic(node, udp, tcp, tls, pki)
            found.extend(garbage)
        finally:
            await node.stop()
            node.close()

    uvloop.run(run())
    assert found == []
