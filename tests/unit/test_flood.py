"""Flood protection per source address (``transport.flood``, Kamailio's pike): requests beyond
``flood_requests`` in a burst or a second block their address; connections per address capped.

The guard sees raw bytes as the driver does, before parsing: byte-exact messages here.
"""

from __future__ import annotations

import logging

import pytest

from presence_sip.config import Limits
from presence_sip.transport.flood import FloodGuard, flood_guard_for

T0 = 1000.0
OPTIONS = (
    b"OPTIONS sip:example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKflood1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:example.test>\r\n"
    b"Call-ID: flood-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnotify1\r\n"
    b"From: <sip:alice@example.test>;tag=9\r\nTo: <sip:bob@example.test>;tag=8\r\n"
    b"Call-ID: n-1\r\nCSeq: 7 NOTIFY\r\nContent-Length: 0\r\n\r\n"
)
SOURCE = "192.0.2.5"


def dropped(guard: FloodGuard, count: int, host: str = SOURCE, now: float = T0) -> int:
    """How many of ``count`` UDP requests sent at once from ``host`` the guard drops."""
    return sum(guard.drop(OPTIONS, host, now) for _ in range(count))


def streamed(guard: FloodGuard, count: int, host: str = SOURCE, now: float = T0) -> int:
    """How many of ``count`` requests sent at once over a connection from ``host`` the guard
    drops (closing the connection)."""
    return sum(guard.drop_streamed(OPTIONS, host, now) for _ in range(count))


def test_a_burst_above_the_limit_blocks_the_address_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = FloodGuard(10, block=60.0)
    with caplog.at_level(logging.INFO, logger="presence_sip.transport.flood"):
        assert dropped(guard, 9) == 0
        assert dropped(guard, 5) == 5  # the tenth starts the block, the rest are dropped
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(
        logging.WARNING,
        "flood blocked: src=192.0.2.5 for 60 s after 10 requests at once or more than 10 a second"
        " over UDP",
    )]  # fmt: skip
    assert (guard.blocks, guard.dropped) == (1, 5)
    assert dropped(guard, 3, host="192.0.2.6") == 0  # another address is not blocked


def test_a_steady_rate_under_the_limit_is_never_blocked() -> None:
    guard = FloodGuard(10)
    for tick in range(200):
        assert not guard.drop(OPTIONS, SOURCE, T0 + tick * 0.11)  # 9 a second
    assert guard.blocks == 0


def test_a_steady_rate_over_the_limit_is_blocked() -> None:
    guard = FloodGuard(10)
    answered = [not guard.drop(OPTIONS, SOURCE, T0 + tick * 0.05) for tick in range(100)]
    assert guard.blocks == 1
    assert 10 <= answered.index(False) <= 30  # 20 a second: the bucket fills within ~1 s
    assert not any(answered[answered.index(False) :])


def test_the_block_ends_after_its_seconds_and_the_bucket_starts_empty() -> None:
    guard = FloodGuard(5, block=30.0)
    assert dropped(guard, 10) == 6
    assert dropped(guard, 1, now=T0 + 29.9) == 1
    assert dropped(guard, 4, now=T0 + 30.0) == 0
    assert guard.blocks == 1


def test_responses_are_never_counted_nor_dropped() -> None:
    """They answer the node's own requests (a watcher's 200s to a fan-out of NOTIFYs)."""
    guard = FloodGuard(3)
    assert not any(guard.drop(RESPONSE, SOURCE, T0) for _ in range(50))
    assert dropped(guard, 3) == 1  # the third request is the first counted to fill it
    assert not guard.drop(RESPONSE, SOURCE, T0)  # nor dropped from a blocked address


def test_ipv6_sources_count_per_slash_64_and_exempt_addresses_not_at_all() -> None:
    guard = FloodGuard(4, exempt=["203.0.113.0/28", "2001:db8:1::1"])
    sources = [f"2001:db8:2::{n}" for n in range(1, 5)]
    assert [guard.drop(OPTIONS, host, T0) for host in sources] == [False] * 3 + [True]
    assert guard.drop(OPTIONS, "2001:db8:2::ffff", T0)  # the whole /64 is blocked
    assert dropped(guard, 100, host="203.0.113.9") == 0  # an edge proxy, everyone's address
    assert dropped(guard, 3, host="2001:db8:1::2") == 0
    assert dropped(guard, 1, host="2001:db8:1::2") == 1  # its /64 neighbour is counted...
    assert dropped(guard, 100, host="2001:db8:1::1") == 0  # ...the proxy itself never


