"""UDP transport and the driver's pump, on real loopback sockets."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from certs_helper import RecordingEndpoint, eventually, expected_200, only_task_left, options

from presence_sip.config import Limits
from presence_sip.sip.errors import ConfigError, TransportError
from presence_sip.sip.peer import Peer
from presence_sip.transport import Driver, ListenSpec, parse_listen
from presence_sip.transport.driver import (
    BURST_SEND_AFTER,
    BURST_SEND_EVERY,
    INPUT_FIRST_FOR,
    LOAD_WINDOW,
    SPARE_BELOW,
    TIMER_SLOTS,
)
from presence_sip.transport.udp import RECEIVE_BUFFER

pytestmark = pytest.mark.integration


@pytest.fixture
def endpoint() -> RecordingEndpoint:
    return RecordingEndpoint()


@pytest.fixture
async def driver(endpoint: RecordingEndpoint) -> AsyncIterator[Driver]:
    drv = Driver(endpoint)
    await drv.start([parse_listen("udp:127.0.0.1:0")])
    yield drv
    await drv.stop()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


def udp_port(drv: Driver) -> int:
    (spec,) = [s for s in drv.local_addresses if s.transport == "udp"]
    return spec.port


async def recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        data, addr = await loop.sock_recvfrom(sock, 70000)
    return data, addr


async def test_options_answered_with_exact_200(
    driver: Driver, endpoint: RecordingEndpoint, client: socket.socket
) -> None:
    host, port = client.getsockname()
    request = options(host, port)
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(client, request, ("127.0.0.1", udp_port(driver)))
    data, addr = await recv(client)
    assert data == expected_200(request)
    assert addr == ("127.0.0.1", udp_port(driver))
    ((message, source),) = endpoint.received
    assert message.call_id == "c1@test"
    assert source == Peer("udp", host, port)
    assert endpoint.raw[0][0] == request


async def test_datagram_over_size_cap_still_reaches_endpoint(
    endpoint: RecordingEndpoint, client: socket.socket
) -> None:
    # The driver never drops by size: the endpoint's parser decides (513), RFC 3261 §18.1.1.
    drv = Driver(endpoint, limits=Limits(max_message_size=1000))
    await drv.start([parse_listen("udp:127.0.0.1:0")])
    try:
        host, port = client.getsockname()
        request = options(host, port)
        big = request[:-2] + b"X-Pad: " + b"a" * 60000 + b"\r\n\r\n"
        await asyncio.get_running_loop().sock_sendto(client, big, ("127.0.0.1", udp_port(drv)))
        data, _ = await recv(client)
        assert data.startswith(b"SIP/2.0 200 ")
        assert endpoint.raw[0][0] == big
    finally:
        await drv.stop()


async def test_receive_buffer_enlarged(driver: Driver, rmem_max: int) -> None:
    (listener,) = driver._udp
    assert listener._transport is not None
    sock = listener._transport.get_extra_info("socket")
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert granted >= min(RECEIVE_BUFFER, rmem_max)


async def test_driver_sends_request_and_sees_response(
    driver: Driver, endpoint: RecordingEndpoint, client: socket.socket
) -> None:
    host, port = client.getsockname()
    endpoint.queue(b"hello", Peer("udp", host, port))
    driver.transmit()
    data, _ = await recv(client)
    assert data == b"hello"


async def test_timer_armed_from_get_timer_fires(
    driver: Driver, endpoint: RecordingEndpoint
) -> None:
    loop = asyncio.get_running_loop()
    deadline = endpoint.timer = loop.time() + 0.05
    driver.transmit()
    await eventually(lambda: len(endpoint.fired) == 1)
    assert endpoint.fired[0] >= deadline
    await asyncio.sleep(0.1)
    assert len(endpoint.fired) == 1  # not re-armed once get_timer() says None


async def test_timer_rearmed_only_for_an_earlier_slot(
    driver: Driver, endpoint: RecordingEndpoint
) -> None:
    loop = asyncio.get_running_loop()
    base = math.ceil((loop.time() + 0.2) * TIMER_SLOTS) / TIMER_SLOTS
    endpoint.timer = base - 0.5 / TIMER_SLOTS
    driver.transmit()
    armed = driver._timer
    assert armed is not None
    assert armed.when() == base  # rounded up to the end of its slot
    endpoint.timer = base - 0.25 / TIMER_SLOTS  # same slot: nothing to do
    driver.transmit()
    endpoint.timer = base + 1.0  # later: the armed timer fires first and re-arms then
    driver.transmit()
    assert driver._timer is armed
    endpoint.timer = base - 1.5 / TIMER_SLOTS  # an earlier slot: re-armed
    driver.transmit()
    assert driver._timer is not armed
    assert driver._timer is not None
    assert driver._timer.when() == base - 1 / TIMER_SLOTS
    await eventually(lambda: len(endpoint.fired) == 1)
    assert endpoint.fired[0] >= base - 1.5 / TIMER_SLOTS


async def test_endpoint_exception_is_logged_and_node_keeps_serving(
    driver: Driver,
    endpoint: RecordingEndpoint,
    client: socket.socket,
    caplog: pytest.LogCaptureFixture,
) -> None:
    host, port = client.getsockname()
    loop = asyncio.get_running_loop()
    endpoint.raise_next = True
    with caplog.at_level(logging.ERROR, logger="presence_sip.transport.driver"):
        await loop.sock_sendto(client, options(host, port), ("127.0.0.1", udp_port(driver)))
        await eventually(lambda: not endpoint.raise_next)
        await eventually(lambda: any(r.exc_info for r in caplog.records))
    assert "injected endpoint bug" in caplog.text
    request = options(host, port, call_id="c2@test")
    await loop.sock_sendto(client, request, ("127.0.0.1", udp_port(driver)))
    data, _ = await recv(client)
    assert data == expected_200(request)


async def test_send_to_a_name_is_refused_without_dns(
    driver: Driver, endpoint: RecordingEndpoint
) -> None:
    peer = Peer("udp", "gateway.net-b.test", 5060)
    endpoint.queue(b"x", peer)
    driver.transmit()
    assert endpoint.lost == [peer]


async def test_a_message_too_large_for_a_datagram_is_a_warning(
    driver: Driver,
    endpoint: RecordingEndpoint,
    client: socket.socket,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A NOTIFY over 64 KiB cannot leave over UDP: an operator at the default level sees it."""
    host, port = client.getsockname()
    with caplog.at_level(logging.INFO, logger="presence_sip.transport.udp"):
        for _ in range(3):  # its retransmissions: one line, not one per datagram
            endpoint.queue(b"x" * 70_000, Peer("udp", host, port))
            driver.transmit()
        await eventually(lambda: "message too large for a datagram" in caplog.text)
        await asyncio.sleep(0.05)
    assert [r.levelname for r in caplog.records if "too large" in r.getMessage()] == ["WARNING"]


