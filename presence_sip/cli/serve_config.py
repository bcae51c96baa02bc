"""The configuration of ``presence-sip serve``: a TOML file describing a network and its nodes,
with command-line flags overriding it, checked into :class:`NodeConfig` values (a misspelt key,
a value of the wrong kind or out of range is a ConfigError naming it).  Without a file, the flags
make one all-in-one node.  A config file::

    [network]
    domain = "net-b.test"
    data = "data/net-b"
    auth = "digest"            # or "none"
    default_policy = "confirm" # or "allow", "block"
    udp_mtu = 0                # 1300: larger requests for UDP destinations go over TCP
    auth_failures = 30         # failed digests from one address in a minute: 503 for
    auth_block_seconds = 300   # this long (no guess answered); 0 turns it off
    auth_failures_exempt = []  # edge proxies / SBCs (everyone's address): never blocked
    flood_requests = 0         # requests from one address at once, or more a second, that get
    flood_block_seconds = 60   # it dropped this long (Kamailio's pike); flood_requests 0: off
    max_connections_per_source = 0  # TCP/TLS connections open from one address; 0: no cap
    flood_exempt = []          # edge proxies / SBCs; this file's nodes and routes are exempt anyway
    metrics_listen = "127.0.0.1:9091"  # GET /metrics (Prometheus) for this process's nodes
    log_level = "INFO"         # the process's (--log-level over it); a reload sets it anew
    server_header = "presence-sip"  # "" leaves the Server header out
    ca = "certs/net-b.test/ca.pem"

    [network.registrar]        # optional: Kamailio's registrar knobs (these are the defaults)
    default_expires = 3600
    min_expires = 60           # shorter: 423 + Min-Expires
    max_expires = 86400        # longer: cut to this
    max_contacts = 10          # per AOR; more: 503
    flow_timer = 0             # RFC 5626 keep-alive seconds for outbound flows; 0: not sent

    [network.presence]         # optional: subscriptions and publications (the defaults)
    default_expires = 3600     # RFC 3856 §6.4
    min_expires = 60
    max_expires = 3600
    min_notify_interval = 0.0  # seconds between state NOTIFYs of one subscription (RFC 3856
                               # §6.10 suggests 5; 0 notifies every change at once)
    max_publications = 64      # per presentity; one more ends the one sent least recently
    max_subscriptions = 10000  # per watcher (address of record), all presentities; more: 403

    [[network.route]]          # static next hops for a foreign domain (SRV-like); no DNS
    domain = "net-a.test"
    transport = "tls"
    host = "127.0.1.2"
    port = 5061
    priority = 10
    weight = 1

    [[node]]
    name = "ps1"
    roles = ["registrar", "presence"]
    listen = ["udp:127.0.2.11:5060", "tcp:127.0.2.11:5060"]
    cert = "certs/net-b.test/ps1.pem"
    key = "certs/net-b.test/ps1.key"
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from presence_sip.auth.algorithms import DigestAlgorithm
from presence_sip.config import Limits
from presence_sip.hss.records import InvalidRecord, normalize_algorithm, normalize_domain
from presence_sip.node import DEFAULT_SERVER_HEADER, ROLES, NodeConfig, TlsSettings
from presence_sip.presence.watchers import PresenceSettings
from presence_sip.proxy.routing import NextHop
from presence_sip.registrar.registrar import RegistrarPolicy
from presence_sip.sip.errors import ConfigError
from presence_sip.sip.uri import is_ip
from presence_sip.transport.listen import ListenSpec

DEFAULT_LISTEN = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")

MAX_UDP_PAYLOAD = 65507
"""The largest IPv4 UDP datagram payload: a ``udp_mtu`` above it would move nothing."""


def load_configs(args: argparse.Namespace) -> list[NodeConfig]:
    """Node configurations from the command line, or from a TOML file with flags overriding."""
    if args.config is None:
        if args.node:
            raise ConfigError("--node needs a config file")
        return [_node_config({}, {}, args)]
    path = Path(args.config)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    network = document.get("network", {})
    nodes = document.get("node", [])
    if not isinstance(network, dict) or not isinstance(nodes, list) or not nodes:
        raise ConfigError(f"{path}: needs a [network] table and at least one [[node]]")
    _check_keys(path, "the file", document, {"network", "node"})
    _check_keys(path, "[network]", network, NETWORK_KEYS)
    _check_types(path, "[network]", network)
    for node in nodes:
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: every [[node]] must be a table")
        _check_keys(path, f"[[node]] {node.get('name', '?')!r}", node, NODE_KEYS)
        _check_types(path, f"[[node]] {node.get('name', '?')!r}", node)
    chosen = [n for n in nodes if not args.node or n.get("name") == args.node]
    if not chosen:
        raise ConfigError(f"{path}: no node named {args.node!r}")
    siblings = _node_hosts(nodes)
    return [_node_config(network, node, args, siblings) for node in chosen]


def _node_hosts(nodes: list[dict[str, Any]]) -> tuple[str, ...]:
    """The addresses the file's nodes listen on (not 0.0.0.0 or ::, which say nothing of where
    their requests come from): a node's requests to another (a gateway's to a presence
    server) are everyone's, never a flood of one source."""
    hosts: dict[str, None] = {}
    for node in nodes:
        for uri in node.get("listen", []):
            host = ListenSpec.parse(uri).host
            if not ipaddress.ip_address(host).is_unspecified:
                hosts[host] = None
    return tuple(hosts)


