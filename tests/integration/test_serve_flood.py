"""``serve --flood-requests`` and ``--max-connections-per-source`` through a real node: one
source flooding is cut off and logged, another source is still served (Kamailio's pike).

Sources on loopback: 127.0.0.1 floods, 127.0.0.2 is a neighbour that must not notice (a
watcher answering a burst of NOTIFYs, below), 127.0.0.3 publishes, 127.0.0.4 and 127.0.0.5
send stray responses (over UDP, over TCP).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from serve_process import ServeProcess, TcpClient, UdpClient, build_request, parse_response

from presence_sip.runtime.agent import SipAgent
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

DOMAIN = "example.test"
FLOODER, NEIGHBOUR = "127.0.0.1", "127.0.0.2"
PUBLISHER, STRAYS_UDP, STRAYS_TCP = "127.0.0.3", "127.0.0.4", "127.0.0.5"
LIMIT = 20
PRESENTITY = "+447700900501"
SUBSCRIPTIONS = 15
"""The watcher's subscriptions: a burst of SUBSCRIBEs under LIMIT, whose NOTIFYs (one each,
and one each per PUBLISH) its answers take well over LIMIT a second."""


def options(client: UdpClient | TcpClient, transport: str = "UDP") -> bytes:
    return build_request("OPTIONS", f"sip:{DOMAIN}", client, transport=transport)


def answered_of_burst(node: ServeProcess, count: int) -> int:
    """Send ``count`` OPTIONS at once from one socket; how many got a 200."""
    with UdpClient(host=FLOODER) as client:
        for _ in range(count):
            client.send(options(client), node)
        return sum(parse_response(data).status == 200 for data in client.recv_all(quiet=1.0))


def tcp_from(node: ServeProcess, host: str) -> TcpClient:
    sock = socket.create_connection(node.address, timeout=5.0, source_address=(host, 0))
    return TcpClient(sock=sock)


def status_over(client: TcpClient) -> int | None:
    """Send OPTIONS over ``client``'s connection: the answer's status, or None (closed)."""
    try:
        client.sock.sendall(options(client, "TCP"))
        reply = client.read_message(timeout=2.0)
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        return None
    return None if reply is None else parse_response(reply).status


def flood_over(client: TcpClient, count: int) -> tuple[int, bool]:
    """Send ``count`` OPTIONS at once over ``client``'s connection: how many got a 200, and
    whether the node closed the connection."""
    client.sock.sendall(b"".join(options(client, "TCP") for _ in range(count)))
    answered = 0
    try:
        while (reply := client.read_message(timeout=2.0)) is not None:
            answered += parse_response(reply).status == 200
    except ConnectionResetError:
        pass  # (closed with our unread requests in its buffer: a reset)
    except TimeoutError:
        return answered, False
    return answered, True


def wait_for_log(node: ServeProcess, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in node.log_text().splitlines() if text in line]
        if lines:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}:\n{node.log_text()[-3000:]}")


def test_a_flooding_source_is_dropped_and_its_neighbour_still_served(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    node = serve_factory(
        domain=DOMAIN,
        auth="none",
        extra_args=["--flood-requests", str(LIMIT), "--max-connections-per-source", "2"],
    )
    assert node.process is not None
    # The start-up probes came from 127.0.0.1 too: at most LIMIT of a burst are answered.
    answered = answered_of_burst(node, 3 * LIMIT)
    assert LIMIT // 2 <= answered < LIMIT, answered
    line = wait_for_log(node, "flood blocked:")
    assert re.search(
        rf"WARNING \S+: flood blocked: src={FLOODER} for 60 s after {LIMIT} requests at once or"
        rf" more than {LIMIT} a second over UDP$",
        line,
    ), line
    # Blocked by address, whatever the port; unanswered, not even a 503.
    assert answered_of_burst(node, 1) == 0
    # Its connections are not: datagrams may carry a forged source (a peer's address).
    flooder_tcp = tcp_from(node, FLOODER)
    assert status_over(flooder_tcp) == 200
    # A flood over a connection, from an address the handshake proved: the connection is
    # closed and new ones refused.
    over_tcp, closed = flood_over(flooder_tcp, 3 * LIMIT)
    flooder_tcp.close()
    assert closed
    assert over_tcp < LIMIT, over_tcp
    wait_for_log(node, f"more than {LIMIT} a second over TCP/TLS")
    blocked_tcp = tcp_from(node, FLOODER)
    assert blocked_tcp.closed_by_peer()
    blocked_tcp.close()
    # The neighbour: served over UDP, and over TCP up to two connections at once.
    with UdpClient(host=NEIGHBOUR) as neighbour:
        assert neighbour.request(options(neighbour), node).status == 200
    first, second = tcp_from(node, NEIGHBOUR), tcp_from(node, NEIGHBOUR)
    third = tcp_from(node, NEIGHBOUR)
    assert third.closed_by_peer()
    third.close()
    assert [status_over(first), status_over(second)] == [200, 200]
    second.close()  # a slot freed when its connection closes
    deadline = time.monotonic() + 5
    while True:
        fourth = tcp_from(node, NEIGHBOUR)
        status = status_over(fourth)
        fourth.close()
        if status is not None or time.monotonic() > deadline:
            break
    assert status == 200
    first.close()
    wait_for_log(node, "refusing connections from 127.0.0.1: blocked for flooding")
    node.process.send_signal(signal.SIGUSR1)
    line = wait_for_log(node, "node status: up")
    dropped = re.search(r"(\d+) dropped for flooding \((\d+) connections refused\)", line)
    assert dropped is not None, line
    assert int(dropped[1]) >= 3 * LIMIT - answered + 1  # (+ the one that started the TCP block)
    assert int(dropped[2]) >= 2  # (the fourth may have been early for the freed slot)
    assert node.process.poll() is None


def stray(number: int) -> bytes:
    """A 200 OK to a NOTIFY the node never sent (its branch matches no transaction)."""
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-stray-{secrets.token_hex(6)}\r\n"
        f"From: <sip:{PRESENTITY}@{DOMAIN}>;tag=ps\r\nTo: <sip:w@{DOMAIN}>;tag=w\r\n"
        f"Call-ID: stray-{number}\r\nCSeq: {number} NOTIFY\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def presence_node(serve_factory: Callable[..., ServeProcess], data: Path) -> ServeProcess:
    data.mkdir(parents=True)
    store = SqliteSubscriberStore.open(data, DOMAIN)
    try:
        store.add_subscriber(PRESENTITY, "secret-pw")
    finally:
        store.close()
    return serve_factory(
        data_dir=data,
        domain=DOMAIN,
        auth="none",
        extra_args=["--flood-requests", str(LIMIT), "--default-policy", "allow"],
    )


async def notify_burst(node: ServeProcess) -> int:
    """SUBSCRIPTIONS subscriptions of one watcher at once, then two PUBLISHes: how many
    NOTIFYs the watcher got (and answered at once, 200 each)."""
    uri = f"sip:{PRESENTITY}@{DOMAIN}"
    pidf = (
        '<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf"'
        f' entity="{uri}"><tuple id="t1"><status><basic>%s</basic></status></tuple></presence>'
    )
    async with (
        SipAgent("watcher", DOMAIN, host=NEIGHBOUR) as watcher,
        SipAgent("publisher", DOMAIN, host=PUBLISHER) as publisher,
    ):
        answers = await asyncio.gather(*(
            watcher.request(
                "SUBSCRIBE", uri, node.address, timeout=5,
                headers=[("Event", "presence"), ("Expires", "600")],
            )
            for _ in range(SUBSCRIPTIONS)
        ))  # fmt: skip
        assert [a.status for a in answers] == [200] * SUBSCRIPTIONS
        for basic in ("open", "closed"):
            published = await publisher.request(
                "PUBLISH", uri, node.address, body=(pidf % basic).encode(), timeout=5,
                headers=[("Event", "presence"), ("Expires", "600"),
                         ("Content-Type", "application/pidf+xml")],
            )  # fmt: skip
            assert published.status == 200
        notifies = 0
        while notifies < 3 * SUBSCRIPTIONS:
            await watcher.next_request("NOTIFY", timeout=5)
            notifies += 1
        options = await watcher.request("OPTIONS", f"sip:{DOMAIN}", node.address, timeout=2)
        assert options.status == 200  # its requests still answered: never blocked
    return notifies


async def test_stray_responses_block_their_source_answers_to_notifies_never(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    node = presence_node(serve_factory, tmp_path / "data")
    # A watcher answering a burst of NOTIFYs: 45 responses and 16 requests in about a second
    # from one address, more than LIMIT at once; responses that match a transaction never count.
    assert await notify_burst(node) == 3 * SUBSCRIPTIONS
    assert "flood blocked" not in node.log_text()
    # Stray responses at a high rate over UDP: counted as requests, so the source is blocked
    # and its next request dropped unanswered.
    with UdpClient(host=STRAYS_UDP) as client:
        for number in range(3 * LIMIT):
            client.send(stray(number), node)
        line = wait_for_log(node, f"flood blocked: src={STRAYS_UDP}")
        assert line.endswith(
            f"for 60 s after {LIMIT} requests at once or more than {LIMIT} a second over UDP"
        )
        client.send(options(client), node)
        assert client.recv_all(quiet=1.0) == []  # nothing ever answers a stray either
    # Over TCP: the connection they came over is closed and new ones are refused.
    strays = tcp_from(node, STRAYS_TCP)
    strays.sock.sendall(b"".join(stray(number) for number in range(3 * LIMIT)))
    assert strays.closed_by_peer()
    strays.close()
    wait_for_log(node, f"flood blocked: src={STRAYS_TCP}")
    refused = tcp_from(node, STRAYS_TCP)
    assert refused.closed_by_peer()
    refused.close()
    with UdpClient(host=NEIGHBOUR) as neighbour:
        assert neighbour.request(options(neighbour), node).status == 200
    assert node.log_text().count("flood blocked") == 2
