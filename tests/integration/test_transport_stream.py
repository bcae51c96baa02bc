"""TCP transport: framing, size cap, keep-alive, idle close, connection reuse, on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from certs_helper import RecordingEndpoint, eventually, expected_200, only_task_left, options
from loopback import free_port

from presence_sip.config import Limits
from presence_sip.sip.peer import Peer
from presence_sip.transport import Driver, parse_listen, stream
from presence_sip.transport.outbound import source_host
from presence_sip.transport.stream import LINGER_MAX_BYTES, WRITE_HIGH_WATER, WRITE_LOW_WATER

pytestmark = pytest.mark.integration

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[int], Awaitable[Stream]]


@pytest.fixture
def endpoint() -> RecordingEndpoint:
    return RecordingEndpoint()


async def started(endpoint: RecordingEndpoint, limits: Limits | None = None) -> Driver:
    drv = Driver(endpoint, limits=limits)
    await drv.start([parse_listen("tcp:127.0.0.1:0")])
    return drv


@pytest.fixture
async def driver(endpoint: RecordingEndpoint) -> AsyncIterator[Driver]:
    drv = await started(endpoint)
    yield drv
    await drv.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    writers: list[asyncio.StreamWriter] = []

    async def open_(port: int) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writers.append(writer)
        return reader, writer

    yield open_
    for writer in writers:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


def tcp_port(drv: Driver) -> int:
    (spec,) = [s for s in drv.local_addresses if s.transport == "tcp"]
    return spec.port


async def read_message(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value)
        return head + await reader.readexactly(length)


async def read_eof(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        return await reader.read()


def own_address(writer: asyncio.StreamWriter) -> tuple[str, int]:
    host, port = writer.get_extra_info("sockname")[:2]
    return host, port


async def test_options_answered_with_exact_200(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    reader, writer = await connect(tcp_port(driver))
    host, port = own_address(writer)
    request = options(host, port, "TCP")
    writer.write(request)
    assert await read_message(reader) == expected_200(request)
    ((peer, identity),) = endpoint.made
    assert (peer.transport, peer.host, peer.port) == ("tcp", host, port)
    assert peer.connection > 0
    assert identity is None
    assert endpoint.received[0][1] == peer


async def test_two_messages_in_one_segment(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    reader, writer = await connect(tcp_port(driver))
    host, port = own_address(writer)
    first = options(host, port, "TCP", call_id="a@test")
    second = options(host, port, "TCP", call_id="b@test")
    writer.write(first + second)
    assert await read_message(reader) == expected_200(first)
    assert await read_message(reader) == expected_200(second)
    assert [data for data, _ in endpoint.raw] == [first, second]


async def test_message_split_byte_by_byte(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    reader, writer = await connect(tcp_port(driver))
    host, port = own_address(writer)
    request = options(host, port, "TCP")
    for i in range(len(request)):
        writer.write(request[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0.0005)
    assert await read_message(reader) == expected_200(request)
    assert [data for data, _ in endpoint.raw] == [request]


async def test_over_size_cap_gets_513_then_close(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    reader, writer = await connect(tcp_port(driver))
    host, port = own_address(writer)
    request = options(host, port, "TCP").replace(b"Content-Length: 0", b"Content-Length: 70000")
    writer.write(request)
    answer = await read_message(reader)
    assert answer.startswith(b"SIP/2.0 513 ")
    assert await read_eof(reader) == b""
    ((data, error, source),) = endpoint.malformed
    assert data == request  # the header block
    assert error.status == 513
    writer.close()  # the node lingers until the peer closes (see the tests below)
    await eventually(lambda: endpoint.lost == [source])
    assert endpoint.raw == []


def oversize_head(writer: asyncio.StreamWriter, length: int) -> bytes:
    host, port = own_address(writer)
    return options(host, port, "TCP").replace(
        b"Content-Length: 0", f"Content-Length: {length}".encode()
    )


async def test_oversize_message_lingers_until_the_peer_closes(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    """Lingering close: a peer still sending the body gets the whole 513, then EOF, not a reset.

    Most of the body is sent after the answer: without the lingering close it meets a closed
    socket, the node's kernel answers with RST and the peer's writes and reads fail.
    """
    reader, writer = await connect(tcp_port(driver))
    body = b"x" * 70_000
    writer.write(oversize_head(writer, len(body)) + body[:20_000])
    assert (await read_message(reader)).startswith(b"SIP/2.0 513 Message too large\r\n")
    for offset in range(20_000, len(body), 5_000):
        writer.write(body[offset : offset + 5_000])
        await writer.drain()
        await asyncio.sleep(0.002)
    assert await read_eof(reader) == b""  # a FIN: read_eof raises ConnectionResetError on RST
    assert endpoint.lost == []  # half-closed and still reading: still counted
    assert driver._inbound == 1
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: len(endpoint.lost) == 1)
    assert driver._inbound == 0
    assert endpoint.raw == []


async def send_until_reset(writer: asyncio.StreamWriter, chunk: bytes, pause: float) -> int:
    """Write ``chunk`` after ``chunk`` until the node resets the connection; bytes written."""
    sent = 0
    async with asyncio.timeout(stream.CLOSE_GRACE + 5):
        while True:
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                return sent
            sent += len(chunk)
            await asyncio.sleep(pause)


async def test_lingering_stops_after_max_bytes(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that never stops sending is cut off once LINGER_MAX_BYTES have been dropped."""
    caplog.set_level(logging.INFO, logger=stream.__name__)
    reader, writer = await connect(tcp_port(driver))
    writer.write(oversize_head(writer, 100_000_000))
    assert (await read_message(reader)).startswith(b"SIP/2.0 513 ")
    assert await read_eof(reader) == b""
    sent = await send_until_reset(writer, b"x" * 65536, 0)
    assert sent > LINGER_MAX_BYTES
    assert "bytes sent after the answer; aborting" in caplog.text
    await eventually(lambda: len(endpoint.lost) == 1)
    assert driver._inbound == 0


