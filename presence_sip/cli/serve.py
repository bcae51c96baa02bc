"""``presence-sip serve [CONFIG.toml] [--node NAME]``: run the nodes of one network (or one node).

With no config file it runs one all-in-one node (registrar + presence server) for ``--domain``.
A config file describes a network and its nodes::

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
    flood_exempt = []          # edge proxies / SBCs; the nodes of this file are exempt anyway
    metrics_listen = "127.0.0.1:9091"  # GET /metrics (Prometheus) for this process's nodes
    server_header = "presence-sip"  # "" leaves the Server header out
    ca = "certs/net-b.test/ca.pem"

    [network.registrar]        # optional: Kamailio's registrar knobs (these are the defaults)
    default_expires = 3600
    min_expires = 60           # shorter: 423 + Min-Expires
    max_expires = 86400        # longer: cut to this
    max_contacts = 10          # per AOR; more: 503

    [network.presence]         # optional: subscriptions and publications (the defaults)
    default_expires = 3600     # RFC 3856 §6.4
    min_expires = 60
    max_expires = 3600
    min_notify_interval = 0.0  # seconds between state NOTIFYs of one subscription (RFC 3856
                               # §6.10 suggests 5; 0 notifies every change at once)

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
import asyncio
import difflib
import importlib
import ipaddress
import logging
import re
import signal
import tomllib
from collections.abc import Callable, Iterable
from functools import partial
from logging.handlers import WatchedFileHandler
from pathlib import Path
from typing import Any, TypeVar

from presence_sip.auth.digest import DigestAlgorithm
from presence_sip.config import Limits
from presence_sip.hss.records import normalize_algorithm
from presence_sip.node import (
    DEFAULT_SERVER_HEADER,
    ROLES,
    Node,
    NodeConfig,
    TlsSettings,
    load_tls,
)
from presence_sip.presence.watchers import PresenceSettings
from presence_sip.proxy.routing import NextHop
from presence_sip.registrar.registrar import RegistrarPolicy
from presence_sip.runtime.gc_policy import FullCollections, tune_gc
from presence_sip.runtime.metrics_http import MetricsServer
from presence_sip.runtime.open_files import raise_open_files
from presence_sip.sip.errors import ConfigError, TransportError
from presence_sip.sip.uri import is_ip
from presence_sip.status import metrics_text
from presence_sip.transport.listen import ListenSpec

DEFAULT_LISTEN = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")

MAX_UDP_PAYLOAD = 65507
"""The largest IPv4 UDP datagram payload: a ``udp_mtu`` above it would move nothing."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve", help="run a presence node (or the nodes of a network config)"
    )
    parser.add_argument(
        "config", nargs="?", help="network configuration (TOML); omit for one all-in-one node"
    )
    parser.add_argument("--node", help="run only this node of the config file")
    parser.add_argument("--domain", help="network domain served (default example.test)")
    parser.add_argument(
        "--listen",
        action="append",
        metavar="URI",
        help="listen address like udp:127.0.0.1:5060, tcp:..., tls:... (repeatable)",
    )
    parser.add_argument("--data", help="data directory holding presence.sqlite (default ./data)")
    parser.add_argument("--cert", help="TLS certificate (PEM) for tls: listeners and outgoing TLS")
    parser.add_argument("--key", help="TLS private key (PEM)")
    parser.add_argument("--ca", help="CA bundle that peer certificates must chain to")
    parser.add_argument(
        "--require-client-cert",
        action="store_true",
        help="TLS: refuse clients without a trusted certificate",
    )
    parser.add_argument(
        "--auth", choices=("digest", "none"), help="digest challenges (default) or none (lab use)"
    )
    parser.add_argument(
        "--digest-algorithms",
        help="challenges offered, comma-separated, e.g. SHA-256,MD5 (default) or MD5",
    )
    parser.add_argument(
        "--default-policy",
        choices=("confirm", "allow", "block"),
        help="authorization for a watcher with no rule (default confirm)",
    )
    parser.add_argument(
        "--roles", help=f"comma-separated roles (default {','.join(sorted(ROLES))})"
    )
    parser.add_argument(
        "--max-transactions",
        type=int,
        metavar="N",
        help=f"server transactions kept at once, the Completed ones waiting for Timer J/K "
        f"included (default {Limits().max_transactions}); when full the one closest to its end "
        "goes first, and only with none left do new requests get 503",
    )
    parser.add_argument(
        "--udp-mtu",
        type=int,
        metavar="BYTES",
        help="a request larger than this for a UDP destination goes over TCP, and over UDP "
        "after all when the connection fails (RFC 3261 §18.1.1 says 1300; default 0: every "
        "request stays on UDP, as Kamailio's udp_mtu)",
    )
    parser.add_argument(
        "--auth-failures",
        type=int,
        metavar="N",
        help=f"failed password checks from one source address (in a burst, or a minute) after "
        f"which its requests needing authentication get 503 for auth_block_seconds "
        f"(default {Limits().auth_failures}, {Limits().auth_block:.0f} s; 0: off)",
    )
    parser.add_argument(
        "--flood-requests",
        type=int,
        metavar="N",
        help=f"requests from one source address in a burst, or more than N a second, after "
        f"which its requests are dropped unanswered and its connections refused for "
        f"flood_block_seconds (Kamailio's pike; default 0: off; "
        f"{Limits().flood_block:.0f} s)",
    )
    parser.add_argument(
        "--max-connections-per-source",
        type=int,
        metavar="N",
        help="TCP/TLS connections open at once from one source address (default 0: no cap but "
        f"max_connections, {Limits().max_connections})",
    )
    parser.add_argument(
        "--server-header",
        metavar="TEXT",
        help=f"the Server header of the node's responses (default {DEFAULT_SERVER_HEADER!r}, "
        "no version); an empty string leaves it out, as Kamailio's server_signature=no",
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop: asyncio, uvloop, or auto (default: uvloop when it can be imported)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="default INFO",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="answer GET /metrics (Prometheus text format) there for the nodes of this process "
        "(an IP address; no authentication: loopback or a management network)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the configuration and the TLS files it names, print what each node would "
        "run, and exit (0: fine, 2: the error) without serving (as kamailio -c, nginx -t)",
    )
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help="log to this file instead of standard error (reopened when logrotate moves it)",
    )
    parser.set_defaults(func=run)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run(args: argparse.Namespace) -> int:
    configs = load_configs(args)  # (a config error goes to the terminal, not to the log file)
    if args.check:
        return check(configs)
    # Until a node's handlers are installed (after its stored state is loaded, ~1 s with
    # 100,000 bindings), SIGHUP and SIGUSR1 would kill the process with their default action:
    # a `systemctl reload` right after a start left the node down, and systemd counts a death
    # by SIGHUP as a clean exit (no restart; operator audit).  Ignored until then.
    for early in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(early, signal.SIG_IGN)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if args.log_file:
        try:
            # Reopened when the file is moved or removed: logrotate needs no copytruncate
            # (which loses the lines written during the copy) and no signal.
            handlers = [WatchedFileHandler(args.log_file, encoding="utf-8")]
        except OSError as exc:
            raise ConfigError(f"cannot open log file {args.log_file}: {exc.strerror}") from None
    logging.basicConfig(
        level=getattr(logging, args.log_level), format=LOG_FORMAT, handlers=handlers
    )
    with asyncio.Runner(loop_factory=loop_factory(getattr(args, "loop", "auto"))) as runner:
        runner.run(_serve(configs))
    return 0


