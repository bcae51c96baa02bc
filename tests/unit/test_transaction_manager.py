"""TransactionManager on a virtual clock: matching, timers, retransmissions, Via stamping."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from presence_sip.config import Timers
from presence_sip.ids import CountingIdSource
from presence_sip.sip import Headers, Request, make_response, parse_message, to_bytes
from presence_sip.sip.errors import ConfigError, LocalProtocolError
from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import parse_via
from presence_sip.transaction import (
    DEFAULT_TIMERS,
    STAT_NAMES,
    Input,
    InviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    StrayResponse,
    TransactionKey,
    TransactionManager,
    TransactionTimedOut,
)
from presence_sip.transaction.context import STREAM_FAILED_MAX, ServerTx
from presence_sip.transaction.manager import plain_branch

UAC = Peer("udp", "127.0.0.1", 5070)
UAS = Peer("udp", "127.0.0.1", 5060)
TCP_UAC = Peer("tcp", "127.0.0.1", 40001, 7)
TCP_UAS = Peer("tcp", "127.0.0.1", 5060)


def manager(timers: Timers = DEFAULT_TIMERS, max_transactions: int = 200000) -> TransactionManager:
    return TransactionManager(
        timers=timers, id_source=CountingIdSource(), max_transactions=max_transactions
    )


def req(data: bytes) -> Request:
    request = parse_message(data)
    assert isinstance(request, Request)
    return request


def server(mgr: TransactionManager, key: TransactionKey | None) -> ServerTx:
    assert key is not None
    txn = mgr.server_transaction(key)
    assert txn is not None
    return txn


def options(
    branch: str = "z9hG4bKa1",
    *,
    via: str = "SIP/2.0/UDP 127.0.0.1:5070",
    via_params: str = "",
    cseq: int = 1,
    method: str = "OPTIONS",
    to_tag: str = "",
) -> bytes:
    branch_param = f";branch={branch}" if branch else ""
    to = "<sip:uas@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:uas@127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}{branch_param}{via_params}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:uac@127.0.0.1>;tag=f1\r\n"
        f"To: {to}\r\n"
        "Call-ID: c1@127.0.0.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


def response(
    status: int, reason: str, branch: str = "z9hG4bKid1", method: str = "OPTIONS"
) -> bytes:
    to_tag = ";tag=t9" if status > 100 else ""
    return (
        f"SIP/2.0 {status} {reason}\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        "From: <sip:uac@127.0.0.1>;tag=f1\r\n"
        f"To: <sip:uas@127.0.0.1>{to_tag}\r\n"
        "Call-ID: c1@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


def events(mgr: TransactionManager) -> list[Any]:
    out = []
    while (event := mgr.next_event()) is not None:
        out.append(event)
    return out


Log = list[tuple[Any, list[tuple[bytes, Peer]], list[Any]]]


def run_until(mgr: TransactionManager, end: float) -> Log:
    """Fire timers up to ``end``; return (instant, datagrams, events) per firing."""
    log: Log = []
    while (deadline := mgr.get_timer()) is not None and deadline <= end:
        mgr.handle_timer(deadline)
        log.append((deadline, mgr.outbox(), events(mgr)))
    return log


def client_request(mgr: TransactionManager, method: str = "OPTIONS") -> Request:
    return req(options(mgr.new_branch(), method=method))


def receive(mgr: TransactionManager, data: bytes, source: Peer, now: float) -> None:
    mgr.receive(parse_message(data), source, now)


# -- client transactions (RFC 3261 §17.1.2, Figure 6) ---------------------------------------


def test_new_branch_has_magic_cookie() -> None:
    mgr = manager()
    assert mgr.new_branch() == "z9hG4bKid1"
    assert mgr.new_branch() == "z9hG4bKid2"


def test_timer_e_and_f_exact_instants_with_default_timers() -> None:
    mgr = manager()
    request = client_request(mgr)
    key = mgr.send_request(request, UAS, 0.0)
    assert key == TransactionKey("z9hG4bKid1", "OPTIONS")
    sent = mgr.outbox()
    assert sent == [(options("z9hG4bKid1"), UAS)]
    assert mgr.get_timer() == 0.5
    log = run_until(mgr, 100.0)
    retransmits = [at for at, datagrams, _ in log if datagrams]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(datagrams == sent for _, datagrams, _ in log if datagrams)
    at, datagrams, evs = log[-1]
    assert (at, datagrams) == (32.0, [])
    assert evs == [TransactionTimedOut(key=key, request=request)]
    assert mgr.get_timer() is None
    assert len(mgr) == 0
    assert mgr.client_request(key) is None
    assert mgr.stats["requests_retransmitted"] == 10
    assert mgr.stats["timeouts"] == 1


def test_timer_e_in_proceeding_is_t2() -> None:
    mgr = manager()
    key = mgr.send_request(client_request(mgr), UAS, 0.0)
    mgr.outbox()
    assert [at for at, _, _ in run_until(mgr, 1.0)] == [0.5]
    receive(mgr, response(100, "Trying"), UAS, 1.0)
    [event] = events(mgr)
    assert isinstance(event, ResponseReceived)
    assert event.response.status == 100
    assert event.key == key
    assert event.source == UAS
    assert event.request is mgr.client_request(key)
    log = run_until(mgr, 100.0)
    assert [at for at, datagrams, _ in log if datagrams] == [
        1.5,
        5.5,
        9.5,
        13.5,
        17.5,
        21.5,
        25.5,
        29.5,
    ]
    assert isinstance(log[-1][2][0], TransactionTimedOut)
    assert log[-1][0] == 32.0


def test_final_response_stops_e_and_f_then_timer_k() -> None:
    mgr = manager()
    key = mgr.send_request(client_request(mgr), UAS, 0.0)
    mgr.outbox()
    receive(mgr, response(200, "OK"), UAS, 0.7)
    [event] = events(mgr)
    assert isinstance(event, ResponseReceived)
    assert event.response.status == 200
    assert mgr.get_timer() == pytest.approx(5.7)  # Timer K = T4
    # RFC 3261 §17.1.2.2: retransmitted finals (and a reordered 1xx) are absorbed.
    receive(mgr, response(200, "OK"), UAS, 1.0)
    receive(mgr, response(100, "Trying"), UAS, 1.1)
    assert events(mgr) == []
    assert mgr.stats["responses_absorbed"] == 2
    log = run_until(mgr, 100.0)
    assert log == [(pytest.approx(5.7), [], [])]
    assert mgr.client_request(key) is None
    receive(mgr, response(200, "OK"), UAS, 6.0)
    [stray] = events(mgr)
    assert isinstance(stray, StrayResponse)
    assert stray.source == UAS


def test_client_over_tcp_has_no_timer_e_and_no_timer_k() -> None:
    mgr = manager()
    key = mgr.send_request(client_request(mgr), TCP_UAS, 0.0)
    assert mgr.outbox() == [(options("z9hG4bKid1"), TCP_UAS)]
    assert mgr.get_timer() == 32.0
    receive(mgr, response(200, "OK"), TCP_UAS, 0.2)
    assert isinstance(events(mgr)[0], ResponseReceived)
    assert mgr.client_request(key) is None
    assert mgr.get_timer() is None


def test_client_timer_f_over_tcp() -> None:
    mgr = manager()
    key = mgr.send_request(client_request(mgr), TCP_UAS, 0.0)
    mgr.outbox()
    log = run_until(mgr, 100.0)
    assert log == [(32.0, [], [TransactionTimedOut(key=key, request=log[0][2][0].request)])]


def test_connection_lost_fails_client_transactions_on_it() -> None:
    mgr = manager()
    key = mgr.send_request(client_request(mgr), TCP_UAS, 0.0)
    other = mgr.send_request(client_request(mgr), Peer("tcp", "127.0.0.1", 5061), 0.0)
    udp = mgr.send_request(client_request(mgr), UAS, 0.0)
    mgr.connection_lost(Peer("udp", "127.0.0.1", 5060), 1.0)  # not a stream: ignored
    mgr.connection_lost(Peer("tcp", "127.0.0.1", 5060, 3), 1.0)
    [event] = events(mgr)
    assert event == TransactionTimedOut(key=key, request=event.request, transport_error=True)
    assert mgr.client_request(key) is None
    assert mgr.client_request(other) is not None
    assert mgr.client_request(udp) is not None
    assert mgr.stats["transport_errors"] == 1


def test_connection_lost_only_for_matching_connection_id() -> None:
    mgr = manager()
    on_three = Peer("tcp", "127.0.0.1", 5060, 3)
    key = mgr.send_request(client_request(mgr), on_three, 0.0)
    mgr.connection_lost(Peer("tcp", "127.0.0.1", 5060, 4), 1.0)
    assert events(mgr) == []
    mgr.connection_lost(Peer("tls", "127.0.0.1", 5060, 3), 1.0)
    mgr.connection_lost(Peer("tcp", "127.0.0.2", 5060, 3), 1.0)
    assert events(mgr) == []
    mgr.connection_lost(on_three, 1.0)
    assert [e.key for e in events(mgr)] == [key]


def test_the_index_of_stream_transactions_empties_as_they_end() -> None:
    """connection_lost finds a connection's transactions through an index by address (no scan
    of every transaction in flight: a NAT box dropping thousands of connections under a
    fan-out was quadratic); whatever way a transaction ends, it leaves the index."""
    mgr = manager()
    answered = mgr.send_request(client_request(mgr), TCP_UAS, 0.0)
    timed_out = mgr.send_request(client_request(mgr), Peer("tcp", "127.0.0.1", 5061), 0.0)
    lost = [
        mgr.send_request(client_request(mgr), Peer("tls", "127.0.0.1", port, 7), 0.0)
        for port in range(6000, 6100)
    ]
    mgr.outbox()
    receive(mgr, response(200, "OK", branch=answered.branch), TCP_UAS, 0.1)
    for port in range(6000, 6100):
        mgr.connection_lost(Peer("tls", "127.0.0.1", port, 7), 0.2)
    assert [e.key for e in events(mgr)][1:] == lost  # in the order they were sent
    assert list(mgr._ctx.streams) == [("tcp", "127.0.0.1", 5061)]
    run_until(mgr, 100.0)
    assert mgr.client_request(timed_out) is None
    assert mgr._ctx.streams == {}


def test_a_request_fallen_back_to_udp_is_not_failed_by_its_old_connection() -> None:
    mgr = moving()
    branch = mgr.new_branch()
    key = mgr.send_request(req(notify(branch, 1200)), WATCHER, 0.0)
    mgr.outbox()
    mgr.connection_lost(WATCHER_TCP, 0.01)  # refused: over UDP now
    assert mgr._ctx.streams == {}
    mgr.connection_lost(WATCHER_TCP, 0.02)  # a second report of that connection
    assert events(mgr) == []
    assert mgr.client_request(key) is not None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (options("z9hG4bKx", method="INVITE"), "INVITE client"),
        (options("z9hG4bKx", method="ACK"), "ACK client"),
        (options(""), "branch from new_branch"),
        (options("abc123"), "branch from new_branch"),
        (options("z9hG4bK"), "branch from new_branch"),
    ],
)
def test_send_request_refuses(data: bytes, message: str) -> None:
    mgr = manager()
    with pytest.raises(LocalProtocolError, match=message):
        mgr.send_request(req(data), UAS, 0.0)
    assert mgr.outbox() == []


def test_send_request_refuses_bad_cseq_missing_via_and_duplicates() -> None:
    mgr = manager()
    request = req(options("z9hG4bKx"))
    request.headers.set("CSeq", "1 NOTIFY")
    request.invalidate()
    with pytest.raises(LocalProtocolError, match="CSeq method"):
        mgr.send_request(request, UAS, 0.0)
    no_via = Request("OPTIONS", "sip:uas@127.0.0.1", Headers([("CSeq", "1 OPTIONS")]))
    with pytest.raises(LocalProtocolError, match="Missing Via"):
        mgr.send_request(no_via, UAS, 0.0)
    mgr.send_request(req(options("z9hG4bKx")), UAS, 0.0)
    with pytest.raises(LocalProtocolError, match="already in use"):
        mgr.send_request(req(options("z9hG4bKx")), UAS, 0.0)


def test_cancel_with_same_branch_is_another_client_transaction() -> None:
    mgr = manager()
    key = mgr.send_request(req(options("z9hG4bKx")), UAS, 0.0)
    cancel = mgr.send_request(req(options("z9hG4bKx", method="CANCEL")), UAS, 0.0)
    assert key != cancel
    receive(mgr, response(200, "OK", "z9hG4bKx", "CANCEL"), UAS, 0.1)
    [event] = events(mgr)
    assert event.key == cancel
    assert mgr.client_request(key) is not None


def test_stray_and_unusable_responses() -> None:
    mgr = manager()
    receive(mgr, response(200, "OK", "z9hG4bKnobody"), UAS, 0.0)
    assert isinstance(events(mgr)[0], StrayResponse)
    no_branch = response(200, "OK").replace(b";branch=z9hG4bKid1", b"")
    receive(mgr, no_branch, UAS, 0.0)
    assert isinstance(events(mgr)[0], StrayResponse)
    broken = parse_message(response(200, "OK"))
    broken.headers.remove("CSeq")
    broken.invalidate()
    mgr.receive(broken, UAS, 0.0)
    assert events(mgr) == []
    assert mgr.stats["stray_responses"] == 2
    assert mgr.stats["dropped"] == 1


# -- non-INVITE server transactions (RFC 3261 §17.2.2, Figure 8) ----------------------------


def test_server_absorbs_resends_and_times_out_with_timer_j() -> None:
    mgr = manager()
    receive(mgr, options(), UAC, 0.0)
    [event] = events(mgr)
    assert isinstance(event, RequestReceived)
    key = event.key
    assert key == TransactionKey("z9hG4bKa1", "OPTIONS", "127.0.0.1:5070")
    assert event.source == UAC
    assert to_bytes(event.request) == options()  # sent-by == source, no rport: untouched
    # Trying: a retransmission is absorbed.
    receive(mgr, options(), UAC, 0.5)
    assert (events(mgr), mgr.outbox()) == ([], [])
    trying = make_response(event.request, 100)
    mgr.respond(key, trying, 0.6)
    trying_bytes = to_bytes(trying)
    assert mgr.outbox() == [(trying_bytes, UAC)]
    # Proceeding: resend the last provisional.
    receive(mgr, options(), UAC, 1.5)
    assert mgr.outbox() == [(trying_bytes, UAC)]
    ok = make_response(event.request, 200, to_tag="t1")
    mgr.respond(key, ok, 2.0)
    ok_bytes = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1\r\n"
        b"From: <sip:uac@127.0.0.1>;tag=f1\r\n"
        b"To: <sip:uas@127.0.0.1>;tag=t1\r\n"
        b"Call-ID: c1@127.0.0.1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    assert mgr.outbox() == [(ok_bytes, UAC)]
    assert mgr.get_timer() == 34.0  # Timer J = 64*T1
    # Completed: resend the final response, exact bytes; later TU responses are discarded.
    receive(mgr, options(), UAC, 3.5)
    receive(mgr, options(), UAC, 7.5)
    assert mgr.outbox() == [(ok_bytes, UAC), (ok_bytes, UAC)]
    mgr.respond(key, make_response(event.request, 500), 4.0)
    assert mgr.outbox() == []
    assert mgr.stats["responses_discarded"] == 1
    txn = mgr.server_transaction(key)
    assert isinstance(txn, ServerTransaction)
    assert txn.state is State.COMPLETED
    assert txn.data == ok_bytes  # a view of the lingering record: bytes, no Response object
    assert txn.response is None
    assert run_until(mgr, 100.0) == [(34.0, [], [])]
    assert mgr.server_transaction(key) is None
    with pytest.raises(LocalProtocolError, match="No server transaction"):
        mgr.respond(key, ok, 35.0)
    # After Timer J the same request is a new transaction.
    receive(mgr, options(), UAC, 40.0)
    assert isinstance(events(mgr)[0], RequestReceived)
    assert mgr.stats["requests_received"] == 2
    assert mgr.stats["requests_absorbed"] == 1
    assert mgr.stats["responses_resent"] == 3


def test_abandoned_server_transaction_sends_nothing_and_absorbs_until_timer_j() -> None:
    """RFC 4320 §4.2: no final response at all; retransmissions are not new requests."""
    mgr = manager()
    receive(mgr, options(), UAC, 0.0)
    [event] = events(mgr)
    mgr.abandon(event.key, 32.0)
    assert mgr.outbox() == []
    assert server(mgr, event.key).state is State.COMPLETED
    receive(mgr, options(), UAC, 33.0)
    assert (events(mgr), mgr.outbox()) == ([], [])
    mgr.respond(event.key, make_response(event.request, 408, to_tag="t1"), 33.5)
    assert mgr.outbox() == []  # a response after giving up is discarded like any late one
    assert run_until(mgr, 100.0) == [(32.0 + 64 * DEFAULT_TIMERS.t1, [], [])]
    receive(mgr, options(), UAC, 70.0)
    assert isinstance(events(mgr)[0], RequestReceived)
    assert (mgr.stats["abandoned"], mgr.stats["requests_absorbed"]) == (1, 1)
    assert mgr.stats["responses_resent"] == 0


def test_abandoned_server_transaction_over_tcp_ends_at_once() -> None:
    mgr = manager()
    receive(mgr, options(via="SIP/2.0/TCP 127.0.0.1:40001"), TCP_UAC, 0.0)
    [event] = events(mgr)
    mgr.abandon(event.key, 1.0)
    assert (mgr.outbox(), mgr.server_transaction(event.key)) == ([], None)
    with pytest.raises(LocalProtocolError, match="No non-INVITE server transaction"):
        mgr.abandon(event.key, 2.0)


def test_invite_server_transaction_cannot_be_abandoned() -> None:
    mgr = manager()
    receive(mgr, options(method="INVITE"), UAC, 0.0)
    [event] = events(mgr)
    with pytest.raises(LocalProtocolError, match="No non-INVITE server transaction"):
        mgr.abandon(event.key, 1.0)


def test_server_final_from_trying_over_tcp_terminates_at_once() -> None:
    mgr = manager()
    data = options(via="SIP/2.0/TCP 127.0.0.1:40001")
    receive(mgr, data, TCP_UAC, 0.0)
    [event] = events(mgr)
    mgr.respond(event.key, make_response(event.request, 200, to_tag="t1"), 0.1)
    [(sent, peer)] = mgr.outbox()
    assert peer == TCP_UAC  # RFC 3261 §18.2.2: same connection
    assert sent.startswith(b"SIP/2.0 200 OK\r\n")
    assert mgr.server_transaction(event.key) is None  # Timer J = 0
    assert mgr.get_timer() is None


def test_server_completed_from_proceeding_with_error_response() -> None:
    mgr = manager()
    receive(mgr, options(), UAC, 0.0)
    [event] = events(mgr)
    mgr.respond(event.key, make_response(event.request, 180, "Ringing"), 0.0)
    mgr.respond(event.key, make_response(event.request, 486, "Busy Here", to_tag="t"), 0.1)
    mgr.respond(event.key, make_response(event.request, 181), 0.2)
    assert [data.split(b"\r\n", 1)[0] for data, _ in mgr.outbox()] == [
        b"SIP/2.0 180 Ringing",
        b"SIP/2.0 486 Busy Here",
    ]
    assert server(mgr, event.key).state is State.COMPLETED


def test_cancel_is_a_separate_server_transaction() -> None:
    mgr = manager()
    receive(mgr, options(method="INVITE"), UAC, 0.0)
    receive(mgr, options(method="CANCEL"), UAC, 0.1)
    invite, cancel = events(mgr)
    assert invite.key.method == "INVITE"
    assert cancel.key.method == "CANCEL"
    assert invite.key.branch == cancel.key.branch
    assert isinstance(mgr.server_transaction(cancel.key), ServerTransaction)
    assert isinstance(mgr.server_transaction(invite.key), InviteServerTransaction)


def test_same_branch_other_sent_by_is_another_transaction() -> None:
    mgr = manager()
    receive(mgr, options(), UAC, 0.0)
    receive(mgr, options(via="SIP/2.0/UDP 127.0.0.1:5071"), Peer("udp", "127.0.0.1", 5071), 0.0)
    assert len(events(mgr)) == 2


def test_transactions_from_one_address_share_one_sent_by_string() -> None:
    mgr = manager()
    receive(mgr, options("z9hG4bKa1"), UAC, 0.0)
    receive(mgr, options("z9hG4bKa2"), UAC, 0.0)
    first, second = events(mgr)
    assert first.key.sent_by == "127.0.0.1:5070"
    assert first.key.sent_by is second.key.sent_by  # each lingering record holds no copy


def test_unaddressable_request_dropped() -> None:
    mgr = manager()
    request = parse_message(options())
    request.headers.remove("Via")
    request.invalidate()
    mgr.receive(request, UAC, 0.0)
    assert (events(mgr), mgr.outbox(), mgr.stats["dropped"]) == ([], [], 1)


def test_overload_answers_503_statelessly_with_retry_after_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mgr = manager(max_transactions=1)
    receive(mgr, options(), UAC, 0.0)
    with caplog.at_level("WARNING", logger="presence_sip.transaction.manager"):
        receive(mgr, options("z9hG4bKa2"), UAC, 0.0)
        receive(mgr, options("z9hG4bKa3"), UAC, 1.0)
    assert len(events(mgr)) == 1
    [(data, peer), _] = mgr.outbox()
    assert peer == UAC
    assert data == (
        b"SIP/2.0 503 Service Unavailable\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa2\r\n"
        b"From: <sip:uac@127.0.0.1>;tag=f1\r\n"
        b"To: <sip:uas@127.0.0.1>;tag=id1\r\n"
        b"Call-ID: c1@127.0.0.1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Retry-After: 5\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    assert mgr.stats["overload_rejected"] == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # at most once a minute
    assert "new requests are answered 503 (1 so far)" in warnings[0]


def test_bad_timers_refused() -> None:
    with pytest.raises(ConfigError):
        manager(timers=Timers(t1=0.0))
    with pytest.raises(ConfigError):
        manager(timers=Timers(t1=5.0, t2=4.0))
    with pytest.raises(ConfigError):
        manager(timers=Timers(t4=-1.0))


def test_custom_timers() -> None:
    mgr = manager(timers=Timers(t1=0.1, t2=0.4, t4=1.0))
    mgr.send_request(client_request(mgr), UAS, 0.0)
    log = run_until(mgr, 100.0)
    assert [at for at, d, _ in log if d] == pytest.approx(
        [0.1, 0.3, 0.7, 1.1, 1.5, 1.9, 2.3, 2.7, 3.1, 3.5, 3.9, 4.3, 4.7, 5.1, 5.5, 5.9, 6.3]
    )
    assert log[-1][0] == pytest.approx(6.4)


def test_stats_start_at_zero() -> None:
    assert manager().stats == dict.fromkeys(STAT_NAMES, 0)


# -- Via received / rport (RFC 3261 §18.2.1, §18.2.2, RFC 3581) ------------------------------


@pytest.mark.parametrize(
    ("via", "source", "stamped", "reply_to"),
    [
        pytest.param(
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1",
            UAC,
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1",
            UAC,
            id="same-address-untouched",
        ),
        pytest.param(
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1;rport",
            Peer("udp", "127.0.0.1", 32768),
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1;rport=32768;received=127.0.0.1",
            Peer("udp", "127.0.0.1", 32768),
            id="rport-filled-received-always",
        ),
        pytest.param(
            "SIP/2.0/UDP uac.example.test:5070;branch=z9hG4bKa1",
            UAC,
            "SIP/2.0/UDP uac.example.test:5070;branch=z9hG4bKa1;received=127.0.0.1",
            UAC,
            id="name-gets-received",
        ),
        pytest.param(
            "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKa1",
            UAC,
            "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKa1;received=127.0.0.1",
            Peer("udp", "127.0.0.1", 5060),
            id="claimed-address-replaced-port-default",
        ),
        pytest.param(
            "SIP/2.0/UDP 192.0.2.7:5099 ; received=192.0.2.99 ;branch=z9hG4bKa1"
            ";maddr=239.255.255.1",
            UAC,
            "SIP/2.0/UDP 192.0.2.7:5099;branch=z9hG4bKa1;maddr=239.255.255.1;received=127.0.0.1",
            Peer("udp", "127.0.0.1", 5099),
            id="spoofed-received-overwritten-maddr-ignored",
        ),
        pytest.param(
            "SIP/2.0/UDP [::1]:5070;branch=z9hG4bKa1",
            Peer("udp", "::1", 5070),
            "SIP/2.0/UDP [::1]:5070;branch=z9hG4bKa1",
            Peer("udp", "::1", 5070),
            id="ipv6-same",
        ),
        pytest.param(
            "SIP/2.0/UDP [::1]:5070;branch=z9hG4bKa1",
            Peer("udp", "0:0:0:0:0:0:0:1", 5070),
            "SIP/2.0/UDP [::1]:5070;branch=z9hG4bKa1",
            Peer("udp", "::1", 5070),
            id="ipv6-same-other-spelling",
        ),
        pytest.param(
            "SIP/2.0/TCP uac.example.test;branch=z9hG4bKa1;rport",
            TCP_UAC,
            "SIP/2.0/TCP uac.example.test;branch=z9hG4bKa1;rport=40001;received=127.0.0.1",
            Peer("tcp", "127.0.0.1", 5060, TCP_UAC.connection),
            id="tcp-same-connection-else-received-and-default-port",
        ),
        pytest.param(
            "SIP/2.0/TLS 127.0.0.1:5071;branch=z9hG4bKa1",
            Peer("tls", "127.0.0.1", 40002, 9),
            "SIP/2.0/TLS 127.0.0.1:5071;branch=z9hG4bKa1",
            Peer("tls", "127.0.0.1", 5071, 9),
            id="tls-same-connection-else-sent-by-port",
        ),
    ],
)
def test_via_stamping_and_response_destination(
    via: str, source: Peer, stamped: str, reply_to: Peer
) -> None:
    mgr = manager()
    data = options("", via=via)
    receive(mgr, data, source, 0.0)
    [event] = events(mgr)
    assert event.request.headers.get("Via") == stamped
    assert to_bytes(event.request) == data.replace(via.encode(), stamped.encode())
    assert event.request.top_via.branch == "z9hG4bKa1"
    mgr.respond(event.key, make_response(event.request, 200, to_tag="t"), 0.0)
    [(sent, peer)] = mgr.outbox()
    assert peer == reply_to
    assert f"\r\nVia: {stamped}\r\n".encode() in sent


def test_via_stamping_keeps_the_other_vias_and_headers_in_place() -> None:
    data = (
        b"OPTIONS sip:uas@127.0.0.1 SIP/2.0\r\n"
        b"Max-Forwards: 70\r\n"
        b"Via: SIP/2.0/UDP proxy.example.test;branch=z9hG4bK2;rport, SIP/2.0/UDP 127.0.0.1:5080"
        b";branch=z9hG4bK1\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK0\r\n"
        b"From: <sip:uac@127.0.0.1>;tag=f1\r\n"
        b"To: <sip:uas@127.0.0.1>\r\n"
        b"Call-ID: c2@127.0.0.1\r\n"
        b"CSeq: 7 OPTIONS\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    mgr = manager()
    receive(mgr, data, UAC, 0.0)
    [event] = events(mgr)
    assert to_bytes(event.request) == data.replace(
        b"z9hG4bK2;rport,", b"z9hG4bK2;rport=5070;received=127.0.0.1,"
    )
    assert [v.branch for v in event.request.vias] == ["z9hG4bK2", "z9hG4bK1", "z9hG4bK0"]


def test_stray_ack_is_stamped_and_passed_up_without_key() -> None:
    mgr = manager()
    receive(mgr, options("z9hG4bKack", method="ACK", via_params=";rport"), UAC, 0.0)
    [event] = events(mgr)
    assert isinstance(event, RequestReceived)
    assert (event.request.method, event.source, event.key) == ("ACK", UAC, None)
    via = event.request.headers.get("Via")
    assert via is not None
    assert via.endswith(";rport=5070;received=127.0.0.1")
    assert mgr.outbox() == []
    assert mgr.stats["stray_acks"] == 1


# -- INVITE server transaction: 405 until the ACK (RFC 3261 §17.2.1, Figure 7) ---------------


class Accepted(NamedTuple):
    request: Request
    key: TransactionKey


def invite_405(
    mgr: TransactionManager, source: Peer = UAC, data: bytes | None = None
) -> tuple[Accepted, bytes, Peer]:
    receive(mgr, data or options(method="INVITE"), source, 0.0)
    [received] = events(mgr)
    event = Accepted(received.request, received.key)
    reply = make_response(event.request, 405, to_tag="t405", headers=[("Allow", "OPTIONS")])
    mgr.respond(event.key, reply, 0.0)
    [(sent, peer)] = mgr.outbox()
    return event, sent, peer


def test_invite_405_retransmitted_on_timer_g_until_timer_h() -> None:
    mgr = manager()
    event, sent, peer = invite_405(mgr)
    assert peer == UAC
    assert sent == (
        b"SIP/2.0 405 Method Not Allowed\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1\r\n"
        b"From: <sip:uac@127.0.0.1>;tag=f1\r\n"
        b"To: <sip:uas@127.0.0.1>;tag=t405\r\n"
        b"Call-ID: c1@127.0.0.1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Allow: OPTIONS\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    log = run_until(mgr, 100.0)
    assert [at for at, d, _ in log if d] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(d == [(sent, UAC)] for _, d, _ in log if d)
    assert log[-1][0] == 32.0
    assert log[-1][2] == [TransactionTimedOut(key=event.key, request=event.request)]
    assert mgr.server_transaction(event.key) is None
    assert mgr.stats["responses_retransmitted"] == 10


def test_invite_405_ack_absorbed_then_timer_i() -> None:
    mgr = manager()
    event, sent, _ = invite_405(mgr)
    assert run_until(mgr, 2.0) == [(0.5, [(sent, UAC)], []), (1.5, [(sent, UAC)], [])]
    receive(mgr, options(method="INVITE"), UAC, 2.0)  # INVITE retransmission: resend 405
    assert mgr.outbox() == [(sent, UAC)]
    ack = options(method="ACK", to_tag="t405")
    receive(mgr, ack, UAC, 2.5)
    assert (events(mgr), mgr.outbox()) == ([], [])
    txn = server(mgr, event.key)
    assert txn.state is State.CONFIRMED
    assert mgr.get_timer() == 7.5  # Timer I = T4; G and H cancelled
    receive(mgr, ack, UAC, 3.0)  # ACK retransmission absorbed
    receive(mgr, options(method="INVITE"), UAC, 3.1)  # late INVITE retransmission absorbed
    mgr.respond(event.key, make_response(event.request, 500), 3.2)  # discarded
    assert (events(mgr), mgr.outbox()) == ([], [])
    assert run_until(mgr, 100.0) == [(7.5, [], [])]
    assert mgr.server_transaction(event.key) is None
    receive(mgr, ack, UAC, 8.0)  # after Timer I it is a stray ACK
    [stray] = events(mgr)
    assert stray.key is None
    assert mgr.stats["acks_absorbed"] == 1
    assert mgr.stats["requests_absorbed"] == 1


def test_invite_over_tcp_no_timer_g_and_ack_terminates() -> None:
    mgr = manager()
    event, _, peer = invite_405(mgr, TCP_UAC, options(method="INVITE", via="SIP/2.0/TCP h.test"))
    assert peer == Peer("tcp", "127.0.0.1", 5060, TCP_UAC.connection)  # its connection first
    assert mgr.get_timer() == 32.0  # only Timer H
    receive(mgr, options(method="ACK", via="SIP/2.0/TCP h.test", to_tag="t405"), TCP_UAC, 1.0)
    assert mgr.server_transaction(event.key) is None
    assert mgr.get_timer() is None


def test_invite_proceeding_retransmissions_and_2xx() -> None:
    mgr = manager()
    receive(mgr, options(method="INVITE"), UAC, 0.0)
    [event] = events(mgr)
    receive(mgr, options(method="INVITE"), UAC, 0.5)  # nothing sent yet: absorbed
    assert mgr.outbox() == []
    receive(mgr, options(method="ACK"), UAC, 0.6)  # ACK before any final: absorbed
    assert events(mgr) == []
    ringing = make_response(event.request, 180, to_tag="t")
    mgr.respond(event.key, ringing, 0.7)
    receive(mgr, options(method="INVITE"), UAC, 1.0)
    assert mgr.outbox() == [(to_bytes(ringing), UAC)] * 2
    mgr.respond(event.key, make_response(event.request, 200, to_tag="t"), 1.1)
    assert len(mgr.outbox()) == 1
    assert mgr.server_transaction(event.key) is None  # RFC 3261: 2xx ends it
    assert mgr.get_timer() is None


# -- RFC 2543 fallback matching (RFC 3261 §17.2.3, RFC 4475 inv2543 / badbranch) -------------

INV2543 = (
    b"INVITE sip:UserB@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:UserA@127.0.0.1>\r\n"
    b"To: <sip:UserB@127.0.0.1>\r\n"
    b"Call-ID: 0ha0isn@127.0.0.1\r\n"
    b"CSeq: 8 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def ack_2543(to_tag: str) -> bytes:
    return (
        INV2543.replace(b"INVITE sip", b"ACK sip")
        .replace(b"8 INVITE", b"8 ACK")
        .replace(b"<sip:UserB@127.0.0.1>\r\n", f"<sip:UserB@127.0.0.1>;tag={to_tag}\r\n".encode())
    )


def test_rfc2543_invite_retransmission_and_ack_matched() -> None:
    mgr = manager()
    event, sent, _ = invite_405(mgr, data=INV2543)
    assert event.key.branch.startswith("rfc2543\n")
    assert event.key.method == "INVITE"
    receive(mgr, INV2543, UAC, 0.2)
    assert mgr.outbox() == [(sent, UAC)]
    assert events(mgr) == []
    receive(mgr, ack_2543("wrong"), UAC, 0.3)  # To tag is not our response's: stray
    [stray] = events(mgr)
    assert stray.key is None
    receive(mgr, ack_2543("t405"), UAC, 0.4)
    assert events(mgr) == []
    assert server(mgr, event.key).state is State.CONFIRMED


def test_rfc2543_reinvite_with_to_tag_ack_matched() -> None:
    reinvite = INV2543.replace(b"<sip:UserB@127.0.0.1>\r\n", b"<sip:UserB@127.0.0.1>;tag=t405\r\n")
    mgr = manager()
    event, _, _ = invite_405(mgr, data=reinvite)
    receive(mgr, ack_2543("t405"), UAC, 0.4)
    assert events(mgr) == []
    assert server(mgr, event.key).state is State.CONFIRMED


def test_rfc2543_ack_without_any_transaction_is_stray() -> None:
    mgr = manager()
    receive(mgr, ack_2543("t405"), UAC, 0.0)
    [event] = events(mgr)
    assert event.key is None


def test_badbranch_magic_cookie_alone_uses_rfc2543_matching() -> None:
    mgr = manager()
    bad = options("z9hG4bK")
    receive(mgr, bad, UAC, 0.0)
    [event] = events(mgr)
    assert event.key.branch.startswith("rfc2543\n")
    mgr.respond(event.key, make_response(event.request, 200, to_tag="t"), 0.0)
    ok = mgr.outbox()
    receive(mgr, bad, UAC, 0.5)
    assert mgr.outbox() == ok
    receive(mgr, options("z9hG4bK", cseq=2), UAC, 0.6)  # a new CSeq: a new transaction
    assert len(events(mgr)) == 1


# -- timer heap ------------------------------------------------------------------------------


def test_heap_compaction_and_stale_entries() -> None:
    mgr = manager()
    keys = [mgr.send_request(client_request(mgr), UAS, 0.0) for _ in range(1500)]
    mgr.outbox()
    for key in keys:  # finals cancel E and F (stale entries), records wait for K
        receive(mgr, response(200, "OK", key.branch), UAS, 0.1)
    events(mgr)
    # 3000 entries were pushed, all went stale: the heap was rebuilt on the way.
    assert len(mgr._ctx.heap) < 3000
    assert mgr._ctx.live == 0
    assert len(mgr._ctx.lingering) == 1500
    assert mgr.get_timer() == pytest.approx(5.1)
    assert run_until(mgr, 100.0) == [(pytest.approx(5.1), [], [])]
    assert len(mgr) == 0
    assert mgr._ctx.live == 0
    assert mgr.get_timer() is None


def test_stale_entry_on_top_is_skipped_by_handle_timer() -> None:
    mgr = manager()
    key = mgr.send_request(client_request(mgr), UAS, 0.0)
    receive(mgr, response(200, "OK", key.branch), UAS, 0.1)  # E (0.5) and F now stale
    mgr.handle_timer(1.0)
    assert mgr.outbox() == [(options("z9hG4bKid1"), UAS)]  # only the original send
    assert mgr.get_timer() == pytest.approx(5.1)


def test_illegal_input_raises_and_removes_the_transaction() -> None:
    mgr = manager()
    key = mgr.send_request(client_request(mgr), UAS, 0.0)
    txn = mgr._ctx.clients[key]
    with pytest.raises(LocalProtocolError, match="Timer J not allowed in state Trying"):
        txn.fire(Input.TIMER_J, 0.1)
    assert mgr.client_request(key) is None
    assert mgr.get_timer() is None
    receive(mgr, options(), UAC, 0.0)
    [event] = events(mgr)
    with pytest.raises(LocalProtocolError):
        server(mgr, event.key).fire(Input.TIMER_K, 0.1)
    assert mgr.server_transaction(event.key) is None


def test_rearming_a_live_timer_replaces_it() -> None:
    mgr = manager()
    key = mgr.send_request(client_request(mgr), UAS, 0.0)
    txn = mgr._ctx.clients[key]
    mgr._ctx.arm(txn, Input.TIMER_F, 10.0)  # F was due at 32.0
    assert mgr._ctx.live == 2
    log = run_until(mgr, 100.0)
    assert log[-1][0] == 10.0
    assert isinstance(log[-1][2][0], TransactionTimedOut)
    assert mgr.get_timer() is None


def test_a_finished_transaction_object_does_not_touch_its_successor() -> None:
    mgr = manager()
    receive(mgr, options(method="INVITE"), UAC, 0.0)
    [event] = events(mgr)
    old = server(mgr, event.key)
    mgr.respond(event.key, make_response(event.request, 200, to_tag="t"), 0.0)  # ends it
    receive(mgr, options(method="INVITE"), UAC, 1.0)  # same key, new transaction
    [again] = events(mgr)
    assert again.key == event.key
    new = mgr.server_transaction(event.key)
    assert new is not old
    with pytest.raises(LocalProtocolError):
        old.receive_request(1.1)
    assert mgr.server_transaction(event.key) is new
    key = mgr.send_request(client_request(mgr), TCP_UAS, 0.0)
    client = mgr._ctx.clients[key]
    receive(mgr, response(200, "OK", key.branch), TCP_UAS, 0.1)
    with pytest.raises(LocalProtocolError):
        client.fire(Input.TIMER_E, 0.2)
    assert mgr._ctx.live == 0  # the new INVITE (Proceeding) has no timers; the client is gone


def test_keys_and_reprs() -> None:
    mgr = manager()
    key = mgr.send_request(client_request(mgr), UAS, 0.0)
    assert not key.server
    assert repr(mgr._ctx.clients[key]) == "<ClientTransaction OPTIONS z9hG4bKid1 TRYING>"
    receive(mgr, options(method="INVITE"), UAC, 0.0)
    [event] = events(mgr)
    assert event.key.server
    assert repr(mgr.server_transaction(event.key)) == "<InviteServerTransaction INVITE PROCEEDING>"


# -- lingering: Completed non-INVITE UDP transactions as records (issue 8) -------------------


def test_completed_server_transactions_linger_as_records() -> None:
    mgr = manager(max_transactions=3)
    keys = []
    for n in range(3):
        receive(mgr, options(f"z9hG4bKa{n}"), UAC, 0.0)
        [event] = events(mgr)
        mgr.respond(event.key, make_response(event.request, 200, to_tag="t"), 0.1 * n)
        keys.append(event.key)
    sent = [data for data, _ in mgr.outbox()]
    # No objects, but live transactions until Timer J.
    assert mgr._ctx.servers == {}
    assert len(mgr) == 3
    view = server(mgr, keys[0])
    assert (view.state, view.data, view.reply_to) == (State.COMPLETED, sent[0], UAC)
    receive(mgr, options("z9hG4bKa0"), UAC, 1.0)  # a retransmission: the same bytes again
    assert mgr.outbox() == [(sent[0], UAC)]
    assert events(mgr) == []
    mgr.respond(keys[0], make_response(req(options("z9hG4bKa0")), 500), 1.0)  # discarded
    assert mgr.outbox() == []
    assert mgr.stats["responses_discarded"] == 1
    assert mgr.get_timer() == 32.0
    assert [at for at, _, _ in run_until(mgr, 100.0)] == [32.0, 32.1, 32.2]
    assert len(mgr) == 0
    assert mgr.get_timer() is None
    with pytest.raises(LocalProtocolError, match="No server transaction"):
        mgr.respond(keys[0], make_response(req(options("z9hG4bKa0")), 500), 40.0)
    assert mgr.server_transaction(keys[0]) is None
    receive(mgr, options("z9hG4bKa0"), UAC, 40.0)  # after Timer J: a new transaction
    assert isinstance(events(mgr)[0], RequestReceived)


def test_completed_client_transaction_lingers_and_absorbs() -> None:
    mgr = manager()
    request = client_request(mgr)
    key = mgr.send_request(request, UAS, 0.0)
    mgr.outbox()
    receive(mgr, response(200, "OK"), UAS, 0.1)
    assert [type(e) for e in events(mgr)] == [ResponseReceived]
    assert mgr._ctx.clients == {}
    assert mgr.client_request(key) is None
    assert len(mgr) == 1
    receive(mgr, response(200, "OK"), UAS, 0.2)  # retransmitted final: absorbed, not stray
    receive(mgr, response(180, "Ringing"), UAS, 0.3)
    assert events(mgr) == []
    assert mgr.stats["responses_absorbed"] == 2
    assert mgr.stats["stray_responses"] == 0
    with pytest.raises(LocalProtocolError, match="already in use"):
        mgr.send_request(request, UAS, 0.4)
    assert run_until(mgr, 100.0) == [(pytest.approx(5.1), [], [])]  # Timer K = T4
    assert len(mgr) == 0
    assert mgr.get_timer() is None
    receive(mgr, response(200, "OK"), UAS, 6.0)
    assert [type(e) for e in events(mgr)] == [StrayResponse]


def test_full_table_sheds_the_oldest_records_before_refusing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mgr = manager(max_transactions=3)
    for n in range(3):
        receive(mgr, options(f"z9hG4bKa{n}"), UAC, 0.1 * n)
        answer(mgr, f"z9hG4bKa{n}", 0.1 * n)
    first_answer = mgr.outbox()[0][0]
    # Full of records waiting for Timer J: new requests end them early, oldest first.
    for n in range(3):
        receive(mgr, options(f"z9hG4bKnew{n}"), UAC, 1.0)
        assert [type(e) for e in events(mgr)] == [RequestReceived]
        assert mgr.server_transaction(uac_key(f"z9hG4bKa{n}")) is None
        assert len(mgr) == 3
    assert mgr.outbox() == []
    assert (mgr.stats["lingering_shed"], mgr.stats["overload_rejected"]) == (3, 0)
    # Full of transactions still waiting for their answer: nothing to shed, 503.
    receive(mgr, options("z9hG4bKnew3"), UAC, 1.0)
    [(data, peer)] = mgr.outbox()
    assert (data.split(b"\r\n")[0], peer) == (b"SIP/2.0 503 Service Unavailable", UAC)
    assert (mgr.stats["lingering_shed"], mgr.stats["overload_rejected"]) == (3, 1)
    # A late retransmission of a shed transaction's request is handled as a new request.
    answer(mgr, "z9hG4bKnew0", 2.0)
    mgr.outbox()
    receive(mgr, options("z9hG4bKa0"), UAC, 3.0)  # room made by ending new0's record
    assert [type(e) for e in events(mgr)] == [RequestReceived]
    assert mgr.outbox() == []
    assert mgr.server_transaction(uac_key("z9hG4bKnew0")) is None
    assert mgr.stats["lingering_shed"] == 4
    # One warning per minute of shedding, not one per request.
    warnings = [r.getMessage() for r in caplog.records if "to make room" in r.getMessage()]
    assert warnings == [
        "transaction table full (max_transactions 3): Completed transactions end before "
        "Timer J/K to make room (1 so far)"
    ]
    answer(mgr, "z9hG4bKnew1", 61.0)
    receive(mgr, options("z9hG4bKlater"), UAC, 61.5)
    assert [type(e) for e in events(mgr)] == [RequestReceived]
    warnings = [r.getMessage() for r in caplog.records if "to make room" in r.getMessage()]
    assert len(warnings) == 2
    assert warnings[1].endswith("(5 so far)")
    assert first_answer not in [data for data, _ in mgr.outbox()]


def uac_key(branch: str) -> TransactionKey:
    return TransactionKey(branch, "OPTIONS", "127.0.0.1:5070")


def answer(mgr: TransactionManager, branch: str, now: float) -> None:
    """Answer the OPTIONS server transaction ``branch`` (from UAC) with a 200."""
    events(mgr)
    mgr.respond(uac_key(branch), make_response(req(options(branch)), 200, to_tag="t"), now)


def j_and_k_records(mgr: TransactionManager) -> tuple[TransactionKey, bytes]:
    """A server record (answered at 0.0: Timer J at 32.0) and a client record (its request sent
    at 1.0 and answered: Timer K at 6.0); the client key and the server's answer."""
    receive(mgr, options(), UAC, 0.0)
    [event] = events(mgr)
    mgr.respond(event.key, make_response(event.request, 200, to_tag="t"), 0.0)
    key = mgr.send_request(client_request(mgr), UAS, 1.0)
    receive(mgr, response(200, "OK", key.branch), UAS, 1.0)
    events(mgr)
    return key, mgr.outbox()[0][0]


