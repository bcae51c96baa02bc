"""``serve --flood-requests`` and ``--max-connections-per-source`` through a real node: one
source flooding is cut off and logged, another source is still served (Kamailio's pike).

Two sources on loopback: 127.0.0.1 floods, 127.0.0.2 is a neighbour that must not notice.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Callable

from serve_process import ServeProcess, TcpClient, UdpClient, build_request, parse_response

DOMAIN = "example.test"
FLOODER, NEIGHBOUR = "127.0.0.1", "127.0.0.2"
LIMIT = 20


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
