"""TLS transport: mutual authentication, refusal of untrusted peers, outbound reuse, on loopback."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from certs_helper import (
    Pki,
    RecordingEndpoint,
    close,
    eventually,
    expected_200,
    make_pki,
    only_task_left,
    options,
)

from presence_sip.config import Limits
from presence_sip.node import Node, NodeConfig, TlsSettings
from presence_sip.proxy.routing import NextHop
from presence_sip.runtime.heap import trim_heap
from presence_sip.sip.errors import ConfigError
from presence_sip.sip.peer import Peer
from presence_sip.transport import (
    Driver,
    PeerIdentity,
    client_context,
    handshakes,
    parse_listen,
    server_context,
)
from presence_sip.transport.stream import StreamConnection
from presence_sip.transport.tls import route_context

pytestmark = pytest.mark.integration

HANDSHAKE_FAILURES = (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def endpoint() -> RecordingEndpoint:
    return RecordingEndpoint()


async def tls_node(
    endpoint: RecordingEndpoint,
    pki: Pki,
    *,
    require_client_cert: bool = True,
    trust: Path | None = None,
) -> Driver:
    """A node serving TLS with the server cert; as a client it presents the client cert."""
    drv = Driver(
        endpoint,
        server_ssl=server_context(
            pki.server.cert, pki.server.key, pki.ca, require_client_cert=require_client_cert
        ),
        client_ssl=client_context(pki.client.cert, pki.client.key, trust or pki.ca),
        route_ssl=route_context(pki.client.cert, pki.client.key, trust or pki.ca),
    )
    await drv.start([parse_listen("tls:127.0.0.1:0")])
    return drv


@pytest.fixture
async def node(endpoint: RecordingEndpoint, pki: Pki) -> AsyncIterator[Driver]:
    drv = await tls_node(endpoint, pki)
    yield drv
    await drv.stop()


def tls_port(drv: Driver) -> int:
    (spec,) = [s for s in drv.local_addresses if s.transport == "tls"]
    return spec.port


async def read_message(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await reader.readexactly(length)


async def test_mutual_auth_ok_and_identity_reported(
    node: Driver, endpoint: RecordingEndpoint, pki: Pki
) -> None:
    context = client_context(pki.client.cert, pki.client.key, pki.ca)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", tls_port(node), ssl=context, server_hostname="127.0.0.1"
    )
    try:
        host, port = writer.get_extra_info("sockname")[:2]
        request = options(host, port, "TLS")
        writer.write(request)
        assert await read_message(reader) == expected_200(request)
        ((peer, identity),) = endpoint.made
        assert (peer.transport, peer.host, peer.port) == ("tls", host, port)
        assert identity == PeerIdentity(
            subject_cn="gw.net-a.test",
            dns_names=("gw.net-a.test",),
            ip_addresses=("127.0.0.1",),
            issuer_cn="Test CA net-b.test",
        )
        assert endpoint.received[0][1] == peer
        server_cert = writer.get_extra_info("ssl_object")
        assert server_cert.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        await close(writer)


async def request_over_tls(port: int, context: ssl.SSLContext) -> bytes:
    """Handshake, send an OPTIONS and read the answer; raises if the server refuses us (a TLS 1.3
    client learns of a rejected certificate only on its first read)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    try:
        writer.write(options("127.0.0.1", 5060, "TLS"))
        async with asyncio.timeout(5):
            data = await reader.read(1)
        if not data:
            raise ConnectionResetError("closed by the server")
        return data
    finally:
        await close(writer)


async def refused(port: int, context: ssl.SSLContext) -> None:
    with pytest.raises(HANDSHAKE_FAILURES):
        await request_over_tls(port, context)


async def test_client_from_unknown_ca_refused(
    node: Driver, endpoint: RecordingEndpoint, pki: Pki
) -> None:
    await refused(
        tls_port(node), client_context(pki.rogue_client.cert, pki.rogue_client.key, pki.ca)
    )
    await asyncio.sleep(0.05)
    assert endpoint.made == []
    assert endpoint.raw == []


async def test_client_without_certificate_refused(
    node: Driver, endpoint: RecordingEndpoint, pki: Pki
) -> None:
    await refused(tls_port(node), client_context(None, None, pki.ca))
    await asyncio.sleep(0.05)
    assert endpoint.made == []
    assert endpoint.raw == []