def test_shedding_takes_the_record_due_first_timer_k_before_timer_j() -> None:
    mgr = manager(max_transactions=2)
    key, server_answer = j_and_k_records(mgr)
    receive(mgr, options("z9hG4bKnew"), UAC, 2.0)  # full: the Timer K record goes
    assert [type(e) for e in events(mgr)] == [RequestReceived]
    receive(mgr, response(200, "OK", key.branch), UAS, 2.0)
    assert [type(e) for e in events(mgr)] == [StrayResponse]
    receive(mgr, options(), UAC, 2.0)  # the Timer J record is still there
    assert mgr.outbox() == [(server_answer, UAC)]
    assert mgr.get_timer() == 32.0


def test_timer_k_records_do_not_wait_behind_timer_j_records() -> None:
    mgr = manager()
    j_and_k_records(mgr)
    assert mgr.get_timer() == 6.0
    mgr.handle_timer(6.0)
    assert len(mgr) == 1
    assert mgr.get_timer() == 32.0


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        ("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1", "z9hG4bKa1"),
        ("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1;rport", "z9hG4bKa1"),
        ("SIP/2.0/UDP h;rport;branch=z9hG4bKa1.ff , SIP/2.0/UDP b;branch=x", "z9hG4bKa1.ff"),
        ("SIP/2.0/UDP h;branch=z9hG4bKa1\t;rport", "z9hG4bKa1"),
        ("SIP/2.0/UDP h;branch=z9hG4bKa1 ;received=1.2.3.4", "z9hG4bKa1"),
        ("SIP/2.0/UDP h;Branch=z9hG4bKa1", None),  # not plain: the caller parses the Via
        ("SIP/2.0/UDP h; branch=z9hG4bKa1", None),
        ('SIP/2.0/UDP h;x=";branch=y";branch=z9hG4bKa1', None),
        ("SIP/2.0/UDP h, SIP/2.0/UDP b;branch=z9hG4bKa1", None),  # not in the top Via
        ("SIP/2.0/UDP h;branch=;rport", None),
        ("SIP/2.0/UDP h;branch=z9hG4bKa1", "z9hG4bKa1"),
        ("SIP/2.0/UDP h;branch=z9hG4bKa1,SIP/2.0/UDP b;branch=x", "z9hG4bKa1"),
        ('SIP/2.0/UDP h;branch=z9hG4bK"a1"', None),
        ("SIP/2.0/UDP h;branch=z9hG4bKa1\x0c", None),
        ("SIP/2.0/UDP h;branch=z9hG4bKa1\xa0;rport", None),
        ("SIP/2.0/UDP h;rport", None),
    ],
)
def test_plain_branch_read_without_parsing_or_refused(via: str, expected: str | None) -> None:
    headers = Headers([("Via", via), ("CSeq", "1 OPTIONS")])
    request = Request("OPTIONS", "sip:b@example.test", headers=headers)
    assert plain_branch(request) == expected