async def test_no_udp_socket_for_family_reports_lost(
    driver: Driver, endpoint: RecordingEndpoint
) -> None:
    peer = Peer("udp", "::1", 5060)
    endpoint.queue(b"x", peer)
    driver.transmit()
    assert endpoint.lost == [peer]


async def test_reply_leaves_from_the_socket_the_peer_talked_to(
    endpoint: RecordingEndpoint, client: socket.socket
) -> None:
    drv = Driver(endpoint)
    await drv.start([parse_listen("udp:127.0.0.1:0"), parse_listen("udp:127.0.0.1:0")])
    try:
        second = drv.local_addresses[1].port
        host, port = client.getsockname()
        request = options(host, port)
        await asyncio.get_running_loop().sock_sendto(client, request, ("127.0.0.1", second))
        data, addr = await recv(client)
        assert data == expected_200(request)
        assert addr == ("127.0.0.1", second)
    finally:
        await drv.stop()


async def test_stop_leaves_no_task_and_closes_sockets(endpoint: RecordingEndpoint) -> None:
    drv = Driver(endpoint)
    await drv.start([parse_listen("udp:127.0.0.1:0"), parse_listen("udp:[::1]:0")])
    assert {s.family_version for s in drv.local_addresses} == {4, 6}
    endpoint.timer = asyncio.get_running_loop().time() + 60
    drv.transmit()
    listeners = list(drv._udp)
    await drv.stop()
    assert only_task_left()
    assert all(u.closed.done() for u in listeners)
    assert drv._timer is None
    assert drv.local_addresses == []


async def test_start_failure_is_a_transport_error(
    endpoint: RecordingEndpoint, client: socket.socket
) -> None:
    host, port = client.getsockname()
    drv = Driver(endpoint)
    with pytest.raises(TransportError, match="cannot listen"):
        await drv.start([parse_listen("udp:127.0.0.1:0"), ListenSpec("udp", host, port)])
    assert drv.local_addresses == []
    assert only_task_left()