async def test_optional_client_cert_accepts_anonymous_client(
    endpoint: RecordingEndpoint, pki: Pki
) -> None:
    drv = await tls_node(endpoint, pki, require_client_cert=False)
    try:
        context = client_context(None, None, pki.ca)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port(drv), ssl=context, server_hostname="127.0.0.1"
        )
        request = options("127.0.0.1", 5060, "TLS")
        writer.write(request)
        assert await read_message(reader) == expected_200(request)
        assert endpoint.made[0][1] is None
        await close(writer)
    finally:
        await drv.stop()


async def test_outbound_tls_opened_verified_and_reused(
    endpoint: RecordingEndpoint, pki: Pki
) -> None:
    server_ep = RecordingEndpoint()
    server = await tls_node(server_ep, pki)
    client = await tls_node(endpoint, pki)
    try:
        target = Peer("tls", "127.0.0.1", tls_port(server))
        local = client.local_addresses[0]
        endpoint.queue(options(local.host, local.port, "TLS", call_id="t1@test"), target)
        client.transmit()
        await eventually(lambda: len(endpoint.responses()) == 1)
        endpoint.queue(options(local.host, local.port, "TLS", call_id="t2@test"), target)
        client.transmit()
        await eventually(lambda: len(endpoint.responses()) == 2)
        assert [r.status for r, _ in endpoint.responses()] == [200, 200]
        assert len(server_ep.made) == 1
        assert server_ep.made[0][1] is not None
        assert server_ep.made[0][1].subject_cn == "gw.net-a.test"
        ((peer, identity),) = endpoint.made
        assert identity is not None
        assert identity.subject_cn == "gw1.net-b.test"
        assert identity.ip_addresses == ("127.0.0.1",)
        assert {p for _, p in endpoint.responses()} == {peer}
    finally:
        await client.stop()
        await server.stop()
    assert only_task_left(), asyncio.all_tasks()


async def test_outbound_tls_checks_the_routes_domain_not_the_address(
    endpoint: RecordingEndpoint, pki: Pki
) -> None:
    """RFC 5922 §4, §7.3: a peer network's certificate names its SIP domain, not the address a
    route gives for it; with the route's domain known, the connection is made, without it the
    address is all there is to check and the certificate does not name it."""
    server_ep = RecordingEndpoint()
    server = Driver(
        server_ep,
        server_ssl=server_context(
            pki.domain_server.cert, pki.domain_server.key, pki.ca, require_client_cert=True
        ),
    )
    await server.start([parse_listen("tls:127.0.0.1:0")])
    client = await tls_node(endpoint, pki)
    try:
        target = Peer("tls", "127.0.0.1", tls_port(server))
        endpoint.queue(options("127.0.0.1", 5061, "TLS", call_id="d1@test"), target)
        client.transmit()
        await eventually(lambda: endpoint.lost == [target])
        assert server_ep.made == []
        # A route to another domain through this hop: refused after the handshake, before
        # anything is written (the server never reads a byte of SIP).
        client.tls_names[("127.0.0.1", target.port)] = frozenset({"other.test"})
        endpoint.queue(options("127.0.0.1", 5061, "TLS", call_id="d2@test"), target)
        client.transmit()
        await eventually(lambda: endpoint.lost == [target, target])
        assert server_ep.raw == []
        client.tls_names[("127.0.0.1", target.port)] = frozenset({"other.test", "net-b.test"})
        endpoint.queue(options("127.0.0.1", 5061, "TLS", call_id="d3@test"), target)
        client.transmit()
        await eventually(lambda: len(endpoint.responses()) == 1)
        ((_, identity),) = endpoint.made
        assert identity is not None
        assert identity.subject_cn == "net-b.test"
    finally:
        await client.stop()
        await server.stop()
    assert only_task_left(), asyncio.all_tasks()


async def test_outbound_tls_to_untrusted_server_reports_lost(
    endpoint: RecordingEndpoint, pki: Pki
) -> None:
    rogue_ep = RecordingEndpoint()
    rogue = Driver(
        rogue_ep,
        server_ssl=server_context(
            pki.rogue_server.cert, pki.rogue_server.key, None, require_client_cert=False
        ),
    )
    await rogue.start([parse_listen("tls:127.0.0.1:0")])
    client = await tls_node(endpoint, pki)
    try:
        target = Peer("tls", "127.0.0.1", tls_port(rogue))
        endpoint.queue(options("127.0.0.1", 5061, "TLS"), target)
        client.transmit()
        await eventually(lambda: endpoint.lost == [target])
        assert endpoint.made == []
        assert rogue_ep.raw == []
    finally:
        await client.stop()
        await rogue.stop()
    assert only_task_left(), asyncio.all_tasks()