def test_a_request_built_with_its_via_parsed_is_sent_without_reading_the_text() -> None:
    """The NOTIFY path seeds ``top_via``; send_request takes the branch from it (a seed that
    differs from the text, against the contract of ``seed``, shows which one was read)."""
    mgr = manager()
    request = req(options())
    seeded = parse_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKseeded")
    request.seed(top_via=seeded)
    assert request.known_top_via() is seeded
    key = mgr.send_request(request, UAS, 0.0)
    assert key == TransactionKey("z9hG4bKseeded", "OPTIONS")


def test_response_with_a_plain_branch_matched_without_parsing_its_via() -> None:
    mgr = manager()
    request = req(options(via_params=";rport"))
    key = mgr.send_request(request, UAS, 0.0)
    assert key == TransactionKey("z9hG4bKa1", "OPTIONS")
    response = make_response(request, 200)
    mgr.receive(parse_message(to_bytes(response)), UAS, 0.01)
    event = mgr.next_event()
    assert isinstance(event, ResponseReceived)
    assert event.key == key
    assert "top_via" not in event.response._cache  # matched from the header text


# -- requests over the UDP size limit go over TCP (RFC 3261 §18.1.1) -------------------------

OUR_SENT_BY = frozenset({("127.0.0.1", 5070)})
"""Where the manager under test takes TCP connections: the sent-by of the requests it sends."""
WATCHER = Peer("udp", "127.0.0.1", 5060)
WATCHER_TCP = Peer("tcp", "127.0.0.1", 5060)