async def test_lingering_stops_after_close_grace(
    driver: Driver,
    endpoint: RecordingEndpoint,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer that trickles bytes and never closes is cut off after CLOSE_GRACE (shortened)."""
    monkeypatch.setattr(stream, "CLOSE_GRACE", 0.3)
    caplog.set_level(logging.INFO, logger=stream.__name__)
    reader, writer = await connect(tcp_port(driver))
    loop = asyncio.get_running_loop()
    asked = loop.time()
    writer.write(oversize_head(writer, 100_000_000))
    assert (await read_message(reader)).startswith(b"SIP/2.0 513 ")
    sent = await send_until_reset(writer, b"x" * 100, 0.02)
    assert loop.time() - asked >= 0.3
    assert sent < LINGER_MAX_BYTES
    assert "not closed by the peer within 0.3 s; aborting" in caplog.text
    await eventually(lambda: len(endpoint.lost) == 1)
    assert driver._inbound == 0


async def test_endless_header_block_closes_connection(
    endpoint: RecordingEndpoint, connect: Connect
) -> None:
    drv = await started(endpoint, Limits(max_message_size=2000))
    try:
        reader, writer = await connect(tcp_port(drv))
        writer.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n" + b"X-Pad: aaaa\r\n" * 400)
        assert await read_eof(reader) == b""  # no addressable request: closed without an answer
        ((data, error, _),) = endpoint.malformed
        assert error.status == 513
        assert 0 < len(data) <= 2000
    finally:
        await drv.stop()


async def test_missing_content_length_gets_400_then_close(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    reader, writer = await connect(tcp_port(driver))
    host, port = own_address(writer)
    request = options(host, port, "TCP").replace(b"Content-Length: 0\r\n", b"")
    writer.write(request + options(host, port, "TCP", call_id="never@test"))
    answer = await read_message(reader)
    assert answer.startswith(b"SIP/2.0 400 Missing Content-Length\r\n")
    assert await read_eof(reader) == b""
    assert endpoint.raw == []


async def test_double_crlf_ping_gets_crlf_pong(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    reader, writer = await connect(tcp_port(driver))
    writer.write(b"\r\n\r\n")
    async with asyncio.timeout(5):
        assert await reader.readexactly(2) == b"\r\n"
    host, port = own_address(writer)
    request = options(host, port, "TCP")
    writer.write(request + b"\r\n\r\n")
    assert await read_message(reader) == expected_200(request)
    async with asyncio.timeout(5):
        assert await reader.readexactly(2) == b"\r\n"
    assert [data for data, _ in endpoint.raw] == [request]


async def test_idle_connection_closed(endpoint: RecordingEndpoint, connect: Connect) -> None:
    drv = await started(endpoint, Limits(idle_connection_timeout=0.2))
    try:
        reader, writer = await connect(tcp_port(drv))
        host, port = own_address(writer)
        request = options(host, port, "TCP")
        await asyncio.sleep(0.1)
        writer.write(request)  # activity pushes the deadline
        assert await read_message(reader) == expected_200(request)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        assert await read_eof(reader) == b""
        assert loop.time() - sent >= 0.15
        await eventually(lambda: len(endpoint.lost) == 1)
        assert endpoint.lost[0] == endpoint.made[0][0]
    finally:
        await drv.stop()


async def test_a_message_trickled_too_slowly_closes_the_connection(
    endpoint: RecordingEndpoint, connect: Connect
) -> None:
    """A byte now and then keeps a connection from idling, not a message from finishing: after
    ``message_read_timeout`` the connection closes (slow senders cannot hold every slot)."""
    drv = await started(endpoint, Limits(message_read_timeout=0.3, idle_connection_timeout=5.0))
    try:
        reader, writer = await connect(tcp_port(drv))
        host, port = own_address(writer)
        request = options(host, port, "TCP")
        loop = asyncio.get_running_loop()
        begun = loop.time()
        for i in range(3):  # one byte every 0.1 s: never idle, never whole
            writer.write(request[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.1)
        assert await read_eof(reader) == b""
        assert 0.3 <= loop.time() - begun < 2.0
        assert endpoint.raw == []
        await eventually(lambda: len(endpoint.lost) == 1)
    finally:
        await drv.stop()


async def test_connection_limit(endpoint: RecordingEndpoint, connect: Connect) -> None:
    drv = await started(endpoint, Limits(max_connections=1))
    try:
        reader1, writer1 = await connect(tcp_port(drv))
        await eventually(lambda: len(endpoint.made) == 1)
        reader2, _ = await connect(tcp_port(drv))
        assert await read_eof(reader2) == b""
        host, port = own_address(writer1)
        request = options(host, port, "TCP")
        writer1.write(request)
        assert await read_message(reader1) == expected_200(request)
        assert len(endpoint.made) == 1
    finally:
        await drv.stop()


async def test_connections_refused_at_the_cap_are_logged_once_a_minute(
    endpoint: RecordingEndpoint, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A flood of connections beyond ``max_connections`` is one warning with a count, not a
    line per connection (hostile-client audit: 2,182 lines in 20 s from one source)."""
    drv = await started(endpoint, Limits(max_connections=1))
    try:
        with caplog.at_level(logging.WARNING, logger="presence_sip.transport.driver"):
            await connect(tcp_port(drv))
            await eventually(lambda: len(endpoint.made) == 1)
            for _ in range(5):
                reader, _ = await connect(tcp_port(drv))
                assert await read_eof(reader) == b""
        warnings = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
        assert len(warnings) == 1
        assert warnings[0].startswith(
            "refusing connections: 1 open (max_connections); 1 refused so far, the latest from"
            " tcp:127.0.0.1:"
        )
    finally:
        await drv.stop()


async def test_a_per_source_cap_turned_on_by_a_reload_counts_the_connections_already_up(
    endpoint: RecordingEndpoint, connect: Connect
) -> None:
    """``max_connections_per_source`` set by a reload (the flood guard was off): the two
    connections up from 127.0.0.1 count, so a third is refused; once one of them closes, one
    more is taken, and no more (its end lowered the count by one, not below what is open)."""
    drv = await started(endpoint)
    try:
        port = tcp_port(drv)
        first, second = [await connect(port) for _ in range(2)]
        await eventually(lambda: len(endpoint.made) == 2)
        drv.use_flood_limits(Limits(max_connections_per_source=2))
        refused, _ = await connect(port)
        assert await read_eof(refused) == b""
        first[1].close()
        await eventually(lambda: len(endpoint.lost) == 1)
        taken_reader, taken_writer = await connect(port)
        await eventually(lambda: len(endpoint.made) == 3)
        host, own_port = own_address(taken_writer)
        request = options(host, own_port, "TCP")
        taken_writer.write(request)
        assert await read_message(taken_reader) == expected_200(request)
        refused_again, _ = await connect(port)
        assert await read_eof(refused_again) == b""
        assert drv.flood is not None
        assert drv.flood.refused_connections == 2
        host, own_port = own_address(second[1])  # the older connection is still served
        request = options(host, own_port, "TCP", call_id="older@test")
        second[1].write(request)
        assert await read_message(second[0]) == expected_200(request)
    finally:
        await drv.stop()


async def test_response_on_same_connection_by_id(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    reader, _ = await connect(tcp_port(driver))
    await eventually(lambda: len(endpoint.made) == 1)
    peer = endpoint.made[0][0]
    endpoint.queue(b"NOTIFY-BYTES", peer)
    driver.transmit()
    async with asyncio.timeout(5):
        assert await reader.readexactly(12) == b"NOTIFY-BYTES"


async def test_outbound_connection_opened_and_reused(endpoint: RecordingEndpoint) -> None:
    server_ep = RecordingEndpoint()
    server = await started(server_ep)
    client = await started(endpoint)
    try:
        target = Peer("tcp", "127.0.0.1", tcp_port(server))
        local = client.local_addresses[0]
        for n in (1, 2):
            endpoint.queue(options(local.host, local.port, "TCP", call_id=f"o{n}@test"), target)
            client.transmit()  # the first is queued while the connection is being opened
        await eventually(lambda: len(endpoint.responses()) == 2)
        assert [r.status for r, _ in endpoint.responses()] == [200, 200]
        assert len(server_ep.made) == 1
        ((peer, _),) = endpoint.made
        assert (peer.transport, peer.host, peer.port) == ("tcp", "127.0.0.1", target.port)
        assert {p for _, p in endpoint.received} == {peer}
        # a third request after the connection is up goes on the same connection
        endpoint.queue(options(local.host, local.port, "TCP", call_id="o3@test"), target)
        client.transmit()
        await eventually(lambda: len(endpoint.responses()) == 3)
        assert len(server_ep.made) == 1
    finally:
        await client.stop()
        await server.stop()
    assert only_task_left()


async def test_outbound_connection_leaves_from_the_listen_address(
    endpoint: RecordingEndpoint,
) -> None:
    """The peer sees the address the node serves on (127.0.0.7), not the kernel's choice
    for the destination (127.0.0.1 on loopback): what a peer checking addresses expects."""
    server_ep = RecordingEndpoint()
    server = await started(server_ep)
    client = Driver(endpoint)
    await client.start([parse_listen("tcp:127.0.0.7:0")])
    try:
        local = client.local_addresses[0]
        target = Peer("tcp", "127.0.0.1", tcp_port(server))
        endpoint.queue(options(local.host, local.port, "TCP", call_id="src@test"), target)
        client.transmit()
        await eventually(lambda: len(endpoint.responses()) == 1)
        ((accepted, _),) = server_ep.made
        assert accepted.host == "127.0.0.7"
        # Never a loopback source towards another address, nor one of another transport.
        servers = client._listeners.servers
        assert source_host(servers, "tcp", "192.0.2.1") is None  # not contacted: a lookup
        assert source_host(servers, "tcp", "::1") is None
        assert source_host(servers, "tls", "127.0.0.1") is None
    finally:
        await client.stop()
        await server.stop()


async def test_stale_connection_id_falls_back_to_a_new_connection(
    endpoint: RecordingEndpoint,
) -> None:
    server_ep = RecordingEndpoint()
    server = await started(server_ep)
    client = await started(endpoint)
    try:
        target = Peer("tcp", "127.0.0.1", tcp_port(server), connection=999)
        endpoint.queue(b"\r\n\r\n", target)
        client.transmit()
        await eventually(lambda: len(server_ep.made) == 1)
    finally:
        await client.stop()
        await server.stop()


async def test_connect_failure_reports_connection_lost(
    endpoint: RecordingEndpoint, driver: Driver
) -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    target = Peer("tcp", "127.0.0.1", port)
    endpoint.queue(b"x", target)
    endpoint.queue(b"y", target)
    driver.transmit()
    await eventually(lambda: endpoint.lost == [target])
    assert endpoint.made == []
    assert only_task_left()


async def test_failed_connections_warn_once_a_minute_with_a_count(
    endpoint: RecordingEndpoint, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    """Watchers that take no TCP refuse a connection each time a large request is moved to
    TCP for them (RFC 3261 §18.1.1): one warning a minute, not one per refusal."""
    targets = [Peer("tcp", "127.0.0.1", free_port()) for _ in range(3)]
    with caplog.at_level("DEBUG", logger="presence_sip.transport.driver"):
        for target in targets:
            endpoint.queue(b"x", target)
        driver.transmit()
        await eventually(lambda: len(endpoint.lost) == 3)
        driver._send_failures.limit._next = 0.0  # a minute later
        late = Peer("tcp", "127.0.0.1", free_port())
        endpoint.queue(b"x", late)
        driver.transmit()
        await eventually(lambda: len(endpoint.lost) == 4)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert warnings[0].startswith("cannot connect to tcp:127.0.0.1:")
    assert warnings[1].startswith(f"cannot connect to {late}: ")
    assert warnings[1].endswith("(2 more failed since the last warning)")
    debug = [r for r in caplog.records if r.getMessage().startswith("cannot connect")]
    assert len(debug) == 4


async def test_connections_the_node_opens_are_capped_too(endpoint: RecordingEndpoint) -> None:
    """``max_connections`` bounds the connections the node opens (apart from those it
    accepts): a request beyond them fails at once (and is reported lost) instead of taking one
    more file descriptor."""
    one_ep, other_ep = RecordingEndpoint(), RecordingEndpoint()
    one, other = await started(one_ep), await started(other_ep)
    client = await started(endpoint, Limits(max_connections=1))
    try:
        local = client.local_addresses[0]
        first = Peer("tcp", "127.0.0.1", tcp_port(one))
        endpoint.queue(options(local.host, local.port, "TCP", call_id="cap1@test"), first)
        client.transmit()
        await eventually(lambda: len(endpoint.responses()) == 1)
        second = Peer("tcp", "127.0.0.1", tcp_port(other))
        endpoint.queue(options(local.host, local.port, "TCP", call_id="cap2@test"), second)
        client.transmit()
        await eventually(lambda: endpoint.lost == [second])
        await asyncio.sleep(0.1)
        assert (len(one_ep.made), len(other_ep.made)) == (1, 0)
    finally:
        await client.stop()
        await one.stop()
        await other.stop()


async def test_peer_closing_reports_connection_lost(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    _, writer = await connect(tcp_port(driver))
    await eventually(lambda: len(endpoint.made) == 1)
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: endpoint.lost == [endpoint.made[0][0]])
    # a later send to the closed connection opens a new one to the same address (refused here)
    old = endpoint.made[0][0]
    endpoint.queue(b"x", old)
    driver.transmit()
    await eventually(lambda: len(endpoint.lost) == 3)
    # reported for the Peer the message was addressed to and for the address itself
    assert set(endpoint.lost[1:]) == {old, old.without_connection()}


async def test_a_second_connection_of_an_address_takes_over_when_the_first_closes(
    driver: Driver, endpoint: RecordingEndpoint
) -> None:
    """A peer that listens on port P and connects from P too (SO_REUSEPORT): the node's own
    connection to P closing leaves the peer's connection from P, which the next message for P
    takes (RFC 3261 §18.1.1), without a new connection; the endpoint is told of both."""
    accepted: list[asyncio.StreamWriter] = []
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while data := await reader.read(100):
            received.put_nowait(data)

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, reuse_port=True)
    port = listener.sockets[0].getsockname()[1]
    address = Peer("tcp", "127.0.0.1", port)
    from_listening_port = socket.socket()
    from_listening_port.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    from_listening_port.bind(("127.0.0.1", port))
    try:
        endpoint.queue(b"TO-P-FIRST", address)  # the node opens a connection to P
        driver.transmit()
        async with asyncio.timeout(5):
            assert await received.get() == b"TO-P-FIRST"
        from_listening_port.setblocking(False)
        await asyncio.get_running_loop().sock_connect(
            from_listening_port, ("127.0.0.1", tcp_port(driver))
        )
        reader, writer = await asyncio.open_connection(sock=from_listening_port)
        await eventually(lambda: len(endpoint.made) == 2)
        assert {p.without_connection() for p, _ in endpoint.made} == {address}
        accepted[0].close()  # the peer closes the node's connection
        await eventually(lambda: len(endpoint.lost) == 1)
        endpoint.queue(b"TO-P-AGAIN", address)
        driver.transmit()
        async with asyncio.timeout(5):
            assert await reader.readexactly(10) == b"TO-P-AGAIN"
        assert len(accepted) == 1  # no new connection to P
        writer.close()
    finally:
        listener.close()
        await listener.wait_closed()


async def test_stop_with_open_and_pending_connections(
    endpoint: RecordingEndpoint, connect: Connect
) -> None:
    server_ep = RecordingEndpoint()
    server = await started(server_ep)
    drv = await started(endpoint)
    reader, _ = await connect(tcp_port(drv))
    await eventually(lambda: len(endpoint.made) == 1)
    endpoint.queue(b"x", Peer("tcp", "127.0.0.1", tcp_port(server)))
    drv.transmit()  # a connect task is now in flight
    await drv.stop()
    await server.stop()
    assert await read_eof(reader) == b""
    assert only_task_left()


async def test_peer_not_reading_pauses_our_reading(
    driver: Driver, endpoint: RecordingEndpoint, connect: Connect
) -> None:
    reader, writer = await connect(tcp_port(driver))
    await eventually(lambda: len(endpoint.made) == 1)
    conn = driver._connections[endpoint.made[0][0].connection]
    transport = conn._transport
    assert transport is not None
    assert transport.get_write_buffer_limits() == (WRITE_LOW_WATER, WRITE_HIGH_WATER)
    conn.pause_writing()  # what asyncio calls when our unsent bytes pass the high-water mark
    assert not transport.is_reading()
    conn.resume_writing()
    assert transport.is_reading()
    host, port = own_address(writer)
    request = options(host, port, "TCP")
    writer.write(request)
    assert await read_message(reader) == expected_200(request)
