"""``presence-sip serve CONFIG.toml``: nodes, flags over the file, static routes, clear errors."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

import pytest

from presence_sip.cli.main import build_parser
from presence_sip.cli.serve_config import load_configs
from presence_sip.node import Node
from presence_sip.presence.role import PresenceRole
from presence_sip.proxy.routing import NextHop
from presence_sip.sip import Response, parse_message
from presence_sip.sip.errors import ConfigError
from presence_sip.sip.peer import Peer

CONFIG = """
[network]
domain = "net-b.test"
data = "data/net-b"
auth = "none"

[[network.route]]
domain = "NET-A.test"
transport = "tls"
host = "127.0.1.2"
priority = 10

[[network.route]]
domain = "net-a.test"
transport = "tls"
host = "127.0.1.3"
port = 5071
priority = 20
weight = 3

[[node]]
name = "ps1"
roles = ["registrar", "presence"]
listen = ["udp:127.0.2.11:5060", "tcp:127.0.2.11:5060"]

[[node]]
name = "ps2"
listen = ["udp:127.0.2.12:5060"]
"""


def args_for(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_nodes_routes_and_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "net-b.toml"
    path.write_text(CONFIG)
    configs = load_configs(args_for(str(path), "--default-policy", "allow"))
    assert [c.name for c in configs] == ["ps1", "ps2"]
    ps1 = configs[0]
    assert ps1.domain == "net-b.test"
    assert ps1.auth == "none"
    assert ps1.default_policy == "allow"
    assert [str(s) for s in ps1.listen] == ["udp:127.0.2.11:5060", "tcp:127.0.2.11:5060"]
    assert ps1.routes == {
        "net-a.test": (
            NextHop("tls", "127.0.1.2", 5061, priority=10, weight=1),
            NextHop("tls", "127.0.1.3", 5071, priority=20, weight=3),
        )
    }
    only = load_configs(args_for(str(path), "--node", "ps2"))
    assert [c.name for c in only] == ["ps2"]


def test_max_transactions_from_file_node_and_flag(tmp_path: Path) -> None:
    path = tmp_path / "net-b.toml"
    path.write_text(
        CONFIG.replace('auth = "none"', 'auth = "none"\nmax_transactions = 50000').replace(
            'name = "ps2"', 'name = "ps2"\nmax_transactions = 7'
        )
    )
    ps1, ps2 = load_configs(args_for(str(path)))
    assert (ps1.limits.max_transactions, ps2.limits.max_transactions) == (50000, 7)
    [flagged] = load_configs(args_for(str(path), "--node", "ps2", "--max-transactions", "900"))
    assert flagged.limits.max_transactions == 900
    [default] = load_configs(args_for("--domain", "a.test"))
    assert default.limits.max_transactions == 200000


def test_udp_mtu_from_file_node_and_flag(tmp_path: Path) -> None:
    path = tmp_path / "net-b.toml"
    path.write_text(
        CONFIG.replace('auth = "none"', 'auth = "none"\nudp_mtu = 1400').replace(
            'name = "ps2"', 'name = "ps2"\nudp_mtu = 0'
        )
    )
    ps1, ps2 = load_configs(args_for(str(path)))
    assert (ps1.limits.udp_mtu, ps2.limits.udp_mtu) == (1400, 0)
    [flagged] = load_configs(args_for(str(path), "--node", "ps2", "--udp-mtu", "9000"))
    assert flagged.limits.udp_mtu == 9000
    [default] = load_configs(args_for("--domain", "a.test"))
    assert default.limits.udp_mtu == 0  # off, as Kamailio: watchers behind NAT take no TCP


def test_server_header_from_file_node_and_flag(tmp_path: Path) -> None:
    path = tmp_path / "net-b.toml"
    path.write_text(
        CONFIG.replace('auth = "none"', 'auth = "none"\nserver_header = "acme-sbc"').replace(
            'name = "ps2"', 'name = "ps2"\nserver_header = ""'
        )
    )
    ps1, ps2 = load_configs(args_for(str(path)))
    assert (ps1.server_header, ps2.server_header) == ("acme-sbc", "")
    [flagged] = load_configs(args_for(str(path), "--node", "ps2", "--server-header", "x/1"))
    assert flagged.server_header == "x/1"
    [default] = load_configs(args_for("--domain", "a.test"))
    assert default.server_header == "presence-sip"  # the product, no version


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "é", "x" * 257])
def test_server_header_must_be_one_printable_line(value: str) -> None:
    with pytest.raises(ConfigError, match="server_header must be at most 256 printable ASCII"):
        load_configs(args_for("--server-header", value))


def test_the_server_header_reaches_the_responses(tmp_path: Path) -> None:
    for header, expected in (("", None), ("acme-sbc", "acme-sbc")):
        [config] = load_configs(
            args_for("--data", str(tmp_path / (header or "none")), "--server-header", header)
        )
        node = Node(config)  # not started: no socket
        try:
            node.endpoint.receive(OPTIONS, Peer("udp", "127.0.0.1", 5070), 0.0)
            [(data, _)] = node.endpoint.outbox()
            response = parse_message(data)
            assert isinstance(response, Response)
            assert response.status == 200
            assert response.headers.get("Server") == expected
        finally:
            node.close()


OPTIONS = (
    b"OPTIONS sip:example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:svmap@127.0.0.1>;tag=f1\r\n"
    b"To: <sip:example.test>\r\n"
    b"Call-ID: o1@127.0.0.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"User-Agent: friendly-scanner\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_auth_throttle_from_file_node_and_flag(tmp_path: Path) -> None:
    path = tmp_path / "net-b.toml"
    path.write_text(
        CONFIG.replace(
            'auth = "none"',
            'auth = "none"\nauth_failures = 100\nauth_block_seconds = 60\n'
            'auth_failures_exempt = ["192.0.2.10", "10.0.0.0/8"]',
        ).replace('name = "ps2"', 'name = "ps2"\nauth_failures = 0')
    )
    ps1, ps2 = load_configs(args_for(str(path)))
    assert (ps1.limits.auth_failures, ps1.limits.auth_block) == (100, 60)
    assert ps1.limits.auth_failures_exempt == ("192.0.2.10", "10.0.0.0/8")
    assert ps2.limits.auth_failures == 0  # off
    [flagged] = load_configs(args_for(str(path), "--node", "ps2", "--auth-failures", "7"))
    assert flagged.limits.auth_failures == 7
    [default] = load_configs(args_for("--domain", "a.test"))
    assert (default.limits.auth_failures, default.limits.auth_block) == (30, 300)


def test_flood_limits_from_file_node_and_flag_with_the_files_nodes_exempt(tmp_path: Path) -> None:
    """A node's requests to another node of its network carry everyone's traffic: the
    addresses the file's nodes listen on are never counted as one flooding source, nor the
    routes' next hops (a peering network's late answers arrive as strays)."""
    path = tmp_path / "net-b.toml"
    path.write_text(
        CONFIG.replace(
            'auth = "none"',
            'auth = "none"\nflood_requests = 500\nflood_block_seconds = 120\n'
            'max_connections_per_source = 50\nflood_exempt = ["192.0.2.10"]',
        )
        .replace('name = "ps2"', 'name = "ps2"\nflood_requests = 0')
        .replace('["udp:127.0.2.12:5060"]', '["udp:127.0.2.12:5060", "tcp:0.0.0.0:5060"]')
    )
    ps1, ps2 = load_configs(args_for(str(path)))
    limits = ps1.limits
    assert (limits.flood_requests, limits.flood_block, limits.max_connections_per_source) == (
        500, 120, 50,
    )  # fmt: skip
    peers = ("127.0.1.2", "127.0.1.3")  # the two [[network.route]] hosts
    assert limits.flood_exempt == ("192.0.2.10",)  # as written; the file's hosts apart:
    assert limits.flood_exempt_peers == ("127.0.2.11", "127.0.2.12", *peers)  # no 0.0.0.0
    assert (ps2.limits.flood_requests, ps2.limits.max_connections_per_source) == (0, 50)
    [flagged] = load_configs(
        args_for(str(path), "--node", "ps2", "--flood-requests", "9",
                 "--max-connections-per-source", "3")
    )  # fmt: skip
    assert (flagged.limits.flood_requests, flagged.limits.max_connections_per_source) == (9, 3)
    assert flagged.limits.flood_exempt == ("192.0.2.10",)
    assert flagged.limits.flood_exempt_peers == ("127.0.2.11", "127.0.2.12", *peers)
    [default] = load_configs(args_for("--domain", "a.test", "--data", str(tmp_path / "default")))
    assert (default.limits.flood_requests, default.limits.max_connections_per_source) == (0, 0)
    for config, guarded in ((default, False), (replace(flagged, data_dir=str(tmp_path)), True)):
        node = Node(config)  # not started: no socket
        try:  # off: nothing is checked per datagram
            assert (node.driver.flood is not None) is guarded
        finally:
            node.close()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("flood_requests = -5", "flood_requests must be a whole number, 0 or more"),
        ("flood_block_seconds = 0", "flood_block_seconds must be a whole number of at least 1"),
        ("max_connections_per_source = 1.5", "max_connections_per_source must be a whole"),
        ('flood_exempt = ["proxy.example"]', "'proxy.example' is not an address or a network"),
        ("auth_failures = -1", "auth_failures must be a whole number, 0 or more"),
        ('auth_failures = "30"', "auth_failures must be a whole number, 0 or more"),
        ("auth_block_seconds = 0", "auth_block_seconds must be a whole number of at least 1"),
        ('auth_failures_exempt = ["10.0.0.0/33"]', "'10.0.0.0/33' is not an address or a network"),
        ('auth_failures_exempt = "10.0.0.1"', "auth_failures_exempt must be a list"),
    ],
)
def test_auth_throttle_values_are_checked(tmp_path: Path, setting: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG.replace('auth = "none"', f'auth = "none"\n{setting}'))
    with pytest.raises(ConfigError, match=message):
        load_configs(args_for(str(path)))


@pytest.mark.parametrize("value", ["-1", "65508"])
def test_udp_mtu_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="udp_mtu must be a whole number of bytes from 0"):
        load_configs(args_for("--udp-mtu", value))


@pytest.mark.parametrize("value", ["Bad_domain", "net b.test", "net..test"])
def test_a_domain_that_is_not_a_domain_name_is_one_clear_error(value: str) -> None:
    """The HSS refuses it as the realm: the start stopped with a traceback."""
    with pytest.raises(ConfigError, match=re.escape("domain (--domain): bad network domain")):
        load_configs(args_for("--domain", value))


def test_udp_mtu_in_a_file_must_be_a_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG.replace('auth = "none"', 'auth = "none"\nudp_mtu = "1300"'))
    with pytest.raises(ConfigError, match="udp_mtu must be a whole number of bytes"):
        load_configs(args_for(str(path)))


@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_transactions_must_be_positive(value: str) -> None:
    with pytest.raises(ConfigError, match="max_transactions must be a whole number"):
        load_configs(args_for("--max-transactions", value))


def test_max_transactions_in_a_file_must_be_a_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[network]\nmax_transactions = "many"\n[[node]]\nname = "n"\n')
    with pytest.raises(ConfigError, match="not 'many'"):
        load_configs(args_for(str(path)))


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ('host = "127.0.1.2"', "needs a domain"),
        ('domain = "a.test"\nhost = "gw.a.test"', "an IP host"),
        ('domain = "a.test"\ntransport = "sctp"\nhost = "127.0.0.1"', "transport udp|tcp|tls"),
        ('domain = "a.test"', "route for a.test: transport udp|tcp|tls and an IP host"),
        ('domain = "a.test"\nhost = "127.0.0.1"\nport = 99999', "port must be a whole number"),
        ('domain = "a.test"\nhost = "127.0.0.1"\nport = "5060"', "port must be a whole number"),
        ('domain = "a.test"\nhost = "127.0.0.1"\nweight = -1', "weight must be a whole number"),
        (
            'domain = "a.test"\nhost = "127.0.0.1"\nprot = 5062',
            "unknown key(s) prot (did you mean port?)",
        ),
    ],
)
def test_bad_routes_are_one_clear_error(tmp_path: Path, route: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        f'[network]\ndomain = "b.test"\n[[network.route]]\n{route}\n[[node]]\nname = "n"\n'
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_configs(args_for(str(path)))


NETWORK = '[network]\n{}\n[[node]]\nname = "n"\n'
NODE = '[network]\ndomain = "b.test"\n[[node]]\n{}\n'


@pytest.mark.parametrize(
    ("document", "setting", "message"),
    [
        (NETWORK, "domain = 5", "[network] domain must be a non-empty string, not 5"),
        (NETWORK, "data = 7", "[network] data must be a non-empty string"),
        (NETWORK, "cert = 5", "[network] cert must be a non-empty string"),
        (NETWORK, 'aliases = "ab"', "aliases must be a list of non-empty strings, not 'ab'"),
        (NETWORK, "digest_algorithms = 5", "must be a string or a list of strings"),
        (NODE, 'roles = "presence"', "roles must be a list of non-empty strings, not 'presence'"),
        (NODE, 'listen = "udp:127.0.0.1:5060"', "listen must be a list of non-empty strings"),
        (NODE, 'require_client_cert = "false"', "require_client_cert must be true or false"),
        (NODE, "name = 3", "name must be a non-empty string"),
    ],
)
def test_values_of_the_wrong_kind_are_one_clear_error(
    tmp_path: Path, document: str, setting: str, message: str
) -> None:
    """TOML keeps their kind: ``domain = 5`` failed deep inside (a traceback), ``roles =
    "presence"`` was read as the letters of a list, ``"false"`` as true."""
    path = tmp_path / "bad.toml"
    path.write_text(document.format(setting))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_configs(args_for(str(path)))


def test_unknown_node_and_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "net-b.toml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError, match="no node named 'ps9'"):
        load_configs(args_for(str(path), "--node", "ps9"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_configs(args_for(str(tmp_path / "missing.toml")))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("SHA-512-256", "the HSS keeps HA1s for MD5, SHA-256"),  # never verifiable
        ("MD5,SHA-1", "unknown digest algorithm 'SHA-1'"),
        (" , ", "needs at least one algorithm"),
    ],
)
def test_digest_algorithms_must_be_ones_the_hss_can_verify(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_configs(args_for("--digest-algorithms", value))


def test_digest_algorithms_accept_sess_variants() -> None:
    (config,) = load_configs(args_for("--digest-algorithms", "SHA-256-sess,MD5"))
    assert config.digest_algorithms == ("SHA-256-sess", "MD5")


KNOBS = """
[network]
domain = "net-b.test"
auth = "none"