def notify(branch: str, body_size: int) -> bytes:
    """A NOTIFY from 127.0.0.1:5070 with a body of ``body_size`` bytes."""
    body = b"x" * body_size
    return (
        f"NOTIFY sip:w@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:p@127.0.0.1>;tag=f1\r\n"
        "To: <sip:w@127.0.0.1>;tag=w1\r\n"
        "Call-ID: n1@127.0.0.1\r\n"
        "CSeq: 2 NOTIFY\r\n"
        "Event: presence\r\n"
        "Subscription-State: active;expires=600\r\n"
        f"Content-Length: {body_size}\r\n"
        "\r\n"
    ).encode() + body


def notify_answer(branch: str, transport: str = "UDP") -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5070;branch={branch};rport\r\n"
        "From: <sip:p@127.0.0.1>;tag=f1\r\n"
        "To: <sip:w@127.0.0.1>;tag=w1\r\n"
        "Call-ID: n1@127.0.0.1\r\n"
        "CSeq: 2 NOTIFY\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


def moving(
    udp_mtu: int = 1300, tcp: frozenset[tuple[str, int]] = OUR_SENT_BY
) -> TransactionManager:
    mgr = manager()
    mgr.move_large_requests(udp_mtu, tcp)
    return mgr


def test_a_request_over_1300_bytes_goes_over_tcp_with_its_via_saying_so() -> None:
    mgr = moving()
    branch = mgr.new_branch()
    data = notify(branch, 1200)
    assert len(data) > 1300
    key = mgr.send_request(req(data), WATCHER, 0.0)
    [(sent, peer)] = mgr.outbox()
    assert peer == WATCHER_TCP
    assert sent == data.replace(b"Via: SIP/2.0/UDP ", b"Via: SIP/2.0/TCP ", 1)
    assert mgr.get_timer() == 32.0  # reliable: no Timer E
    receive(mgr, notify_answer(branch, "TCP"), Peer("tcp", "127.0.0.1", 5060, 4), 0.1)
    [answered] = events(mgr)
    assert isinstance(answered, ResponseReceived)
    assert answered.key == key
    assert answered.request.top_via.transport == "TCP"
    assert mgr.stats["requests_moved_to_tcp"] == 1


