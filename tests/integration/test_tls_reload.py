"""TLS contexts replaced while a driver or node runs (what SIGHUP does): new connections, accepted
and opened, get the new certificate, connections up keep theirs, a reload that fails replaces
nothing, and overlapping reloads run one after the other.  Certificates by ``transport.pki``."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from pathlib import Path

import pytest
from certs_helper import (
    RecordingEndpoint,
    close,
    eventually,
    expected_200,
    only_task_left,
    options,
)
from cryptography import x509

from presence_sip import node as node_module
from presence_sip.node import Node, NodeConfig, Reloads, TlsSettings
from presence_sip.sip.peer import Peer
from presence_sip.transport import Driver, parse_listen, pki
from presence_sip.transport.tls import TlsContexts, load_contexts

pytestmark = pytest.mark.integration

NETWORK = "net-b.test"


def issue(directory: Path, name: str, *, again: bool = False) -> pki.NodeFiles:
    """A node certificate for 127.0.0.1 from the network's CA (``again``: a new key and
    certificate in place of the old files, by the same CA: ``certs node`` keeps a valid one,
    so the old certificate goes first)."""
    spec = pki.NodeSpec(NETWORK, name, ("127.0.0.1",))
    if again:
        (directory / NETWORK / f"{name}.pem").unlink()
    return pki.load_or_create(directory, spec)


def contexts(files: pki.NodeFiles) -> TlsContexts:
    return load_contexts(files.cert, files.key, files.ca, require_client_cert=True)


def serial(files: pki.NodeFiles) -> int:
    return x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number


def tls_port(drv: Driver) -> int:
    (spec,) = [s for s in drv.local_addresses if s.transport == "tls"]
    return spec.port


async def connect(
    port: int, client: pki.NodeFiles
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A TLS connection presenting ``client``'s certificate; the serial the server presented."""
    context = ssl.create_default_context(cafile=str(client.ca))
    context.load_cert_chain(client.cert, client.key)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return reader, writer, x509.load_der_x509_certificate(der).serial_number


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call_id: str) -> None:
    """An OPTIONS over the connection gets its 200."""
    host, port = writer.get_extra_info("sockname")[:2]
    request = options(host, port, "TLS", call_id=call_id)
    writer.write(request)
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head == expected_200(request)  # (an OPTIONS 200 has no body)


async def test_a_listener_gives_new_connections_the_new_certificate(tmp_path: Path) -> None:
    old, client = issue(tmp_path, "gw1"), issue(tmp_path, "watcher")
    old_serial = serial(old)
    server = Driver(RecordingEndpoint())
    server.use_tls(contexts(old))
    await server.start([parse_listen("tls:127.0.0.1:0")])
    try:
        held_reader, held, seen = await connect(tls_port(server), client)
        assert seen == old_serial
        new = issue(tmp_path, "gw1", again=True)
        assert serial(new) != old_serial
        server.use_tls(contexts(new))
        reader, writer, seen = await connect(tls_port(server), client)
        assert seen == serial(new)
        await ask(reader, writer, "new@test")
        await ask(held_reader, held, "held@test")  # up before the swap: its context kept
        der = held.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(der).serial_number == old_serial
        await close(writer)
        await close(held)
    finally:
        await server.stop()


async def test_opened_connections_present_the_new_client_certificate(tmp_path: Path) -> None:
    """The outbound path: a connection opened after the swap presents the new certificate,
    one already open goes on with the old one."""
    server_ep, client_ep = RecordingEndpoint(), RecordingEndpoint()
    server = Driver(server_ep)
    server.use_tls(contexts(issue(tmp_path, "gw1")))
    await server.start([parse_listen("tls:127.0.0.1:0"), parse_listen("tls:127.0.0.1:0")])
    client = Driver(client_ep)
    client.use_tls(contexts(issue(tmp_path, "ps1")))
    await client.start([parse_listen("udp:127.0.0.1:0")])
    first, second = (Peer("tls", "127.0.0.1", spec.port) for spec in server.local_addresses)

    async def send(target: Peer, call_id: str, answers: int) -> None:
        client_ep.queue(options("127.0.0.1", 5061, "TLS", call_id=call_id), target)
        client.transmit()
        await eventually(lambda: len(client_ep.responses()) == answers)

    try:
        await send(first, "before@test", 1)
        client.use_tls(contexts(issue(tmp_path, "ps2")))  # (another name, to tell them apart)
        await send(first, "reused@test", 2)  # the connection up, with its old certificate
        await send(second, "opened@test", 3)
        assert [r.status for r, _ in client_ep.responses()] == [200, 200, 200]
        presented = {p.connection: i and i.subject_cn for p, i in server_ep.made}
        calls = {
            c: [m.call_id for m, p in server_ep.requests() if p.connection == c] for c in presented
        }
        assert sorted(zip(presented.values(), calls.values(), strict=True)) == [
            ("ps1.net-b.test", ["before@test", "reused@test"]),
            ("ps2.net-b.test", ["opened@test"]),
        ]
    finally:
        await client.stop()
        await server.stop()
    assert only_task_left(), asyncio.all_tasks()


