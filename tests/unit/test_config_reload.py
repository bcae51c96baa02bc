"""A configuration read again (SIGHUP): what differs (``config_changes``), and what a node built
from the first file takes of the second (:meth:`Node.reconfigure`), seen in the answers of its
sans-IO endpoint (byte-exact requests, no socket).  The served process and its log lines:
``tests/integration/test_serve_config_reload.py``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from presence_sip.cli.main import build_parser
from presence_sip.cli.serve_config import load_configs
from presence_sip.config_changes import config_changes, live_config
from presence_sip.node import Node, NodeConfig
from presence_sip.presence.role import PresenceRole
from presence_sip.proxy.routing import NextHop
from presence_sip.sip import Response, parse_message
from presence_sip.sip.peer import Peer

CONFIG = """
[network]
data = "{data}"
{network}

[[network.route]]
domain = "net-a.test"
transport = "tls"
host = "127.0.1.2"

[[node]]
name = "ps1"
{node}
"""

SOURCE = Peer("udp", "127.0.0.1", 5070)

REGISTER = (
    b"REGISTER sip:net-b.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreload{n}\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:+447700900123@net-b.test>;tag=r{n}\r\n"
    b"To: <sip:+447700900123@net-b.test>\r\n"
    b"Call-ID: reload-{n}@127.0.0.1\r\n"
    b"CSeq: {n} REGISTER\r\n"
    b"Contact: <sip:+447700900123@127.0.0.1:5070>\r\n"
    b"Expires: {expires}\r\n"
    b"Content-Length: 0\r\n\r\n"
)


DEFAULTS = {"domain": '"net-b.test"', "auth": '"none"', "default_policy": '"confirm"'}
"""``[network]`` keys every file here sets, unless the test's own lines set them."""
LISTEN = 'listen = ["udp:127.0.2.11:5060", "tcp:127.0.2.11:5060"]'


def configs(tmp_path: Path, network: str = "", node: str = "", *flags: str) -> NodeConfig:
    """The one node of :data:`CONFIG` with ``network`` lines in its ``[network]`` (tables may
    follow) and ``node`` lines in its ``[[node]]``, as ``serve`` reads the file with ``flags``."""
    lines = network.split("\n[", 1)[0].splitlines()  # ([network] itself, before any table)
    for key, value in DEFAULTS.items():
        if not any(line.startswith(f"{key} =") for line in lines):
            network = f"{key} = {value}\n{network}"
    if "listen =" not in node:
        node = f"{LISTEN}\n{node}"
    path = tmp_path / "net-b.toml"
    path.write_text(CONFIG.format(data=tmp_path / "data", network=network, node=node))
    args: argparse.Namespace = build_parser().parse_args(["serve", str(path), *flags])
    [config] = load_configs(args)
    return config


def register(node: Node, n: int, expires: int) -> Response:
    data = REGISTER.replace(b"{n}", str(n).encode()).replace(b"{expires}", str(expires).encode())
    node.endpoint.receive(data, SOURCE, node.clock())
    [(reply, _)] = node.endpoint.outbox()
    response = parse_message(reply)
    assert isinstance(response, Response)
    return response


def test_the_same_file_changes_nothing(tmp_path: Path) -> None:
    first = configs(tmp_path, "udp_mtu = 1300", "server_header = 'x'")
    assert config_changes(first, configs(tmp_path, "udp_mtu = 1300", "server_header = 'x'")) == []


def test_changes_are_named_as_the_file_names_them_and_split_live_or_at_the_next_start(
    tmp_path: Path,
) -> None:
    old = configs(tmp_path)
    new = configs(
        tmp_path,
        'default_policy = "allow"\nauth_block_seconds = 60\naliases = ["sip.net-b.test"]\n'
        "[network.presence]\nmax_subscriptions = 2",
        'listen = ["udp:127.0.2.11:5070"]',
    )
    changes = [(str(c), c.live) for c in config_changes(old, new)]
    assert changes == [
        ("aliases [] -> [sip.net-b.test]", False),
        ("listen [udp:127.0.2.11:5060, tcp:127.0.2.11:5060] -> [udp:127.0.2.11:5070]", False),
        ("default_policy 'confirm' -> 'allow'", True),
        ("auth_block_seconds 300 -> 60", True),
        ("[network.presence] max_subscriptions 10000 -> 2", True),
    ]
    running = live_config(old, new)
    assert running.listen == old.listen  # what waits for a restart stays as it runs
    assert running.aliases == ()
    assert running.default_policy == "allow"
    assert running.limits.auth_block == 60
    assert running.presence is not None
    assert running.presence.max_subscriptions == 2