@pytest.mark.parametrize(
    ("body_size", "udp_mtu", "tcp"),
    [
        pytest.param(1000, 1300, OUR_SENT_BY, id="small"),
        pytest.param(1200, 0, OUR_SENT_BY, id="turned-off"),
        pytest.param(1200, 1300, frozenset({("127.0.0.1", 5071)}), id="no-tcp-at-the-via"),
        pytest.param(1200, 1300, frozenset(), id="no-tcp-at-all"),
    ],
)
def test_requests_that_stay_on_udp(
    body_size: int, udp_mtu: int, tcp: frozenset[tuple[str, int]]
) -> None:
    mgr = moving(udp_mtu, tcp)
    data = notify(mgr.new_branch(), body_size)
    mgr.send_request(req(data), WATCHER, 0.0)
    assert mgr.outbox() == [(data, WATCHER)]
    assert mgr.get_timer() == 0.5  # Timer E
    assert mgr.stats["requests_moved_to_tcp"] == 0


def test_a_request_already_on_a_stream_is_not_moved() -> None:
    mgr = moving()
    data = notify(mgr.new_branch(), 1200)
    mgr.send_request(req(data), TCP_UAS, 0.0)
    assert mgr.outbox() == [(data, TCP_UAS)]


def test_a_failed_connection_sends_the_request_over_udp_and_remembers_the_address() -> None:
    mgr = moving()
    branch = mgr.new_branch()
    data = notify(branch, 1200)
    key = mgr.send_request(req(data), WATCHER, 0.0)
    mgr.outbox()
    mgr.connection_lost(Peer("tcp", "127.0.0.1", 5060, 9), 0.01)  # refused: a reset
    assert events(mgr) == []  # the TU sees no failure
    assert mgr.outbox() == [(data, WATCHER)]  # exactly as it would have gone over UDP
    assert mgr.client_request(key).top_via.transport == "UDP"  # type: ignore[union-attr]
    log = run_until(mgr, 0.6)  # Timer E from the fallback
    assert log == [(0.51, [(data, WATCHER)], [])]
    receive(mgr, notify_answer(branch), WATCHER, 0.7)
    [answered] = events(mgr)
    assert isinstance(answered, ResponseReceived)
    assert answered.key == key
    assert mgr.stats["stream_fallbacks"] == 1
    # The next large request to that address goes over UDP at once, for STREAM_FAILED_FOR
    later = notify(mgr.new_branch(), 1200)
    mgr.send_request(req(later), WATCHER, 10.0)
    assert mgr.outbox() == [(later, WATCHER)]
    again = notify(mgr.new_branch(), 1200)
    mgr.send_request(req(again), WATCHER, 10.0 + 300.0)
    assert mgr.outbox()[0][1] == WATCHER_TCP
    assert mgr.stats["requests_moved_to_tcp"] == 2