def test_connections_per_source_are_capped_and_counted_down_when_they_close() -> None:
    guard = FloodGuard(0, max_connections=2)
    assert [guard.connection_refusal(SOURCE, T0) for _ in range(3)] == [
        None, None, "2 open from it (max_connections_per_source)",
    ]  # fmt: skip
    assert guard.connection_refusal("192.0.2.6", T0) is None
    guard.connection_closed(SOURCE)
    assert guard.connection_refusal(SOURCE, T0) is None
    assert guard.connection_refusal(SOURCE, T0) is not None
    assert guard.refused_connections == 2
    assert dropped(guard, 1000) == 0  # flood_requests 0: requests are not counted
    assert streamed(guard, 1000) == 0


def test_an_address_blocked_over_tcp_gets_no_new_connection_until_the_block_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = FloodGuard(2, block=10.0)
    with caplog.at_level(logging.WARNING, logger="presence_sip.transport.flood"):
        assert streamed(guard, 2) == 1
    assert caplog.records[0].getMessage().endswith(" a second over TCP/TLS")
    assert guard.connection_refusal(SOURCE, T0 + 1) == "blocked for flooding"
    assert (guard.refused_connections, guard.dropped) == (1, 1)  # not a dropped request
    assert dropped(guard, 3, now=T0 + 1) == 3  # its datagrams too: it proved its address
    assert streamed(guard, 1, now=T0 + 1) == 1
    assert guard.connection_refusal(SOURCE, T0 + 10) is None
    assert (dropped(guard, 1, now=T0 + 10), streamed(guard, 1, now=T0 + 10)) == (0, 0)


def test_a_block_over_udp_leaves_the_addresses_connections_alone() -> None:
    """Anyone can forge a datagram's source: a flood of datagrams forged with a peer's address
    (a peering network's gateway on mutual TLS) must not close its connections nor refuse its
    new ones; its own UDP requests are dropped as any from that address."""
    guard = FloodGuard(2, block=10.0, max_connections=1)
    assert dropped(guard, 5) == 4
    assert guard.connection_refusal(SOURCE, T0 + 1) is None
    assert streamed(guard, 1, now=T0 + 1) == 0
    assert guard.refused_connections == 0
    assert dropped(guard, 1, now=T0 + 1) == 1
    assert guard.blocks == 1


def test_the_per_source_cap_leaves_exempt_addresses_alone() -> None:
    guard = FloodGuard(0, max_connections=1, exempt=["192.0.2.0/24"])
    assert [guard.connection_refusal(SOURCE, T0) for _ in range(5)] == [None] * 5
    guard.connection_closed(SOURCE)  # (nothing was counted, nothing goes below zero)
    assert [guard.connection_refusal(SOURCE, T0) for _ in range(5)] == [None] * 5