def check(configs: list[NodeConfig]) -> int:
    """``serve --check``: load what a start would load before its sockets and database (the
    config, every TLS file) and say what each node would run; a ConfigError reaches ``main``
    as one line and exit status 2.  The database is not opened (a running node holds it)."""
    for config in configs:
        tls = "no TLS"
        if config.tls is not None:
            contexts, warnings = load_tls(config.tls)
            tls = f"TLS {contexts.certificate}"
            for warning in warnings:
                print(f"{config.name}: warning: {warning}")
        listen = " ".join(str(spec) for spec in config.listen)
        print(
            f"{config.name}: {config.domain}, roles {','.join(sorted(config.roles))}, "
            f"listens {listen}, data {config.data_dir}, auth {config.auth}; {tls}"
        )
    print(f"configuration ok: {len(configs)} node{'' if len(configs) == 1 else 's'}")
    return 0


log = logging.getLogger(__name__)

LOOPS = ("auto", "asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``--loop`` (None: asyncio's default loop).

    uvloop (libuv) is a dependency where it builds (CPython, not Windows): ``auto`` uses it when it
    can be imported, ``uvloop`` insists on it.  Measured in issue 8: 12 % less server CPU per
    PUBLISH than asyncio's selector loop.
    """
    if name == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if name == "uvloop":
            raise ConfigError("--loop uvloop: uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(configs: list[NodeConfig]) -> None:
    connections = sum(config.limits.max_connections for config in configs)
    raise_open_files(connections, opened=connections)  # accepted and opened are capped apart
    nodes = [Node(config) for config in configs]
    tune_gc()  # issue 8: after the stored state is loaded
    full_collections = FullCollections()
    full_collections.start()
    metrics = _metrics_servers(nodes)
    try:
        for server in metrics:
            try:
                await server.start()
            except OSError as exc:
                raise TransportError(
                    f"cannot listen on metrics_listen {server.host}:{server.port}: {exc.strerror}"
                ) from None
        await _serve_nodes(nodes)
    finally:
        for server in metrics:
            await server.stop()
        full_collections.close()


def _metrics_servers(nodes: list[Node]) -> list[MetricsServer]:
    """One server per ``metrics_listen`` address, for the nodes that name it."""
    by_address: dict[tuple[str, int], list[Node]] = {}
    for node in nodes:
        if node.config.metrics_listen is not None:
            by_address.setdefault(node.config.metrics_listen, []).append(node)
    return [
        MetricsServer(host, port, partial(_render_metrics, named))
        for (host, port), named in by_address.items()
    ]


def _render_metrics(nodes: list[Node]) -> str:
    return metrics_text(node.status() for node in nodes)


async def _serve_nodes(nodes: list[Node]) -> None:
    if len(nodes) == 1:
        await nodes[0].serve_forever()
        return
    # Several nodes of one network in one process: start all, stop all on the first signal.
    first, *others = nodes
    for node in others:
        await node.start()
    try:
        await first.serve_forever(alongside=others)
    finally:
        for node in others:
            log.info("%s stopping", node.config.name)
            await node.stop()


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
NETWORK_KEYS = SHARED_KEYS | {"route"}
NODE_KEYS = SHARED_KEYS | {"name", "roles", "listen", "require_client_cert"}
ROUTE_KEYS = frozenset({"domain", "transport", "host", "port", "priority", "weight"})


_STRING_KEYS = frozenset(
    {"domain", "data", "auth", "default_policy", "ca", "cert", "key", "name", "metrics_listen"}
)
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
    return NodeConfig(
        name=node.get("name", "node"),
        domain=pick(args.domain, "domain", "example.test"),
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
        routes=_routes(network.get("route", [])),
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
            flood_exempt=_networks("flood_exempt", pick(None, "flood_exempt", [])) + siblings,
        ),
        registrar=_settings(RegistrarPolicy, "registrar", pick(None, "registrar", {})),
        presence=_settings(PresenceSettings, "presence", pick(None, "presence", {})),
        server_header=_server_header(
            pick(args.server_header, "server_header", DEFAULT_SERVER_HEADER)
        ),
        metrics_listen=_metrics_address(pick(args.metrics_listen, "metrics_listen", None)),
    )


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
    RegistrarPolicy: ("default_expires", "min_expires", "max_expires", "max_contacts"),
    PresenceSettings: ("default_expires", "min_expires", "max_expires", "min_notify_interval"),
}
"""The fields a config file may set in ``[network.registrar]`` and ``[network.presence]``."""


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
        if type(value) not in kinds or value < (0 if seconds else 1):
            kind = "a number of seconds >= 0" if seconds else "a whole number >= 1"
            raise ConfigError(f"[network.{table_name}] {key} must be {kind}, not {value!r}")
    settings = cls(**table)
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