SHARED_KEYS = frozenset(
    {"domain", "data", "auth", "default_policy", "digest_algorithms", "max_transactions",
     "udp_mtu", "ca", "cert", "key", "aliases", "registrar", "presence", "server_header",
     "auth_failures", "auth_block_seconds", "auth_failures_exempt", "flood_requests",
     "flood_block_seconds", "max_connections_per_source", "flood_exempt", "metrics_listen"}
)  # fmt: skip
"""Keys a ``[network]`` sets for every node and a ``[[node]]`` may set for itself."""
NETWORK_KEYS = SHARED_KEYS | {"route", "log_level"}
NODE_KEYS = SHARED_KEYS | {"name", "roles", "listen", "require_client_cert"}
ROUTE_KEYS = frozenset({"domain", "transport", "host", "port", "priority", "weight"})


_STRING_KEYS = frozenset(
    {"domain", "data", "auth", "default_policy", "ca", "cert", "key", "name", "metrics_listen",
     "log_level"}
)  # fmt: skip

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LIST_KEYS = frozenset({"aliases", "roles", "listen", "auth_failures_exempt", "flood_exempt"})


def _check_types(path: Path, where: str, table: dict[str, Any]) -> None:
    """Values of the kind each key takes: TOML keeps ``domain = 5`` an integer and ``roles =
    "presence"`` a string, which would fail deep inside (a traceback) or be misread (a string
    taken as a list of characters, ``"false"`` as true)."""
    for key, value in table.items():
        if key in _STRING_KEYS:
            ok, kind = isinstance(value, str) and value != "", "a non-empty string"
        elif key in _LIST_KEYS:
            ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
            kind = "a list of non-empty strings"
        elif key == "digest_algorithms":
            ok = isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            )
            kind = "a string or a list of strings"
        elif key == "require_client_cert":
            ok, kind = isinstance(value, bool), "true or false"
        elif key == "server_header":
            ok, kind = isinstance(value, str), "a string"
        else:
            continue  # (tables and numbers are checked where they are read)
        if not ok:
            raise ConfigError(f"{path}: {where} {key} must be {kind}, not {value!r}")


def _check_keys(path: Path, where: str, table: dict[str, Any], known: Iterable[str]) -> None:
    """A misspelt key is an error, not a setting silently left at its default."""
    known = sorted(known)
    unknown = sorted(set(table) - set(known))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
    raise ConfigError(f"{path}: unknown key(s) in {where}: {', '.join(hints)}")