def test_flood_exempt_is_named_as_written_the_addresses_exempt_anyway_apart(
    tmp_path: Path,
) -> None:
    """The reload line shows the operator's own list; the file's nodes and route hosts, exempt
    by themselves, are a change of their own, and only when they change."""
    old = configs(tmp_path, "flood_requests = 50")
    new = configs(tmp_path, 'flood_requests = 50\nflood_exempt = ["10.0.0.0/8"]')
    assert [str(c) for c in config_changes(old, new)] == ["flood_exempt [] -> [10.0.0.0/8]"]
    assert old.limits.flood_exempt_peers == ("127.0.2.11", "127.0.1.2")  # node, route host
    running = live_config(old, new)
    assert running.limits.flood_exempt == ("10.0.0.0/8",)
    assert running.limits.flood_exempt_peers == old.limits.flood_exempt_peers
    moved = configs(tmp_path, "flood_requests = 50", 'listen = ["udp:127.0.2.21:5060"]')
    assert [str(c) for c in config_changes(old, moved) if c.live] == [
        "flood_exempt (the file's nodes and next hops) [127.0.2.11, 127.0.1.2]"
        " -> [127.0.2.21, 127.0.1.2]"
    ]
    assert live_config(old, moved).limits.flood_exempt_peers == ("127.0.2.21", "127.0.1.2")


def test_a_flag_still_wins_over_the_file_read_again(tmp_path: Path) -> None:
    old = configs(tmp_path, "", "", "--default-policy", "block")
    new = configs(tmp_path, 'default_policy = "allow"', "", "--default-policy", "block")
    assert config_changes(old, new) == []


def test_tls_turned_on_takes_a_restart_new_files_do_not(tmp_path: Path) -> None:
    old = configs(tmp_path)
    on = configs(tmp_path, "", 'cert = "a.pem"\nkey = "a.key"')
    [change] = config_changes(old, on)
    assert (str(change), change.live) == ("cert (none) -> 'a.pem'", False)
    assert live_config(old, on).tls is None
    rotated = configs(tmp_path, "", 'cert = "b.pem"\nkey = "b.key"')
    assert [str(c) for c in config_changes(on, rotated) if c.live] == [
        "cert 'a.pem' -> 'b.pem'",
        "key 'a.key' -> 'b.key'",
    ]


def test_a_node_takes_the_new_settings_at_its_next_request(tmp_path: Path) -> None:
    """Registrar expiries, Server header, route next hops (and their TLS names), the guards, the
    transaction cap and the presence settings: each seen where a request meets it."""
    node = Node(configs(tmp_path))  # not started: no socket
    try:
        node.route_for(node.config.listen)
        before = register(node, 1, 7200)
        assert before.headers.get("Server") == "presence-sip"
        assert node.guard.throttle is not None
        assert node.driver.flood is None

        changes = node.reconfigure(
            configs(
                tmp_path,
                'server_header = "pres/2"\nauth_failures = 0\nflood_requests = 50\n'
                "max_transactions = 500\n"
                "[network.registrar]\ndefault_expires = 600\nmax_expires = 600\nflow_timer = 20\n"
                "[network.presence]\nmin_expires = 120\n"
                '[[network.route]]\ndomain = "net-c.test"\ntransport = "tls"\n'
                'host = "127.0.1.9"\nport = 5071',
            )
        )
        assert all(change.live for change in changes), changes
        after = register(node, 2, 7200)
        assert after.headers.get("Server") == "pres/2"
        assert str(after.headers.get("Contact")).endswith(";expires=600")
        assert str(before.headers.get("Contact")).endswith(";expires=7200")
        assert node.guard.throttle is None
        assert node.driver.flood is not None
        assert node.endpoint.report_stray is not None  # (strays count as requests)
        assert node.proxy is not None
        assert node.proxy.routes.hops("net-c.test") == [
            NextHop("tls", "127.0.1.9", 5071, priority=10, weight=1)
        ]
        assert node.driver.tls_names[("127.0.1.9", 5071)] == frozenset({"net-c.test"})
        assert isinstance(node.presence, PresenceRole)
        assert node.presence.server.settings.min_expires == 120
        assert node.registrar.policy.flow_timer == 20
        assert node.config.limits.max_transactions == 500
    finally:
        node.close()


@pytest.mark.parametrize("changed", ['domain = "net-c.test"', 'auth = "digest"'])
def test_what_a_node_is_built_around_waits_for_its_next_start(tmp_path: Path, changed: str) -> None:
    node = Node(configs(tmp_path))
    try:
        [change] = node.reconfigure(configs(tmp_path, changed))
        assert not change.live
        assert (node.config.domain, node.config.auth) == ("net-b.test", "none")
        assert register(node, 1, 60).status == 200  # (still no challenge: auth stays none)
    finally:
        node.close()
