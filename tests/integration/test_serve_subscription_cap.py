"""``max_subscriptions`` on a real node (``presence-sip serve`` with a config file, loopback UDP).

One watcher may hold ``[network.presence] max_subscriptions`` subscriptions: the next initial
SUBSCRIBE is refused 403 whatever spelling of its address of record it uses, the node logs a
WARNING naming it and counts it in the status line, and the subscriptions it holds go on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from serve_process import ServeProcess, UdpClient, build_request, free_port, presence_subscribe

from presence_sip.sip import Request, parse_message

DOMAIN = "example.test"
CONFIG = """\
[network]
domain = "{domain}"
data = "{data}"
auth = "none"
default_policy = "allow"

[network.presence]
max_subscriptions = 2

[[node]]
name = "ps1"
roles = ["registrar", "presence"]
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]
"""


def subscribe(client: UdpClient, presentity: str, watcher_uri: str, ua: UdpClient) -> bytes:
    contact = f"sip:alice@{ua.host}:{ua.port}"
    return presence_subscribe(f"sip:{presentity}@{DOMAIN}", client, watcher_uri, contact)


def answer_notifies(ua: UdpClient, node: ServeProcess, count: int) -> list[Request]:
    """Take ``count`` NOTIFYs at the watcher's user agent and answer each 200."""
    taken: list[Request] = []
    while len(taken) < count:
        raw = ua.recv(5.0)
        assert raw is not None, f"{len(taken)} NOTIFYs of {count} within 5 s"
        notify = parse_message(raw)
        assert isinstance(notify, Request)
        assert notify.method == "NOTIFY"
        head = [
            line
            for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
            if line.split(b":")[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
        ]
        ua.send(b"\r\n".join([b"SIP/2.0 200 OK", *head, b"Content-Length: 0", b"", b""]), node)
        taken.append(notify)
    return taken


def test_a_watcher_past_max_subscriptions_is_refused_and_the_node_says_so(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "net.toml"
    config.write_text(CONFIG.format(domain=DOMAIN, data=data, port=port))
    node = serve_factory(config=config, port=port, data_dir=data)
    with UdpClient() as client, UdpClient() as ua:
        for user in ("bob", "carol"):
            register = build_request(
                "REGISTER",
                f"sip:{DOMAIN}",
                client,
                to=f"<sip:{user}@{DOMAIN}>",
                from_=f"<sip:{user}@{DOMAIN}>",
                headers=[("Contact", f"<sip:{user}@{client.host}:{client.port}>")],
            )
            assert client.request(register, node).status == 200
        alice = f"sip:alice@{DOMAIN}"
        for presentity in ("bob", "carol"):
            assert client.request(subscribe(client, presentity, alice, ua), node).status == 200
        answer_notifies(ua, node, 2)
        for spelling in (alice, f"sip:alice@{DOMAIN.upper()}", f"{alice};transport=udp"):
            refused = client.request(subscribe(client, "bob", spelling, ua), node)
            assert (refused.status, refused.reason) == (403, "Too many subscriptions"), spelling
        other = client.request(subscribe(client, "bob", f"sip:dave@{DOMAIN}", ua), node)
        assert other.status == 200
        answer_notifies(ua, node, 1)
        line = node.status_line()
        assert "3 subscriptions (3 refused for max_subscriptions)" in line, line
    log = node.log_text()
    warnings = [t for t in log.splitlines() if " WARNING presence_sip.presence." in t]
    assert len(warnings) == 1, warnings  # once a minute, with the count so far
    assert (
        f"WARNING presence_sip.presence.role: {alice} holds 2 subscriptions (max_subscriptions):"
        " a new one is refused with 403; 1 refused so far"
    ) in warnings[0]
