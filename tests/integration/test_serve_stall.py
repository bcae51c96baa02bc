"""A node that stalls (SIGSTOP, as a descheduled VM or a long pause) while the answers to its
NOTIFYs arrive: it reads them before its retransmission timers run, under either event loop.

A hundred watchers (one UDP socket) subscribe to one presentity, which then publishes: a
hundred NOTIFYs.  The node is stopped, the watchers answer every NOTIFY 200, and the node is
continued after 0.8 s, past Timer E (T1, 0.5 s).  uvloop reads at most 32 datagrams per socket
before it runs the due timers, asyncio one: without the input first (``Driver._run_timers``),
the node sent all 100 NOTIFYs again under either loop.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_process import (
    ServeProcess,
    UdpClient,
    answer_bytes,
    presence_publish,
    provision,
    subscribe_watchers,
)

from presence_sip.sip import Request, Response, parse_message

pytestmark = pytest.mark.integration

DOMAIN = "example.test"
PRESENTITY = "+447700900801"
PRESENTITY_URI = f"sip:{PRESENTITY}@{DOMAIN}"
WATCHERS = 100
STALL = 0.8
"""Seconds the node is stopped: longer than Timer E's first interval (T1 = 0.5 s)."""


@pytest.fixture(params=["uvloop", "asyncio"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServeProcess]:
    data = tmp_path / "data"
    provision(data, DOMAIN, PRESENTITY)
    args = ["--default-policy", "allow", "--loop", request.param]
    with ServeProcess(data, domain=DOMAIN, auth="none", extra_args=args) as running:
        yield running


@pytest.fixture
def watchers() -> Iterator[UdpClient]:
    with UdpClient() as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        yield client


def take_notifies(client: UdpClient, count: int) -> list[Request]:
    """``count`` NOTIFYs, unanswered, and the 200 to the PUBLISH that caused them."""
    notifies: list[Request] = []
    published = False
    while len(notifies) < count or not published:
        raw = client.recv(5.0)
        assert raw is not None, f"{len(notifies)} NOTIFYs of {count} within 5 s"
        message = parse_message(raw)
        if isinstance(message, Response):
            assert (message.status, message.cseq.method) == (200, "PUBLISH"), raw[:80]
            published = True
            continue
        assert message.method == "NOTIFY", raw[:80]
        notifies.append(message)
    return notifies


def test_answers_that_arrived_during_a_stall_are_read_before_timer_e(
    node: ServeProcess, watchers: UdpClient
) -> None:
    subscribe_watchers(node, watchers, PRESENTITY_URI, WATCHERS)
    watchers.send(presence_publish(PRESENTITY_URI, watchers, "closed"), node)
    first = take_notifies(watchers, WATCHERS)
    assert len({notify.call_id for notify in first}) == WATCHERS

    assert node.process is not None
    os.kill(node.process.pid, signal.SIGSTOP)
    try:
        for notify in first:
            watchers.send(answer_bytes(notify), node)
        time.sleep(STALL)
    finally:
        os.kill(node.process.pid, signal.SIGCONT)

    late = [parse_message(raw) for raw in watchers.recv_all(quiet=1.5)]
    retransmitted = [m for m in late if isinstance(m, Request) and m.method == "NOTIFY"]
    assert retransmitted == [], f"{len(retransmitted)} NOTIFYs sent again after the stall"

    # Every subscription is still there: the next change reaches all hundred watchers.
    watchers.send(presence_publish(PRESENTITY_URI, watchers, "open"), node)
    again = take_notifies(watchers, WATCHERS)
    assert {notify.call_id for notify in again} == {notify.call_id for notify in first}
    assert all(b"<basic>open</basic>" in notify.body for notify in again)