def test_timer_f_still_counts_from_the_first_sending_after_a_fallback() -> None:
    mgr = moving()
    key = mgr.send_request(req(notify(mgr.new_branch(), 1200)), WATCHER, 0.0)
    mgr.outbox()
    mgr.connection_lost(WATCHER_TCP, 10.0)  # a connect timeout
    log = run_until(mgr, 100.0)
    assert [instant for instant, _, _ in log][-1] == 32.0
    assert log[-1][2] == [TransactionTimedOut(key=key, request=log[-1][2][0].request)]


def test_a_connection_lost_after_a_provisional_answer_is_a_transport_error() -> None:
    """Only a request nobody answered yet goes over UDP after all (it may have been taken)."""
    mgr = moving()
    branch = mgr.new_branch()
    key = mgr.send_request(req(notify(branch, 1200)), WATCHER, 0.0)
    mgr.outbox()
    trying = notify_answer(branch, "TCP").replace(b"200 OK", b"100 Trying")
    receive(mgr, trying, Peer("tcp", "127.0.0.1", 5060, 4), 0.1)
    events(mgr)
    mgr.connection_lost(Peer("tcp", "127.0.0.1", 5060, 4), 0.2)
    [failed] = events(mgr)
    assert failed == TransactionTimedOut(key=key, request=failed.request, transport_error=True)
    assert mgr.outbox() == []
    assert mgr.stats["stream_fallbacks"] == 0


def test_the_addresses_remembered_are_bounded() -> None:
    mgr = moving()
    for port in range(6000, 6000 + STREAM_FAILED_MAX + 10):
        mgr.send_request(req(notify(mgr.new_branch(), 1200)), Peer("udp", "127.0.0.1", port), 0.0)
        mgr.connection_lost(Peer("tcp", "127.0.0.1", port), 0.0)
    assert len(mgr._ctx.stream_failures) == STREAM_FAILED_MAX
    assert ("127.0.0.1", 6000) not in mgr._ctx.stream_failures  # the oldest went first


def test_a_moved_request_that_times_out_before_its_connection_does_marks_the_address() -> None:
    """A proxy's branch timeout (5 s) ends the transaction before the connect timeout (10 s):
    the address still gets its large requests over UDP afterwards (review of 2026-11-27)."""
    mgr = moving()
    mgr.send_request(req(notify(mgr.new_branch(), 1200)), WATCHER, 0.0, timeout=5.0)
    assert mgr.outbox()[0][1] == WATCHER_TCP
    run_until(mgr, 5.0)
    later = notify(mgr.new_branch(), 1200)
    mgr.send_request(req(later), WATCHER, 6.0)
    assert mgr.outbox() == [(later, WATCHER)]