async def test_outbound_tls_without_client_context_reports_lost(
    endpoint: RecordingEndpoint,
) -> None:
    drv = Driver(endpoint)
    await drv.start([parse_listen("udp:127.0.0.1:0")])
    try:
        target = Peer("tls", "127.0.0.1", 5061)
        endpoint.queue(b"x", target)
        drv.transmit()
        assert endpoint.lost == [target]
    finally:
        await drv.stop()


def test_bad_certificate_files_are_config_errors(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read TLS certificate .*missing\.crt"):
        server_context(tmp_path / "missing.crt", pki.server.key, pki.ca, require_client_cert=True)
    # The file at fault is the one named (audit: the certificate was named for any problem).
    with pytest.raises(ConfigError, match=r"cannot read TLS key .*missing\.key"):
        server_context(pki.server.cert, tmp_path / "missing.key", pki.ca, require_client_cert=True)
    with pytest.raises(ConfigError, match="cannot read TLS key"):
        server_context(pki.server.cert, tmp_path, pki.ca, require_client_cert=True)
    with pytest.raises(ConfigError, match=r"with key .*: .*is the key the certificate's"):
        server_context(pki.server.cert, pki.server.cert, pki.ca, require_client_cert=True)
    with pytest.raises(ConfigError, match="with key"):
        server_context(pki.server.cert, pki.client.key, pki.ca, require_client_cert=True)
    with pytest.raises(ConfigError, match="cannot load CA bundle"):
        client_context(pki.client.cert, pki.client.key, tmp_path / "missing-ca.crt")
    with pytest.raises(ConfigError, match="needs a CA bundle"):
        server_context(pki.server.cert, pki.server.key, None, require_client_cert=True)
    with pytest.raises(ConfigError, match="needs its key"):
        client_context(pki.client.cert, None, pki.ca)


def test_contexts_require_tls12(pki: Pki) -> None:
    server = server_context(pki.server.cert, pki.server.key, pki.ca, require_client_cert=True)
    client = client_context(pki.client.cert, pki.client.key, pki.ca)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname


def test_identity_from_certificate(pki: Pki) -> None:
    der = ssl.PEM_cert_to_DER_cert(pki.server.cert.read_text())
    assert PeerIdentity.from_certificate(der) == PeerIdentity(
        "gw1.net-b.test", ("gw1.net-b.test",), ("127.0.0.1",), "Test CA net-b.test"
    )


async def test_stop_during_inbound_handshake_leaves_nothing(
    endpoint: RecordingEndpoint, pki: Pki
) -> None:
    drv = await tls_node(endpoint, pki)
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_port(drv))  # plain TCP
    await eventually(lambda: len(drv._tasks) == 1)  # the handshake task waits for a ClientHello
    await drv.stop()
    assert only_task_left(), asyncio.all_tasks()
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    assert endpoint.made == []
    await close(writer)


async def test_early_data_after_handshake_is_not_lost(
    node: Driver, endpoint: RecordingEndpoint, pki: Pki
) -> None:
    # The request is written before the client even waits for the handshake to settle.
    context = client_context(pki.client.cert, pki.client.key, pki.ca)
    for n in range(5):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port(node), ssl=context, server_hostname="127.0.0.1"
        )
        request = options("127.0.0.1", 5061, "TLS", call_id=f"e{n}@test")
        writer.write(request)
        assert await read_message(reader) == expected_200(request)
        await close(writer)


def test_a_node_checks_tls_routes_against_their_domain(pki: Pki, tmp_path: Path) -> None:
    config = NodeConfig(
        domain="net-a.test",
        data_dir=str(tmp_path / "data"),
        listen=(parse_listen("tls:127.0.0.1:0"),),
        tls=TlsSettings(str(pki.client.cert), str(pki.client.key), str(pki.ca)),
        routes={
            "net-b.test": (NextHop("tls", "127.0.2.2", 5061), NextHop("udp", "127.0.2.3", 5060)),
        },
    )
    node = Node(config)
    try:
        assert node.driver.tls_names == {("127.0.2.2", 5061): frozenset({"net-b.test"})}
    finally:
        node.close()