def node_config(tmp_path: Path, name: str, files: pki.NodeFiles | None) -> NodeConfig:
    tls = None if files is None else TlsSettings(str(files.cert), str(files.key), str(files.ca))
    return NodeConfig(
        name=name,
        domain=NETWORK,
        data_dir=str(tmp_path / "data"),
        auth="none",
        listen=(parse_listen("tls:127.0.0.1:0" if tls else "udp:127.0.0.1:0"),),
        tls=tls,
    )


def in_use(node: Node) -> tuple[object, object, object]:
    driver = node.driver
    return driver._server_ssl, driver._client_ssl, driver._route_ssl


async def test_a_reload_that_fails_replaces_nothing_and_a_good_one_replaces_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files, client = issue(tmp_path / "certs", "ps1"), issue(tmp_path / "certs", "watcher")
    node = Node(node_config(tmp_path, "ps1", files))
    await node.start()
    try:
        before = in_use(node)
        good = files.key.read_bytes()
        files.key.write_bytes(issue(tmp_path / "certs", "ps2").key.read_bytes())  # not its key
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="presence_sip.node"):
            await node.reload_tls()
        [failed] = [r for r in caplog.records if r.name == "presence_sip.node"]
        assert failed.levelno == logging.ERROR
        assert failed.getMessage().startswith(
            "ps1: TLS reload failed, the certificates in use are kept: cannot load TLS"
            f" certificate {files.cert} with key {files.key}: "
        )
        assert in_use(node) == before
        _, writer, seen = await connect(tls_port(node.driver), client)
        assert seen == serial(files)
        await close(writer)

        files.key.write_bytes(good)
        renewed = issue(tmp_path / "certs", "ps1", again=True)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="presence_sip.node"):
            await node.reload_tls()
        [done] = [r for r in caplog.records if r.name == "presence_sip.signals"]
        assert done.levelno == logging.INFO
        assert f"serial {serial(renewed):x}," in done.getMessage()
        assert done.getMessage().startswith(f"ps1: TLS reloaded: new connections get {files.cert}")
        assert all(now is not then for now, then in zip(in_use(node), before, strict=True))
        _, writer, seen = await connect(tls_port(node.driver), client)
        assert seen == serial(renewed)
        await close(writer)
    finally:
        await node.stop()


async def test_reloads_do_not_overlap_and_a_hangup_during_one_asks_for_one_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every node of the process, one reload at a time: SIGHUPs during a reload make one
    more after it, not one each, and none alongside it."""
    nodes = [
        Node(node_config(tmp_path, "ps1", issue(tmp_path / "certs", "ps1"))),
        Node(node_config(tmp_path, "ps2", issue(tmp_path / "certs", "ps2"))),
        Node(node_config(tmp_path, "plain", None)),
    ]
    loading, most, loads = 0, 0, 0
    lock = threading.Lock()
    slow_load = node_module.load_tls

    def counted(tls: TlsSettings) -> tuple[TlsContexts, list[str]]:
        nonlocal loading, most, loads
        with lock:
            loading += 1
            loads += 1
            most = max(most, loading)
        try:
            time.sleep(0.1)  # long enough for the hangups below to come during it
            return slow_load(tls)
        finally:
            with lock:
                loading -= 1

    monkeypatch.setattr(node_module, "load_tls", counted)
    reloads = Reloads(nodes)
    try:
        with caplog.at_level(logging.INFO, logger="presence_sip.node"):
            reloads.hangup()
            await asyncio.sleep(0.05)
            reloads.hangup()
            reloads.hangup()
            await eventually(lambda: caplog.text.count("plain: SIGHUP: no TLS") == 2)
            await asyncio.sleep(0.3)  # (no third round)
        assert (most, loads) == (1, 4)
        lines = [r.getMessage().split(":", 2)[:2] for r in caplog.records]
        assert (
            lines
            == [
                ["ps1", " TLS reloaded"],
                ["ps2", " TLS reloaded"],
                ["plain", " SIGHUP"],
            ]
            * 2
        )
    finally:
        await reloads.close()
        for node in nodes:
            node.close()


async def test_a_stop_during_a_reload_swaps_nothing_and_leaves_no_task(tmp_path: Path) -> None:
    node = Node(node_config(tmp_path, "ps1", issue(tmp_path / "certs", "ps1")))
    await node.start()
    before = in_use(node)
    reloads = Reloads([node])
    reloads.hangup()
    await asyncio.sleep(0)  # the reload task has started its load on a thread
    await reloads.close()
    await node.stop()
    assert in_use(node) == before
    assert only_task_left(), asyncio.all_tasks()
