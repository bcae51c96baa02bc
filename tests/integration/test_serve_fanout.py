"""A presentity with more watchers than one flush sends (``purge_batch``, 1,000): a real node
answers other requests while the NOTIFYs of one PUBLISH are still going out, and one stopped
meanwhile sends those still waiting before it exits.

2,500 watchers (one UDP socket) subscribe to one presentity, which publishes; an OPTIONS is sent
right behind the PUBLISH.  The node sends 1,000 NOTIFYs with the PUBLISH's answer, then the
rest at its next timer calls, reading what came in first: the OPTIONS is answered between
them, not after all 2,500 (~0.15-0.3 s of NOTIFYs at 8,000-15,000/s).  Every watcher still gets
exactly one NOTIFY with the new state.

A SIGTERM right behind the PUBLISH's 200 reaches the node while its first slice goes out: the
node sends the remaining slices at once, before it closes its sockets, so every watcher learns
the new state (without that, 5,000-6,000 of 10,000 watchers got nothing until the next change
or their refresh, up to an hour later).
"""

from __future__ import annotations

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
    build_request,
    presence_publish,
    provision,
    subscribe_watchers,
)

from presence_sip.presence.watchers import PresenceSettings
from presence_sip.sip import Request, Response, parse_message

pytestmark = pytest.mark.integration

DOMAIN = "example.test"
PRESENTITY = "+447700900901"
PRESENTITY_URI = f"sip:{PRESENTITY}@{DOMAIN}"
WATCHERS = 2_500
WATCHERS_AT_STOP = 10_000
STOP_WAIT = 20.0
"""Seconds the node has to exit after the SIGTERM, its NOTIFYs received meanwhile."""
BATCH = PresenceSettings().purge_batch
SO_RCVBUFFORCE = 33
"""Linux ``<asm-generic/socket.h>``: SO_RCVBUF past ``net.core.rmem_max`` (root); not in the
socket module."""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServeProcess]:
    data = tmp_path / "data"
    provision(data, DOMAIN, PRESENTITY)
    args = ["--default-policy", "allow"]
    with ServeProcess(data, domain=DOMAIN, auth="none", extra_args=args) as running:
        yield running


@pytest.fixture
def watchers() -> Iterator[UdpClient]:
    with UdpClient() as client:
        for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):  # else up to rmem_max
            try:
                client.sock.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                break
            except OSError:
                continue
        yield client


def test_other_requests_are_answered_while_a_large_fan_out_goes_out(
    node: ServeProcess, watchers: UdpClient
) -> None:
    assert BATCH < WATCHERS
    subscribe_watchers(node, watchers, PRESENTITY_URI, WATCHERS)
    watchers.send(presence_publish(PRESENTITY_URI, watchers, "open"), node)
    options = build_request("OPTIONS", f"sip:{DOMAIN}", watchers, call_id="options-behind")
    watchers.send(options, node)

    notified: set[str] = set()
    options_answered_after: int | None = None
    while len(notified) < WATCHERS or options_answered_after is None:
        raw = watchers.recv(5.0)
        answered = options_answered_after is not None
        assert raw is not None, (
            f"{len(notified)} NOTIFYs of {WATCHERS}; OPTIONS answered: {answered}"
        )
        message = parse_message(raw)
        if isinstance(message, Request):
            assert message.method == "NOTIFY"
            assert b"<basic>open</basic>" in message.body
            assert message.call_id not in notified, "a second NOTIFY to one watcher"
            notified.add(message.call_id)
            watchers.send(answer_bytes(message), node)
        elif message.cseq.method == "OPTIONS":
            assert message.status == 200
            options_answered_after = len(notified)
    # Answered within two flushes of NOTIFYs, not after the last of them.
    print(f"the OPTIONS was answered after {options_answered_after} NOTIFYs of {WATCHERS}")
    assert options_answered_after < min(WATCHERS, 2 * BATCH), options_answered_after


def test_a_node_stopped_during_a_large_fan_out_sends_the_notifies_still_waiting(
    node: ServeProcess, watchers: UdpClient
) -> None:
    subscribe_watchers(node, watchers, PRESENTITY_URI, WATCHERS_AT_STOP)
    watchers.send(presence_publish(PRESENTITY_URI, watchers, "open"), node)
    process = node.process
    assert process is not None
    while True:  # the 200 leaves before the first slice of NOTIFYs
        raw = watchers.recv(5.0)
        assert raw is not None, "no answer to the PUBLISH"
        message = parse_message(raw)
        if isinstance(message, Response):
            assert (message.status, message.cseq.method) == (200, "PUBLISH")
            break
    process.send_signal(signal.SIGTERM)
    notified: set[str] = set()
    deadline = time.monotonic() + STOP_WAIT
    while (raw := watchers.recv(0.5)) is not None or process.poll() is None:
        assert time.monotonic() < deadline, f"still running {STOP_WAIT} s after SIGTERM"
        if raw is None:
            continue
        message = parse_message(raw)
        assert isinstance(message, Request), raw[:80]
        assert message.method == "NOTIFY"
        assert b"<basic>open</basic>" in message.body
        notified.add(message.call_id)
    assert process.wait() == 0
    log = node.log_text()
    assert len(notified) == WATCHERS_AT_STOP, (
        f"{len(notified)} of {WATCHERS_AT_STOP} watchers notified before the node exited"
    )
    # The stop came while the fan-out was going out (else this test shows nothing).
    assert "NOTIFYs that waited sent before stopping" in log, log[-2000:]