async def test_tls_listener_without_context_is_a_config_error(endpoint: RecordingEndpoint) -> None:
    drv = Driver(endpoint)
    with pytest.raises(ConfigError):
        await drv.start([parse_listen("tls:127.0.0.1:0")])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
        ("TCP:127.0.0.1:5070", ListenSpec("tcp", "127.0.0.1", 5070)),
        ("tls:127.0.0.1:5061", ListenSpec("tls", "127.0.0.1", 5061)),
        ("tls:[::1]:5061", ListenSpec("tls", "::1", 5061)),
        ("udp:[0:0:0:0:0:0:0:1]", ListenSpec("udp", "::1", 5060)),
        ("tls:127.0.1.2", ListenSpec("tls", "127.0.1.2", 5061)),
        ("udp:0.0.0.0:0", ListenSpec("udp", "0.0.0.0", 0)),
    ],
)
def test_listen_spec_parse(text: str, expected: ListenSpec) -> None:
    assert parse_listen(text) == expected
    assert parse_listen(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "udp",
        "sctp:127.0.0.1:5060",
        "udp:localhost:5060",
        "udp:::1:5060",
        "udp:[127.0.0.1]:5060",
        "udp:127.0.0.1:70000",
        "udp:127.0.0.1:",
        "udp:127.0.0.1:50x",
        "udp:[::1:5060",
        "udp:300.0.0.1:5060",
    ],
)
def test_listen_spec_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(text)


def test_listen_spec_validates_fields() -> None:
    with pytest.raises(ConfigError):
        ListenSpec("udp", "example.test", 5060)
    with pytest.raises(ConfigError):
        ListenSpec("udp", "127.0.0.1", -1)
    with pytest.raises(ConfigError):
        ListenSpec("ws", "127.0.0.1", 80)


class BatchRecordingEndpoint(RecordingEndpoint):
    """Also records how many answers each pump took from the outbox."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def outbox(self) -> list[tuple[bytes, Peer]]:
        out = super().outbox()
        if out:
            self.batches.append(len(out))
        return out


def receive_answers(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(70000) for _ in range(count)]


def burst_batches(
    clock: Callable[[], float],
    cpu_clock: Callable[[], float] = time.process_time,
    bursts: int = 1,
    size: int = 20,
    between: Callable[[], object] = lambda: None,
) -> list[list[int]]:
    """Under uvloop (the loop ``serve`` runs): ``bursts`` times, ``size`` OPTIONS queued on the
    server's socket before its loop runs (so that one socket wake-up hands them all over) and
    their answers read, ``between()`` after each; the sizes of the answer batches the driver
    sent, per burst, after checking that every request got its own answer."""

    async def run() -> list[list[int]]:
        endpoint = BatchRecordingEndpoint()
        drv = Driver(endpoint, clock=clock, cpu_clock=cpu_clock)
        await drv.start([parse_listen("udp:127.0.0.1:0")])
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        per_burst = []
        try:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            host, port = sock.getsockname()
            for burst in range(bursts):
                requests = [options(host, port, call_id=f"b{burst}-{n}@test") for n in range(size)]
                for request in requests:  # blocking sends: the loop does not run in between
                    sock.sendto(request, ("127.0.0.1", udp_port(drv)))
                # uvloop has no sock_recvfrom: the answers are read in a thread
                answers = await asyncio.to_thread(receive_answers, sock, len(requests))
                assert sorted(answers) == sorted(expected_200(r) for r in requests)
                per_burst.append(endpoint.batches)
                endpoint.batches = []
                between()
            return per_burst
        finally:
            sock.close()
            await drv.stop()

    return uvloop.run(run())


class ManualClock:
    """Stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self) -> None:
        self.now += 1.0


def test_burst_answers_leave_in_groups_of_at_most_eight() -> None:
    # The clock stands still during a burst, so only the count bounds a group; a second passes
    # between bursts.  The first burst comes before a load window closed: one send.  The
    # window closes with the second (the process had CPU time to spare), so the third burst
    # is split.  (With one send per burst, its first request waited for all twenty.)
    assert LOAD_WINDOW < 1.0
    clock = ManualClock()
    first, second, third = burst_batches(clock, bursts=3, between=clock.advance)
    assert first == [20]
    assert second == [20]
    assert sum(third) == 20
    assert max(third) == BURST_SEND_EVERY
    assert len(third) < 20  # still grouped: not one send per answer


def test_burst_answers_leave_once_a_millisecond_passed() -> None:
    # The clock moves a second per reading, so every datagram comes long (> BURST_SEND_AFTER)
    # after the last send, and the load window closes with the first burst: the answers of
    # the second leave with every second datagram at the latest.
    assert BURST_SEND_AFTER < 1.0
    ticks = itertools.count()
    first, second = burst_batches(lambda: 1000.0 + next(ticks), bursts=2)
    assert first == [20]
    assert sum(second) == 20
    assert max(second) <= 2


