"""``presence-sip serve [CONFIG.toml] [--node NAME]``: run the nodes of one network (or one node).

With no config file it runs one all-in-one node (registrar + presence server) for ``--domain``;
the config file (a network and its nodes) is read by :mod:`presence_sip.cli.serve_config`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
from collections.abc import Callable
from functools import partial
from logging.handlers import WatchedFileHandler

from presence_sip.cli.serve_check import check
from presence_sip.cli.serve_config import LOG_LEVELS, load_configs
from presence_sip.config import Limits
from presence_sip.node import DEFAULT_SERVER_HEADER, ROLES, Node, NodeConfig
from presence_sip.runtime.gc_policy import FullCollections, tune_gc
from presence_sip.runtime.metrics_http import MetricsServer
from presence_sip.runtime.open_files import raise_open_files
from presence_sip.sip.errors import ConfigError, TransportError
from presence_sip.status import metrics_text


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
        choices=LOG_LEVELS,
        help="default INFO, or the config file's log_level (which a reload, SIGHUP, sets anew; "
        "this flag keeps the level it names)",
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
        help="check what a start would refuse (the configuration; the TLS files, expired, not "
        "yet valid or not issued by the CA bundle; the data directory and database, as this "
        "user), print what each node would run, and exit (0: fine, 2: the error) without "
        "serving (as kamailio -c, nginx -t)",
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
        level=getattr(logging, configs[0].log_level), format=LOG_FORMAT, handlers=handlers
    )
    with asyncio.Runner(loop_factory=loop_factory(getattr(args, "loop", "auto"))) as runner:
        # SIGHUP reads the file again, with the same flags overriding it (Node.reconfigure).
        read_configs = partial(load_configs, args) if args.config is not None else None
        runner.run(_serve(configs, read_configs))
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


async def _serve(
    configs: list[NodeConfig], read_configs: Callable[[], list[NodeConfig]] | None = None
) -> None:
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
        await _serve_nodes(nodes, read_configs)
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


async def _serve_nodes(
    nodes: list[Node], read_configs: Callable[[], list[NodeConfig]] | None = None
) -> None:
    if len(nodes) == 1:
        await nodes[0].serve_forever(read_configs=read_configs)
        return
    # Several nodes of one network in one process: start all, stop all on the first signal.
    first, *others = nodes
    for node in others:
        await node.start()
    try:
        await first.serve_forever(alongside=others, read_configs=read_configs)
    finally:
        for node in others:
            log.info("%s stopping", node.config.name)
            await node.stop()