def test_stray_responses_count_as_requests_and_block_the_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A response that matched no transaction of ours (the transaction layer said so) counts
    as a request: a flood of them blocks its address, whose requests are then dropped."""
    guard = FloodGuard(10, block=60.0)
    with caplog.at_level(logging.WARNING, logger="presence_sip.transport.flood"):
        verdicts = [guard.stray_response(SOURCE, False, T0) for _ in range(12)]
    assert verdicts == [False] * 9 + [True] * 3  # the tenth starts the block
    assert [r.getMessage() for r in caplog.records] == [
        "flood blocked: src=192.0.2.5 for 60 s after 10 requests at once or more than 10 a second"
        " over UDP"
    ]
    assert dropped(guard, 1) == 1  # its next request
    assert streamed(guard, 1) == 0  # a block over UDP: its connections are left alone
    assert (guard.blocks, guard.dropped) == (1, 2)  # strays are read, not dropped unread
    assert not guard.drop(RESPONSE, SOURCE, T0)  # its responses are still read (ours may match)


def test_strays_and_requests_fill_one_bucket_per_transport() -> None:
    guard = FloodGuard(10)
    assert dropped(guard, 5) == 0
    assert [guard.stray_response(SOURCE, False, T0) for _ in range(5)] == [False] * 4 + [True]
    assert streamed(guard, 9) == 0  # TCP/TLS is counted apart
    assert guard.stray_response(SOURCE, True, T0)  # the caller closes that connection
    assert guard.connection_refusal(SOURCE, T0) == "blocked for flooding"


def test_strays_at_a_watchers_pace_and_with_the_guard_off_block_nothing() -> None:
    """A late answer now and then (a NOTIFY that timed out) is a stray too: far below the
    limit.  With flood_requests 0 nothing is counted."""
    guard = FloodGuard(10)
    assert not any(guard.stray_response(SOURCE, False, T0 + tick * 0.2) for tick in range(500))
    off = FloodGuard(0, max_connections=2)
    assert not any(off.stray_response(SOURCE, streamed, T0) for streamed in [False, True] * 50)
    assert not any(off.handshake_failed(SOURCE, T0) for _ in range(100))
    assert (guard.blocks, off.blocks) == (0, 0)


def test_failed_tls_handshakes_count_as_requests_over_tcp_tls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A scanner failing handshake after handshake is blocked (its new connections refused);
    the address is the peer's own (TCP proved it), so its datagrams are dropped too."""
    guard = FloodGuard(10, block=30.0)
    with caplog.at_level(logging.WARNING, logger="presence_sip.transport.flood"):
        verdicts = [guard.handshake_failed(SOURCE, T0) for _ in range(12)]
    assert verdicts == [False] * 9 + [True] + [False] * 2  # counted once the block is on: no
    assert caplog.records[0].getMessage().endswith(" a second over TCP/TLS")
    assert len(caplog.records) == 1
    assert guard.connection_refusal(SOURCE, T0 + 1) == "blocked for flooding"
    assert dropped(guard, 1, now=T0 + 1) == 1
    assert guard.connection_refusal("192.0.2.6", T0 + 1) is None
    assert guard.connection_refusal(SOURCE, T0 + 30) is None


def test_a_phone_retrying_a_handshake_it_cannot_finish_is_never_blocked() -> None:
    """A phone that does not trust the node's certificate retries, every few seconds at the
    most: one count each, far below a flood_requests that is above a phone's burst."""
    guard = FloodGuard(10, max_connections=1)
    for attempt in range(300):
        now = T0 + attempt * 2.0
        assert guard.connection_refusal(SOURCE, now) is None
        assert not guard.handshake_failed(SOURCE, now)
        guard.connection_closed(SOURCE)
    assert (guard.blocks, guard.refused_connections) == (0, 0)


def test_a_connection_taken_before_its_address_was_blocked_is_refused_once_up() -> None:
    """A TLS connection is taken at its accept; its handshake may end seconds later, after
    its address was blocked (by its other connections' failed handshakes): refused then."""
    guard = FloodGuard(10, max_connections=5)
    assert guard.connection_refusal(SOURCE, T0) is None
    assert not guard.refused_when_up(SOURCE, T0)  # (not blocked: taken)
    assert guard.connection_refusal(SOURCE, T0) is None
    for _ in range(10):
        guard.handshake_failed(SOURCE, T0)
    assert guard.refused_when_up(SOURCE, T0 + 1)
    assert guard.refused_connections == 1
    assert not guard.refused_when_up("192.0.2.6", T0 + 1)
    assert not guard.refused_when_up(SOURCE, T0 + 60)  # the block is over
    assert not FloodGuard(0, max_connections=5).refused_when_up(SOURCE, T0)