def test_busy_loop_answers_a_burst_in_one_send() -> None:
    # The load window closes at the end of each burst (the clock moves a second per reading,
    # more than LOAD_WINDOW).  In the first the process used no CPU: time to spare, the second
    # burst is split.  In the second it seems to have used 1,000 CPU seconds: no time to spare,
    # so the third burst is answered in one send again.
    assert SPARE_BELOW < 1.0
    ticks = itertools.count()
    # at start, at the end of burst 1, then 1,000 CPU seconds more at the end of every burst
    cpu_readings = itertools.chain([0.0, 0.0], itertools.count(1000.0, 1000.0))
    first, second, third = burst_batches(
        lambda: 1000.0 + next(ticks), lambda: next(cpu_readings), 3
    )
    assert first == [20]
    assert max(second) <= 2
    assert third == [20]


class TimerOrderEndpoint(RecordingEndpoint):
    """Takes datagrams in without parsing them, ``per_datagram`` seconds of CPU each, and
    records how many were in each time its timers ran."""

    def __init__(self, per_datagram: float) -> None:
        super().__init__()
        self.per_datagram = per_datagram
        self.in_at_timer: list[int] = []

    def receive(self, data: bytes, source: Peer, now: float) -> None:
        until = time.perf_counter() + self.per_datagram
        while time.perf_counter() < until:
            pass
        self.raw.append((data, source))

    def handle_timer(self, now: float) -> None:
        self.in_at_timer.append(len(self.raw))
        super().handle_timer(now)


LOOPS: dict[str, Callable[[Coroutine[Any, Any, list[int]]], list[int]]] = {
    "uvloop": uvloop.run,
    "asyncio": asyncio.run,
}


def timers_with_a_backlog(run: str, count: int, per_datagram: float) -> list[int]:
    """``count`` datagrams queued on the driver's socket before its loop runs, a timer due at
    once: how many datagrams were in when the timers ran (after checking all came in)."""

    async def backlog() -> list[int]:
        endpoint = TimerOrderEndpoint(per_datagram)
        drv = Driver(endpoint)
        await drv.start([parse_listen("udp:127.0.0.1:0")])
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", 0))
            for n in range(count):  # blocking sends: the loop does not run in between
                sock.sendto(b"datagram %d" % n, ("127.0.0.1", udp_port(drv)))
            endpoint.timer = asyncio.get_running_loop().time() - 1.0  # due before any read
            drv.transmit()
            await eventually(lambda: len(endpoint.raw) == count and bool(endpoint.in_at_timer))
            return endpoint.in_at_timer
        finally:
            sock.close()
            await drv.stop()

    return LOOPS[run](backlog())


@pytest.mark.parametrize("run", LOOPS)
def test_timers_wait_for_the_datagrams_waiting_in_the_socket(run: str) -> None:
    # uvloop reads 32 datagrams per socket wake-up, then runs the due timers; asyncio reads
    # one.  The answers a timer would retransmit for may be among the rest: they come first.
    assert timers_with_a_backlog(run, count=200, per_datagram=0.0) == [200]


@pytest.mark.parametrize("run", LOOPS)
def test_timers_wait_for_input_no_longer_than_input_first_for(run: str) -> None:
    # 200 datagrams at 2 ms each: 0.4 s of input, four times what the timers may wait.
    count, per_datagram = 200, 0.002
    assert count * per_datagram > 3 * INPUT_FIRST_FOR
    (in_at_timer,) = timers_with_a_backlog(run, count, per_datagram)
    # They waited for about INPUT_FIRST_FOR's worth of input (50 datagrams), and no longer.
    assert INPUT_FIRST_FOR / per_datagram / 2 <= in_at_timer < count


async def test_stop_while_the_timers_wait_for_input_ends_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 20 datagrams at 10 ms each are still coming in when stop() is called: the timers that
    # waited for them never run, nothing is scheduled after it, and nothing is logged as a bug.
    endpoint = TimerOrderEndpoint(per_datagram=0.01)
    drv = Driver(endpoint)
    await drv.start([parse_listen("udp:127.0.0.1:0")])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        for n in range(20):
            sock.sendto(b"datagram %d" % n, ("127.0.0.1", udp_port(drv)))
        endpoint.timer = asyncio.get_running_loop().time() - 1.0
        drv.transmit()
        await eventually(lambda: drv._waiting_timers is not None)
    finally:
        sock.close()
        await drv.stop()
    assert drv._waiting_timers is None
    taken = len(endpoint.raw)
    assert taken < 20
    await asyncio.sleep(2 * INPUT_FIRST_FOR)
    assert endpoint.in_at_timer == []
    assert len(endpoint.raw) == taken  # the socket is closed: nothing more came in
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