def _node_config(
    network: dict[str, Any],
    node: dict[str, Any],
    args: argparse.Namespace,
    siblings: tuple[str, ...] = (),
) -> NodeConfig:
    def pick(flag: str | None, key: str, default: Any, table: dict[str, Any] = network) -> Any:
        if flag is not None:
            return flag
        return node.get(key, table.get(key, default))

    listen_uris = args.listen or node.get("listen") or list(DEFAULT_LISTEN)
    cert = pick(args.cert, "cert", None)
    key = pick(args.key, "key", None)
    if (cert is None) != (key is None):
        raise ConfigError("--cert and --key go together")
    if cert is None and (args.ca or args.require_client_cert or node.get("require_client_cert")):
        raise ConfigError("--ca and --require-client-cert are for TLS: they need --cert and --key")
    tls = None
    if cert is not None:
        tls = TlsSettings(
            cert=cert,
            key=key,
            ca=pick(args.ca, "ca", None),
            require_client_cert=bool(
                args.require_client_cert or node.get("require_client_cert", False)
            ),
        )
    roles = args.roles.split(",") if args.roles else node.get("roles", sorted(ROLES))
    routes = _routes(network.get("route", []))
    # The next hops of the routes are peers, as the file's own nodes are: a burst of their late
    # answers (strays once our transactions have timed out) must not block a peering network.
    peers = tuple(dict.fromkeys(hop.host for hops in routes.values() for hop in hops))
    return NodeConfig(
        name=node.get("name", "node"),
        domain=_domain(pick(args.domain, "domain", "example.test")),
        aliases=tuple(node.get("aliases", network.get("aliases", ()))),
        listen=tuple(ListenSpec.parse(uri) for uri in listen_uris),
        data_dir=pick(args.data, "data", "data"),
        roles=frozenset(r.strip() for r in roles),
        auth=pick(args.auth, "auth", "digest"),
        digest_algorithms=_algorithms(
            pick(args.digest_algorithms, "digest_algorithms", "SHA-256,MD5")
        ),
        default_policy=pick(args.default_policy, "default_policy", "confirm"),
        tls=tls,
        routes=routes,
        limits=Limits(
            max_transactions=_positive(
                "max_transactions",
                pick(args.max_transactions, "max_transactions", Limits().max_transactions),
            ),
            udp_mtu=_udp_mtu(pick(args.udp_mtu, "udp_mtu", Limits().udp_mtu)),
            auth_failures=_non_negative(
                "auth_failures", pick(args.auth_failures, "auth_failures", Limits().auth_failures)
            ),
            auth_block=_positive(
                "auth_block_seconds",
                pick(None, "auth_block_seconds", int(Limits().auth_block)),
            ),
            auth_failures_exempt=_networks(
                "auth_failures_exempt", pick(None, "auth_failures_exempt", [])
            ),
            flood_requests=_non_negative(
                "flood_requests", pick(args.flood_requests, "flood_requests", 0)
            ),
            flood_block=_positive(
                "flood_block_seconds", pick(None, "flood_block_seconds", int(Limits().flood_block))
            ),
            max_connections_per_source=_non_negative(
                "max_connections_per_source",
                pick(args.max_connections_per_source, "max_connections_per_source", 0),
            ),
            flood_exempt=_networks("flood_exempt", pick(None, "flood_exempt", [])),
            flood_exempt_peers=tuple(dict.fromkeys(siblings + peers)),
        ),
        registrar=_settings(RegistrarPolicy, "registrar", pick(None, "registrar", {})),
        presence=_settings(PresenceSettings, "presence", pick(None, "presence", {})),
        server_header=_server_header(
            pick(args.server_header, "server_header", DEFAULT_SERVER_HEADER)
        ),
        metrics_listen=_metrics_address(pick(args.metrics_listen, "metrics_listen", None)),
        log_level=_log_level(args.log_level or network.get("log_level", "INFO")),
    )


def _log_level(value: str) -> str:
    """``log_level`` (``--log-level`` over it): the process's, so a ``[network]`` key only."""
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return level


def _metrics_address(value: str | None) -> tuple[str, int] | None:
    """``127.0.0.1:9091`` or ``[::1]:9091``: an IP literal and a port (no name resolved)."""
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 <= number <= 65535:
        raise ConfigError(f"metrics_listen must be IP:PORT (e.g. 127.0.0.1:9091), not {value!r}")
    return host, number


_HEADER_TEXT = re.compile(r"[\x20-\x7e]{0,256}")


def _server_header(value: str) -> str:
    """RFC 3261 §20.35 ``Server``: printable ASCII (the TEXT of product tokens and comments),
    one line; "" leaves the header out."""
    text = value.strip()
    if _HEADER_TEXT.fullmatch(text) is None:
        raise ConfigError(
            f"server_header must be at most 256 printable ASCII characters, not {value!r}"
        )
    return text


_S = TypeVar("_S", RegistrarPolicy, PresenceSettings)

_TUNABLE: dict[type, tuple[str, ...]] = {
    RegistrarPolicy: (
        "default_expires",
        "min_expires",
        "max_expires",
        "max_contacts",
        "flow_timer",
    ),
    PresenceSettings: (
        "default_expires",
        "min_expires",
        "max_expires",
        "min_notify_interval",
        "max_publications",
        "max_subscriptions",
    ),
}
"""The fields a config file may set in ``[network.registrar]`` and ``[network.presence]``."""

_MAY_BE_ZERO = frozenset({"min_notify_interval", "flow_timer"})
"""Of those, the ones where 0 means "off"."""