def test_completed_tls_handshakes_count_as_requests_over_tcp_tls() -> None:
    """A handshake done costs the node what a failed one does: a source completing handshake
    after handshake and closing (``openssl s_client`` in a loop) is blocked, the one that
    starts the block refused; a phone's handshake counts once, among its requests."""
    guard = FloodGuard(10, block=30.0, max_connections=5)
    verdicts = [guard.handshake_done(SOURCE, T0) for _ in range(12)]
    assert verdicts == [False] * 9 + [True] * 3
    assert guard.refused_connections == 3
    assert guard.connection_refusal(SOURCE, T0 + 1) == "blocked for flooding"
    assert not guard.handshake_done("192.0.2.6", T0 + 1)
    assert not guard.handshake_done(SOURCE, T0 + 30)  # the block is over
    assert not any(guard.handshake_done("192.0.2.7", T0 + i * 0.2) for i in range(100))
    assert not any(FloodGuard(0).handshake_done(SOURCE, T0) for _ in range(100))


# --- a configuration reloaded: flood_guard_for(limits, current) -------------------------------


def test_a_reloaded_guard_keeps_its_blocks_and_counts_under_the_new_limits() -> None:
    limits = Limits(flood_requests=3, flood_block=60.0, max_connections_per_source=1)
    guard = flood_guard_for(limits)
    assert guard is not None
    assert guard.connection_refusal("192.0.2.9", T0) is None  # one open from .9
    for _ in range(3):
        guard.drop(OPTIONS, SOURCE, T0)
    assert guard.drop(OPTIONS, SOURCE, T0 + 1)  # blocked until T0 + 60

    relaxed = Limits(flood_requests=100, flood_block=5.0, max_connections_per_source=2)
    assert flood_guard_for(relaxed, guard) is guard
    assert guard.drop(OPTIONS, SOURCE, T0 + 30)  # the block keeps its end
    assert not guard.drop(OPTIONS, SOURCE, T0 + 61)
    assert guard.connection_refusal("192.0.2.9", T0) is None  # the second of 2: the count kept
    assert guard.connection_refusal("192.0.2.9", T0) is not None
    for _ in range(50):
        assert not guard.drop(OPTIONS, "192.0.2.7", T0 + 62)  # 50 under the new 100


def test_a_reloaded_guard_turned_off_counts_nothing_and_frees_a_now_exempt_address() -> None:
    guard = flood_guard_for(Limits(flood_requests=2))
    assert guard is not None
    guard.drop(OPTIONS, SOURCE, T0)
    assert guard.drop(OPTIONS, SOURCE, T0)  # blocked
    flood_guard_for(Limits(flood_requests=2, flood_exempt=(f"{SOURCE}/32",)), guard)
    assert not guard.drop(OPTIONS, SOURCE, T0 + 1)  # exempt now: its block is gone
    flood_guard_for(Limits(), guard)  # off (0): kept, counting nothing
    assert not any(guard.drop(OPTIONS, "192.0.2.8", T0 + 2) for _ in range(100))
    assert guard.connection_refusal("192.0.2.8", T0 + 2) is None
    assert flood_guard_for(Limits()) is None  # (at a start, off is no guard at all)


def test_connections_open_before_the_guard_count_towards_its_cap_but_not_when_exempt() -> None:
    guard = FloodGuard(0, max_connections=2, exempt=["192.0.2.9/32"])
    guard.connection_open(SOURCE)
    guard.connection_open(SOURCE)
    for _ in range(3):
        guard.connection_open("192.0.2.9")
    assert guard.connection_refusal(SOURCE, T0) == "2 open from it (max_connections_per_source)"
    assert guard.connection_refusal("192.0.2.9", T0) is None  # exempt: never counted
    guard.connection_closed(SOURCE)
    assert guard.connection_refusal(SOURCE, T0) is None
    assert guard.connection_refusal(SOURCE, T0) is not None


def test_the_files_own_hosts_are_exempt_beside_the_listed_ones_at_start_and_reload() -> None:
    peers = Limits(flood_requests=2, flood_exempt=("10.0.0.0/8",), flood_exempt_peers=(SOURCE,))
    guard = flood_guard_for(peers)
    assert guard is not None
    assert dropped(guard, 50) == 0  # a node of the file, or a route's next hop
    assert dropped(guard, 50, "10.1.2.3") == 0  # listed
    assert dropped(guard, 3, "192.0.2.8") > 0
    flood_guard_for(Limits(flood_requests=2, flood_exempt=("10.0.0.0/8",)), guard)
    assert dropped(guard, 3, now=T0 + 1) > 0  # no longer a peer: counted again
