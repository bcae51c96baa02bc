"""Two cores (UAC manager <-> UAS manager) through a fake network that drops, duplicates and
reorders datagrams (STYLE.md §7: h11 ConnectionPair, aioquic client_and_server).  Virtual clock.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from presence_sip.ids import CountingIdSource
from presence_sip.sip import Request, Response, make_response, parse_message, to_bytes
from presence_sip.sip.peer import Peer
from presence_sip.transaction import (
    RequestReceived,
    ResponseReceived,
    TransactionKey,
    TransactionManager,
    TransactionTimedOut,
)

UAC = Peer("udp", "127.0.0.1", 5070)
UAS = Peer("udp", "127.0.0.1", 5060)
LATENCY = 0.01

Fate = Callable[[int, Peer, Peer], list[float]]
"""(datagram number, source, destination) -> delivery delays: [] drops, two entries duplicate."""


def deliver(index: int, source: Peer, destination: Peer) -> list[float]:
    return [LATENCY]


class FakeNetwork:
    """Datagrams in flight, each with the instant it arrives."""

    def __init__(self, fate: Fate) -> None:
        self.fate = fate
        self.count = 0
        self.flight: list[tuple[float, int, bytes, Peer, Peer]] = []
        self.log: list[tuple[float, Peer, Peer, bytes, int]] = []

    def send(self, data: bytes, source: Peer, destination: Peer, now: float) -> None:
        delays = self.fate(self.count, source, destination)
        self.log.append((now, source, destination, data, len(delays)))
        for delay in delays:
            self.count += 1
            heapq.heappush(self.flight, (now + delay, self.count, data, source, destination))
        if not delays:
            self.count += 1

    def next_time(self) -> float | None:
        return self.flight[0][0] if self.flight else None

    def due(self, now: float) -> list[tuple[bytes, Peer, Peer]]:
        out = []
        while self.flight and self.flight[0][0] <= now:
            _, _, data, source, destination = heapq.heappop(self.flight)
            out.append((data, source, destination))
        return out


class Pair:
    """A UAC core and a UAS core; the UAS answers OPTIONS 200 and INVITE 405 at once."""

    def __init__(self, fate: Fate = deliver) -> None:
        self.uac = TransactionManager(id_source=CountingIdSource("c"))
        self.uas = TransactionManager(id_source=CountingIdSource("s"))
        self.cores = {UAC: self.uac, UAS: self.uas}
        self.net = FakeNetwork(fate)
        self.now = 0.0
        self.uas_requests: list[RequestReceived] = []
        self.uac_events: list[ResponseReceived | TransactionTimedOut] = []
        self.raw_uac: list[Response] = []
        """Responses that reached the UAC address but are for the hand-written INVITE client."""

    def send_options(self, n: int) -> TransactionKey:
        branch = self.uac.new_branch()
        data = (
            "OPTIONS sip:uas@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:uac@127.0.0.1>;tag=f{n}\r\n"
            "To: <sip:uas@127.0.0.1>\r\n"
            f"Call-ID: call{n}@127.0.0.1\r\n"
            f"CSeq: {n} OPTIONS\r\n"
            "Content-Length: 0\r\n"
            "\r\n"
        ).encode()
        request = parse_message(data)
        assert isinstance(request, Request)
        key = self.uac.send_request(request, UAS, self.now)
        self.pump()
        return key

    def send_raw(self, data: bytes) -> None:
        """Send bytes from the UAC address outside any client transaction."""
        self.net.send(data, UAC, UAS, self.now)

    def pump(self) -> None:
        for address, core in self.cores.items():
            for data, destination in core.outbox():
                self.net.send(data, address, destination, self.now)
        while (event := self.uas.next_event()) is not None:
            assert isinstance(event, RequestReceived)
            self.uas_requests.append(event)
            if event.key is not None:
                status = 405 if event.request.method == "INVITE" else 200
                reply = make_response(event.request, status, to_tag=f"t{len(self.uas_requests)}")
                self.uas.respond(event.key, reply, self.now)
        while (event := self.uac.next_event()) is not None:
            assert isinstance(event, ResponseReceived | TransactionTimedOut)
            self.uac_events.append(event)
        for address, core in self.cores.items():
            for data, destination in core.outbox():
                self.net.send(data, address, destination, self.now)

    def run(self, until: float, on_raw: Callable[[Response], None] | None = None) -> None:
        while True:
            instants = [
                t
                for t in (self.net.next_time(), self.uac.get_timer(), self.uas.get_timer())
                if t is not None
            ]
            if not instants or min(instants) > until:
                break
            self.now = min(instants)
            for data, source, destination in self.net.due(self.now):
                message = parse_message(data)
                if (
                    on_raw is not None
                    and isinstance(message, Response)
                    and (message.cseq.method in ("INVITE", "ACK"))
                ):
                    self.raw_uac.append(message)
                    on_raw(message)
                    continue
                self.cores[destination].receive(message, source, self.now)
            self.uac.handle_timer(self.now)
            self.uas.handle_timer(self.now)
            self.pump()

    def finals(self, key: TransactionKey) -> list[ResponseReceived]:
        return [
            e
            for e in self.uac_events
            if isinstance(e, ResponseReceived) and e.key == key and e.response.status >= 200
        ]

    def timeouts(self) -> list[TransactionTimedOut]:
        return [e for e in self.uac_events if isinstance(e, TransactionTimedOut)]


def test_lossless_roundtrip() -> None:
    pair = Pair()
    key = pair.send_options(1)
    pair.run(100.0)
    [final] = pair.finals(key)
    assert final.response.status == 200
    assert final.response.headers.get("Via") == (
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc1;rport=5070;received=127.0.0.1"
    )
    assert pair.uac.stats["requests_retransmitted"] == 0
    assert (len(pair.uac), len(pair.uas)) == (0, 0)
    assert pair.uac.get_timer() is None
    assert pair.uas.get_timer() is None


def test_first_two_transmissions_lost() -> None:
    """SIPp-style: the UAS misses the first two copies and still sends exactly one final."""

    def fate(index: int, source: Peer, destination: Peer) -> list[float]:
        return [] if index < 2 else [LATENCY]

    pair = Pair(fate)
    key = pair.send_options(1)
    pair.run(100.0)
    sends = [(at, dst) for at, _src, dst, _data, copies in pair.net.log]
    assert sends[:3] == [(0.0, UAS), (0.5, UAS), (1.5, UAS)]  # Timer E: T1, then 2*T1
    [final] = pair.finals(key)
    assert final.response.status == 200
    assert len(pair.uas_requests) == 1
    assert pair.uas_requests[0].source == UAC
    responses = [data for _at, src, _dst, data, _copies in pair.net.log if src == UAS]
    assert len(responses) == 1
    assert pair.timeouts() == []


def test_final_response_lost_is_resent_on_retransmission() -> None:
    def fate(index: int, source: Peer, destination: Peer) -> list[float]:
        return [] if source == UAS and index < 2 else [LATENCY]

    pair = Pair(fate)
    key = pair.send_options(1)
    pair.run(100.0)
    [final] = pair.finals(key)
    assert len(pair.uas_requests) == 1
    assert pair.uas.stats["responses_resent"] == 1
    responses = {data for _at, src, _dst, data, _copies in pair.net.log if src == UAS}
    assert len(responses) == 1  # the resent final is byte-identical
    assert to_bytes(final.response) in responses


def test_everything_lost_times_out_with_timer_f() -> None:
    pair = Pair(lambda index, source, destination: [])
    key = pair.send_options(1)
    pair.run(100.0)
    [timeout] = pair.timeouts()
    assert timeout.key == key
    assert len(pair.net.log) == 11  # the original and 10 retransmissions
    assert pair.net.log[-1][0] == 31.5


def random_fate(seed: int, loss: float, dup: float, jitter: float) -> Fate:
    rng = random.Random(seed)

    def fate(index: int, source: Peer, destination: Peer) -> list[float]:
        if rng.random() < loss:
            return []
        copies = 2 if rng.random() < dup else 1
        return [LATENCY + rng.random() * jitter for _ in range(copies)]

    return fate


def test_seeded_lossy_network_every_transaction_completes_once() -> None:
    for seed in range(40):
        pair = Pair(random_fate(seed, loss=0.25, dup=0.2, jitter=0.8))
        keys = [pair.send_options(n) for n in range(1, 6)]
        pair.run(200.0)
        for key in keys:
            assert len(pair.finals(key)) == 1, (seed, key)
        assert pair.timeouts() == [], seed
        # Duplicates and retransmissions never reach the UAS TU twice.
        assert len(pair.uas_requests) == 5, seed
        assert (len(pair.uac), len(pair.uas)) == (0, 0), seed
        assert pair.uac.get_timer() is None


FATES = st.sampled_from(["deliver", "drop", "duplicate", "late"])


@given(st.lists(FATES, max_size=24).filter(lambda fates: fates.count("drop") <= 8))
def test_scripted_loss_patterns(script: list[str]) -> None:
    """Any pattern of at most 8 losses (plus duplicates and reordering) still completes once."""

    def fate(index: int, source: Peer, destination: Peer) -> list[float]:
        what = script[index] if index < len(script) else "deliver"
        return {
            "deliver": [LATENCY],
            "drop": [],
            "duplicate": [LATENCY, LATENCY * 2],
            "late": [0.7],  # overtaken by the next retransmission
        }[what]

    pair = Pair(fate)
    key = pair.send_options(1)
    pair.run(100.0)
    assert len(pair.finals(key)) == 1
    assert pair.timeouts() == []
    assert len(pair.uas_requests) == 1
    assert (len(pair.uac), len(pair.uas)) == (0, 0)


INVITE = (
    b"INVITE sip:uas@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:uac@127.0.0.1>;tag=fi\r\n"
    b"To: <sip:uas@127.0.0.1>\r\n"
    b"Call-ID: inv@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def ack_for(response: Response) -> bytes:
    """RFC 3261 §17.1.1.3: same Via/From/Call-ID/CSeq number, To from the response."""
    to = response.headers.get("To")
    return (
        b"ACK sip:uas@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:uac@127.0.0.1>;tag=fi\r\n"
        + f"To: {to}\r\n".encode()
        + b"Call-ID: inv@127.0.0.1\r\n"
        b"CSeq: 1 ACK\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )


def test_invite_405_over_lossy_network_until_acked() -> None:
    """A hand-written INVITE client (presence-sip has none) against the UAS INVITE machine."""
    for seed in range(20):
        pair = Pair(random_fate(seed, loss=0.3, dup=0.2, jitter=0.8))
        pair.send_raw(INVITE)
        # Timer A retransmissions of the INVITE (0.5, 1.5, 3.5 ...) until a response arrives.
        retransmit_at = [0.5, 1.5, 3.5, 7.5, 15.5]

        def on_response(response: Response, pair: Pair = pair) -> None:
            pair.send_raw(ack_for(response))

        for at in retransmit_at:
            pair.run(at, on_response)
            if pair.raw_uac:
                break
            pair.now = at
            pair.send_raw(INVITE)
        pair.run(200.0, on_response)
        invites = [e for e in pair.uas_requests if e.request.method == "INVITE"]
        assert len(invites) == 1, seed
        assert pair.raw_uac, seed
        assert {r.status for r in pair.raw_uac} == {405}
        assert pair.uas.stats["timeouts"] == 0, seed  # an ACK got through before Timer H
        assert len(pair.uas) == 0
        assert pair.uas.get_timer() is None