def _settings(cls: type[_S], table_name: str, table: object) -> _S:
    """A settings object from its config table: known keys only, numbers of the right kind,
    and expiries that make sense together."""
    if not isinstance(table, dict):
        raise ConfigError(f"[network.{table_name}] must be a table")
    allowed = _TUNABLE[cls]
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(
            f"[network.{table_name}]: unknown {', '.join(unknown)} (known: {', '.join(allowed)})"
        )
    for key, value in table.items():
        seconds = key == "min_notify_interval"
        kinds = (int, float) if seconds else (int,)
        least = 0 if key in _MAY_BE_ZERO else 1
        if type(value) not in kinds or value < least:
            kind = "a number of seconds >= 0" if seconds else f"a whole number >= {least}"
            raise ConfigError(f"[network.{table_name}] {key} must be {kind}, not {value!r}")
    settings = cls(**table)
    idle = Limits().idle_connection_timeout
    if isinstance(settings, RegistrarPolicy) and settings.flow_timer >= idle:
        raise ConfigError(
            f"[network.{table_name}] flow_timer must be below the {idle:g} s a connection may"
            f" stay idle, not {settings.flow_timer}"
        )
    low, default, high = settings.min_expires, settings.default_expires, settings.max_expires
    if not low <= default <= high:
        raise ConfigError(
            f"[network.{table_name}]: needs min_expires <= default_expires <= max_expires "
            f"({low}, {default}, {high})"
        )
    return settings


def _networks(name: str, values: list[str]) -> tuple[str, ...]:
    """Addresses or networks in CIDR form, each checked (a typo must not exempt nothing)."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not an address or a network") from None
    return tuple(values)


def _non_negative(name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise ConfigError(f"{name} must be a whole number, 0 or more, not {value!r}")
    return value


def _positive(name: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


def _udp_mtu(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_UDP_PAYLOAD:
        raise ConfigError(
            f"udp_mtu must be a whole number of bytes from 0 (off) to {MAX_UDP_PAYLOAD}, "
            f"not {value!r}"
        )
    return value


def _routes(entries: object) -> dict[str, tuple[NextHop, ...]]:
    """``[[network.route]]`` tables (domain, transport, host, port, priority, weight) -> records."""
    if not isinstance(entries, list):
        raise ConfigError("[[network.route]] must be a list of tables")
    routes: dict[str, list[NextHop]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("domain"), str):
            raise ConfigError("every [[network.route]] needs a domain")
        domain = entry["domain"]
        unknown = sorted(set(entry) - ROUTE_KEYS)
        if unknown:
            hints = [
                f"{key} (did you mean {close[0]}?)"
                if (close := difflib.get_close_matches(key, sorted(ROUTE_KEYS), n=1))
                else key
                for key in unknown
            ]
            raise ConfigError(f"route for {domain}: unknown key(s) {', '.join(hints)}")
        transport, host = entry.get("transport", "udp"), entry.get("host")
        if transport not in ("udp", "tcp", "tls") or not isinstance(host, str) or not is_ip(host):
            raise ConfigError(f"route for {domain}: transport udp|tcp|tls and an IP host")
        port = entry.get("port", 5061 if transport == "tls" else 5060)
        priority, weight = entry.get("priority", 10), entry.get("weight", 1)
        for name, value, low, high in (
            ("port", port, 1, 65535),
            ("priority", priority, 0, 65535),
            ("weight", weight, 0, 65535),
        ):
            if type(value) is not int or not low <= value <= high:
                raise ConfigError(
                    f"route for {domain}: {name} must be a whole number {low}-{high}, not {value!r}"
                )
        hop = NextHop(transport=transport, host=host, port=port, priority=priority, weight=weight)
        routes.setdefault(entry["domain"].lower(), []).append(hop)
    return {domain: tuple(hops) for domain, hops in routes.items()}


def _domain(value: str) -> str:
    """The network domain as given, when it is a domain name (the HSS refuses any other: the
    start stopped with a traceback)."""
    try:
        normalize_domain(value)
    except InvalidRecord as exc:
        raise ConfigError(f"domain (--domain): {exc}") from None
    return value


def _algorithms(value: str | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    names = tuple(item.strip() for item in items if item.strip())
    if not names:
        raise ConfigError("--digest-algorithms needs at least one algorithm")
    for name in names:
        algorithm = DigestAlgorithm.from_token(name)
        if algorithm is None:
            raise ConfigError(f"unknown digest algorithm {name!r}")
        if normalize_algorithm(algorithm.base.value) is None:
            # Offered, but never verifiable: every subscriber would be challenged forever.
            raise ConfigError(f"digest algorithm {name!r}: the HSS keeps HA1s for MD5, SHA-256")
    return names