[network.registrar]
default_expires = 1800
max_contacts = 3
flow_timer = 25

[network.presence]
max_expires = 7200
min_notify_interval = 5
max_publications = 8
max_subscriptions = 500

[[node]]
name = "ps1"
listen = ["udp:127.0.2.11:5060"]
"""


def test_registrar_and_presence_tables_reach_the_node(tmp_path: Path) -> None:
    path = tmp_path / "net-b.toml"
    path.write_text(KNOBS)
    (config,) = load_configs(args_for(str(path), "--data", str(tmp_path / "data")))
    assert (config.registrar.default_expires, config.registrar.max_contacts) == (1800, 3)
    assert config.registrar.max_expires == 86400  # not set: the default
    assert config.presence is not None
    assert (config.presence.max_expires, config.presence.min_notify_interval) == (7200, 5)
    node = Node(config)  # not started: no socket
    try:
        assert node.registrar.policy.max_contacts == 3
        assert node.registrar.policy.flow_timer == 25
        assert isinstance(node.presence, PresenceRole)
        assert node.presence.server.settings.min_notify_interval == 5
        assert node.presence.server.compositor.max_publications == 8
        assert node.presence.server.settings.max_subscriptions == 500
    finally:
        node.close()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[network.presence]\nmin_notify_interval = -1", "min_notify_interval must be"),
        ("[network.presence]\nmax_expires = 30", "min_expires <= default_expires <= max"),
        ("[network.registrar]\nmax_contacts = 0", "max_contacts must be a whole number"),
        ("[network.registrar]\nflow_timer = -1", "flow_timer must be a whole number >= 0"),
        ("[network.registrar]\nflow_timer = 300", "flow_timer must be below the 300 s"),
        ("[network.presence]\nmax_publications = 0", "max_publications must be a whole number"),
        ("[network.presence]\nmax_subscriptions = 0", "max_subscriptions must be a whole number"),
        ("[network.registrar]\nmax_contacts = 2.5", "max_contacts must be a whole number"),
        ("[network.registrar]\nmin_notify_interval = 5", "unknown min_notify_interval"),
        ("[network]\npresence = 5", "must be a table"),
    ],
)
def test_bad_registrar_and_presence_tables_are_one_clear_error(
    tmp_path: Path, table: str, message: str
) -> None:
    path = tmp_path / "net-b.toml"
    head = '[network]\ndomain = "net-b.test"\n' if not table.startswith("[network]\n") else ""
    path.write_text(f'{head}{table}\n\n[[node]]\nname = "ps1"\n')
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_configs(args_for(str(path)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[network]\ndefault_polcy = "allow"\n[[node]]\nname = "n"\n',
            "unknown key(s) in [network]: default_polcy (did you mean default_policy?)",
        ),
        (
            '[network]\n[[node]]\nname = "n"\nlistn = ["udp:127.0.2.11:5060"]\n',
            "unknown key(s) in [[node]] 'n': listn (did you mean listen?)",
        ),
        ('[network]\n[[node]]\nname = "n"\n[nodes]\nx = 1\n', "unknown key(s) in the file: nodes"),
    ],
)
def test_a_misspelt_key_is_an_error_not_a_default(tmp_path: Path, text: str, message: str) -> None:
    """A typo must not leave a node serving on the default address with the default policy."""
    path = tmp_path / "net.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_configs(args_for(str(path)))


@pytest.mark.parametrize(
    "flags", [("--ca", "certs/ca.pem"), ("--require-client-cert", "--ca", "certs/ca.pem")]
)
def test_tls_options_without_a_certificate_are_an_error_not_ignored(flags: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="need --cert and --key"):
        load_configs(args_for(*flags))


def test_a_udp_address_without_tcp_beside_it_keeps_large_requests_on_udp(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 3261 §18.1.1 moves a request only where the Via stays true with TCP in it."""
    (config,) = load_configs(
        args_for("--data", str(tmp_path), "--udp-mtu", "1300", "--listen", "udp:127.0.2.11:5060",
                 "--listen", "udp:127.0.2.12:5060", "--listen", "tcp:127.0.2.12:5060")
    )  # fmt: skip
    node = Node(config)
    try:
        with caplog.at_level("WARNING", logger="presence_sip.node"):
            node.route_for(config.listen)
    finally:
        node.close()
    assert caplog.messages == [
        "requests over 1300 bytes from udp:127.0.2.11:5060 stay on UDP: no TCP listener at "
        "that address"
    ]
    moving = node.endpoint.transactions
    assert moving._tcp_sent_bys == frozenset({("127.0.2.12", 5060)})


def test_log_level_is_the_files_unless_the_flag_names_one_and_a_network_key_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "net-b.toml"
    path.write_text(CONFIG.replace('auth = "none"', 'auth = "none"\nlog_level = "debug"'))
    assert {c.log_level for c in load_configs(args_for(str(path)))} == {"DEBUG"}
    assert load_configs(args_for(str(path), "--log-level", "ERROR"))[0].log_level == "ERROR"
    path.write_text(CONFIG)
    assert load_configs(args_for(str(path)))[0].log_level == "INFO"
    path.write_text(CONFIG.replace('auth = "none"', 'auth = "none"\nlog_level = "LOUD"'))
    with pytest.raises(ConfigError, match="log_level must be one of DEBUG, INFO, WARNING, ERROR"):
        load_configs(args_for(str(path)))
    path.write_text(CONFIG.replace('name = "ps2"', 'name = "ps2"\nlog_level = "DEBUG"'))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[\[node\]\] 'ps2': log_level"):
        load_configs(args_for(str(path)))