async def test_handshakes_refused_at_the_cap_are_logged(
    endpoint: RecordingEndpoint, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections that never finish their handshake fill the pending slots: what is refused
    then is said, once (audit: silently reset)."""
    drv = Driver(
        endpoint,
        limits=Limits(max_connections=2),
        server_ssl=server_context(
            pki.server.cert, pki.server.key, pki.ca, require_client_cert=True
        ),
    )
    await drv.start([parse_listen("tls:127.0.0.1:0")])
    stalled: list[asyncio.StreamWriter] = []
    try:
        with caplog.at_level(logging.WARNING, logger="presence_sip.transport.driver"):
            for _ in range(4):
                _, writer = await asyncio.open_connection("127.0.0.1", tls_port(drv))
                stalled.append(writer)
            await eventually(lambda: "refusing TLS connections" in caplog.text)
        warnings = [r.getMessage() for r in caplog.records if "refusing TLS" in r.getMessage()]
        assert len(warnings) == 1
        assert "2 handshakes pending" in warnings[0]
    finally:
        for writer in stalled:
            writer.close()
        await drv.stop()


async def test_the_c_heap_is_trimmed_after_a_burst_of_handshakes(
    endpoint: RecordingEndpoint, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aborted handshakes leave C heap glibc keeps (40 KB each in the audit): after a burst
    the driver gives it back (runtime/heap.py), once, after the burst."""
    trims: list[float] = []
    monkeypatch.setattr(handshakes, "trim_heap", lambda: trims.append(time.monotonic()))
    monkeypatch.setattr(handshakes, "TRIM_AFTER_HANDSHAKES", 3)
    monkeypatch.setattr(handshakes, "TRIM_DELAY", 0.05)
    drv = await tls_node(endpoint, pki)
    try:
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", tls_port(drv))
            writer.close()  # the handshake ends at once: EOF
        await eventually(lambda: len(trims) == 1)
        await asyncio.sleep(0.2)
        assert len(trims) == 1  # once for the burst, not once per handshake
    finally:
        await drv.stop()
    assert trim_heap() in (True, False)  # the real one runs (glibc) or says it cannot


NOT_TLS = b"OPTIONS sip:net-b.test SIP/2.0\r\n\r\n"
"""What a client that speaks plain SIP to a TLS port sends: its handshake fails at once."""
FAILED_LINE = re.compile(r"TLS handshake from \('(127\.0\.0\.[1-3])', \d+\) failed: .+")
SUMMARY_LINE = re.compile(
    r"(\d+) more TLS handshakes failed, not logged \((\d+) lines a source, (\d+) in all, in"
    r" ([\d.]+) s at most\), from (\d+) source\(s\); the most from (127\.0\.0\.[1-3])"
    r" \((\d+)\), the latest: .+"
)


async def fail_handshake(port: int, source: str) -> None:
    """Plain SIP from ``source`` to the TLS port; returns once the node has closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(NOT_TLS)
    try:
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    except ConnectionResetError:
        pass
    await close(writer)


def handshake_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "presence_sip.transport.stream" and "TLS handshake" in r.getMessage()
    ]


def accounted_for(lines: list[str]) -> int:
    """The failed handshakes ``lines`` log one by one, plus those they count."""
    single = sum(1 for line in lines if FAILED_LINE.fullmatch(line))
    matches = (SUMMARY_LINE.fullmatch(line) for line in lines)
    return single + sum(int(m.group(1)) for m in matches if m is not None)


async def test_a_handshake_flood_from_one_source_does_not_hide_another_sources_line(
    endpoint: RecordingEndpoint, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A handshake flood, the flood guard off (the default): it made one INFO line per failed
    handshake, then the first 10 a minute for the whole node, so a flood from one address hid
    the line of a phone that does not trust the node's certificate.  Each source gets its first
    ``FAILED_LINES_PER_SOURCE`` of a minute; the others are counted, in one line when the
    minute ends, or here when the node stops, naming the source with the most."""
    per_source = handshakes.FAILED_LINES_PER_SOURCE
    flood = 4 * per_source
    drv = await tls_node(endpoint, pki, require_client_cert=False)
    try:
        assert drv.flood is None
        with caplog.at_level(logging.INFO, logger="presence_sip.transport.stream"):
            for _ in range(flood):
                await fail_handshake(tls_port(drv), "127.0.0.1")
            await fail_handshake(tls_port(drv), "127.0.0.2")  # the phone
            for _ in range(2):
                await fail_handshake(tls_port(drv), "127.0.0.3")
            logged = [FAILED_LINE.fullmatch(line) for line in handshake_lines(caplog)]
            assert [m.group(1) if m else None for m in logged] == (
                ["127.0.0.1"] * per_source + ["127.0.0.2", "127.0.0.3", "127.0.0.3"]
            )
            await drv.stop()  # before the minute is over: the count is logged now
    finally:
        await drv.stop()
    summary = handshake_lines(caplog)[per_source + 3 :]
    assert len(summary) == 1, summary
    counted = SUMMARY_LINE.fullmatch(summary[0])
    assert counted is not None, summary
    assert counted.groups() == (
        str(flood - per_source), str(per_source), str(handshakes.FAILED_LINES),
        f"{handshakes.FAILED_INTERVAL:g}", "1", "127.0.0.1", str(flood - per_source),
    )  # fmt: skip
    assert endpoint.made == []


async def test_failed_handshakes_from_many_sources_are_bounded_in_all(
    endpoint: RecordingEndpoint,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many sources cannot fill the log either: ``FAILED_LINES`` a minute in all (here 4, two
    a source), and the line that counts the others says from how many sources."""
    monkeypatch.setattr(handshakes, "FAILED_LINES", 4)
    monkeypatch.setattr(handshakes, "FAILED_LINES_PER_SOURCE", 2)
    drv = await tls_node(endpoint, pki, require_client_cert=False)
    try:
        with caplog.at_level(logging.INFO, logger="presence_sip.transport.stream"):
            for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
                for _ in range(3):
                    await fail_handshake(tls_port(drv), source)
            logged = [FAILED_LINE.fullmatch(line) for line in handshake_lines(caplog)]
            assert [m.group(1) if m else None for m in logged] == (
                ["127.0.0.1"] * 2 + ["127.0.0.2"] * 2
            )
            await drv.stop()  # the count is logged now
    finally:
        await drv.stop()
    (summary,) = handshake_lines(caplog)[4:]
    counted = SUMMARY_LINE.fullmatch(summary)
    assert counted is not None, summary
    assert counted.groups() == ("5", "2", "4", "60", "3", "127.0.0.3", "3")


async def test_failed_handshakes_reported_while_the_node_stops_get_their_line(
    endpoint: RecordingEndpoint, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed handshake reported while the driver stops (it is no longer running: nothing
    can be scheduled) was counted after the stop had given its count: never logged.  The
    count is given once the handshake tasks have ended.  (asyncio turns a handshake failure
    that races the stop's cancellation into a cancellation, so here the failure comes from a
    task of the test's own, run and cancelled by the driver as a handshake is.)"""
    per_source = handshakes.FAILED_LINES_PER_SOURCE
    drv = await tls_node(endpoint, pki, require_client_cert=False)
    late = StreamConnection(drv, 999, "tls", Limits(), target=Peer("tls", "127.0.0.1", 40000, 999))

    async def failing_as_the_driver_stops() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            drv.handshake_aborted(late, failed=True, reason="failed as the node stopped")

    try:
        with caplog.at_level(logging.INFO, logger="presence_sip.transport.stream"):
            for _ in range(per_source):  # the source's lines are taken
                await fail_handshake(tls_port(drv), "127.0.0.1")
            assert drv.spawn(failing_as_the_driver_stops())
            await asyncio.sleep(0)
            await drv.stop()
    finally:
        await drv.stop()
    lines = handshake_lines(caplog)
    assert len(lines) == per_source + 1, lines
    assert lines[-1] == (
        "1 more TLS handshakes failed, not logged (3 lines a source, 20 in all, in 60 s at"
        " most), from 1 source(s); the most from 127.0.0.1 (1), the latest: failed as the node"
        " stopped"
    )


async def test_the_failed_handshakes_not_logged_are_counted_when_the_interval_ends(
    endpoint: RecordingEndpoint,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The count comes while the node serves, once the interval is over (here 0.5 s, not a
    minute); the next failed handshake starts another interval and is logged on its own."""
    monkeypatch.setattr(handshakes, "FAILED_LINES_PER_SOURCE", 2)
    monkeypatch.setattr(handshakes, "FAILED_INTERVAL", 0.5)
    drv = await tls_node(endpoint, pki, require_client_cert=False)
    try:
        with caplog.at_level(logging.INFO, logger="presence_sip.transport.stream"):
            for _ in range(7):
                await fail_handshake(tls_port(drv), "127.0.0.1")
            # 7 failures within one interval: 2 lines, then "5 more" when it ends (a slow
            # machine may spread them over two: each failure is still a line or counted)
            await eventually(lambda: accounted_for(handshake_lines(caplog)) == 7)
            assert any(map(SUMMARY_LINE.fullmatch, handshake_lines(caplog)))
            await asyncio.sleep(0.5)  # (any interval started is over)
            await fail_handshake(tls_port(drv), "127.0.0.2")
            latest = FAILED_LINE.fullmatch(handshake_lines(caplog)[-1])
            assert latest is not None
            assert latest.group(1) == "127.0.0.2"
    finally:
        await drv.stop()
