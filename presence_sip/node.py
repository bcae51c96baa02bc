"""One node: storage + sans-IO endpoint + roles + asyncio driver, from a :class:`NodeConfig`.

A role is configuration over the same core: ``registrar`` serves REGISTER, ``presence`` serves
PUBLISH/SUBSCRIBE for the node's domain; later waves add ``gateway`` and ``watcher``.

Signals (:meth:`Node.serve_forever`): SIGINT/SIGTERM stop the node cleanly, SIGUSR1 logs its
status, SIGHUP reads the config file again (:meth:`Node.reconfigure`: the settings a request is
checked against change at once) and its TLS files (:meth:`Node.reload_tls`), so a changed limit
or a rotated certificate is taken without a restart, and a hang-up of the terminal it was
started from does not stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from presence_sip import native
from presence_sip.auth.algorithms import DigestAlgorithm
from presence_sip.auth.digest import DigestAuthenticator
from presence_sip.auth.guard import RequestGuard
from presence_sip.auth.throttle import auth_throttle_for
from presence_sip.config import Limits, Timers
from presence_sip.config_changes import ConfigChange, config_changes, live_config
from presence_sip.endpoint import Endpoint
from presence_sip.ids import RandomIdSource
from presence_sip.proxy.forward import LocalIdentity
from presence_sip.proxy.proxy import Proxy
from presence_sip.proxy.routing import NextHop, RouteTable
from presence_sip.registrar.registrar import Registrar, RegistrarPolicy
from presence_sip.registrar.role import RegistrarRole
from presence_sip.runtime.clock import SteadyWallClock
from presence_sip.sip.errors import ConfigError, StoreError
from presence_sip.status import NodeStatus, responses_by_class
from presence_sip.storage.checkpoint import Checkpointer
from presence_sip.storage.database import (
    database_path,
    get_setting,
    open_network_database,
    set_setting,
    transaction,
)
from presence_sip.storage.group_commit import SPARE_INTERVAL, GroupCommit
from presence_sip.storage.node_lock import NodeLock
from presence_sip.storage.sqlite_bindings import SqliteBindingStore
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore
from presence_sip.transport.driver import Driver
from presence_sip.transport.listen import ListenSpec
from presence_sip.transport.tls import TlsContexts, certificate_warnings, load_contexts

if TYPE_CHECKING:  # the presence modules (and lxml) load only for a node with that role
    from presence_sip.presence.watchers import PresenceSettings

log = logging.getLogger(__name__)

answers = logging.getLogger("presence_sip.signals")
"""What a node answers to a signal an operator sent (the SIGUSR1 status, the SIGHUP reload's
result): INFO lines shown whatever ``--log-level`` says, since they were asked for (the
new-user audit found nothing printed at WARNING; logging them at the node's level instead made
a status line an ERROR under ``--log-level ERROR``, review of 2026-11-27)."""
answers.setLevel(logging.INFO)

ROLES = frozenset({"registrar", "presence"})


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Certificates of a node (PEM paths)."""

    cert: str
    key: str
    ca: str | None = None
    require_client_cert: bool = False


DEFAULT_SERVER_HEADER = "presence-sip"
"""The Server header of a node's responses: the product, no version (Kamailio's default
``server_header`` gives its version and platform, which scanners such as SIPVicious svmap
read)."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything one node needs; built by ``presence-sip serve`` from flags or a TOML file."""

    name: str = "node"
    domain: str = "example.test"
    """The network domain this node serves (also the digest realm)."""
    aliases: tuple[str, ...] = ()
    """More host names / addresses accepted as "ours" in Request-URIs."""
    listen: tuple[ListenSpec, ...] = ()
    data_dir: str = "data"
    roles: frozenset[str] = ROLES
    auth: str = "digest"
    """``digest`` (challenge REGISTER/SUBSCRIBE/PUBLISH) or ``none`` (lab use, benchmarks)."""
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    """Digest challenges offered, strongest first (RFC 8760 §2.4).  Some softphones (baresip
    1.0) read only the first challenge and know only MD5: list MD5 first or alone for them."""
    default_policy: str = "confirm"
    """Authorization for a watcher with no rule: ``confirm``, ``allow`` or ``block``."""
    tls: TlsSettings | None = None
    timers: Timers = field(default_factory=Timers)
    limits: Limits = field(default_factory=Limits)
    registrar: RegistrarPolicy = field(default_factory=RegistrarPolicy)
    presence: PresenceSettings | None = None
    """Subscription and publication limits (None: the defaults of :class:`PresenceSettings`)."""
    routes: dict[str, tuple[NextHop, ...]] = field(default_factory=dict)
    """Static next hops per foreign domain (SRV-like); nothing else is ever forwarded."""
    record_route: bool = True
    """Record-Route forwarded SUBSCRIBEs so in-dialog requests come back through us."""
    server_header: str = DEFAULT_SERVER_HEADER
    """The Server header of the node's responses; "" leaves it out."""
    metrics_listen: tuple[str, int] | None = None
    """Where ``serve`` answers ``GET /metrics`` (Prometheus) for the nodes of its process that
    name this address (``runtime/metrics_http.py``); None: nowhere."""
    log_level: str = "INFO"
    """The level ``serve`` logs at: the process's (``[network] log_level``, ``--log-level``
    over it), the same for every node of a file; a reload sets it anew (:class:`Reloads`)."""

    def __post_init__(self) -> None:
        unknown = self.roles - ROLES
        if unknown:
            raise ConfigError(f"unknown role(s): {', '.join(sorted(unknown))}")
        if self.auth not in ("digest", "none"):
            raise ConfigError(f"auth (--auth) must be digest or none, not {self.auth!r}")
        if self.default_policy not in ("confirm", "allow", "block"):
            raise ConfigError(
                "default policy (--default-policy, default_policy) must be confirm, allow or"
                f" block, not {self.default_policy!r}"
            )
        if any(spec.transport == "tls" for spec in self.listen) and self.tls is None:
            raise ConfigError("a tls: listener needs --cert and --key")


class Node:
    """A running node; ``await start()``, then ``await stop()`` (or ``serve_forever``)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.conn: sqlite3.Connection = open_network_database(config.data_dir)
        try:
            self.lock = NodeLock(config.data_dir, config.name)
        except StoreError:
            self.conn.close()
            raise
        try:
            self._build(config)
        except BaseException:
            self._abandon()
            raise

    def _build(self, config: NodeConfig) -> None:
        try:
            self.hss = SqliteSubscriberStore(self.conn, domain=config.domain)
        except ConfigError as exc:
            raise ConfigError(f"data directory {config.data_dir}: {exc}") from None
        self.clock = SteadyWallClock()
        now = self.clock()
        self.built_at = now
        self.endpoint = Endpoint(
            ids=RandomIdSource(),
            timers=config.timers,
            limits=config.limits,
            user_agent=config.server_header,
            # RFC 5626 §6: a registrar that keys bindings by flow accepts Require: outbound.
            supported=("path", "outbound") if "registrar" in config.roles else ("path",),
        )
        self.domains = frozenset(
            {
                config.domain.lower(),
                *(a.lower() for a in config.aliases),
                *(s.host for s in config.listen),
            }
        )
        self.guard = RequestGuard(
            self._authenticator(),
            self._ha1,
            hosts=self.domains,
            throttle=auth_throttle_for(config.limits),
        )
        # Issue 8: row changes leave the request path and are committed together (group commit),
        # on a thread with a connection of its own.
        self.commits = GroupCommit(
            self.conn, spare_interval=SPARE_INTERVAL, path=database_path(config.data_dir)
        )
        self.endpoint.cannot_store = self.commits.cannot_store
        self.registrar = Registrar(
            SqliteBindingStore(
                self.conn, self.commits, node=config.name, claim="registrar" in config.roles
            ),
            policy=config.registrar,
            now=now,
        )
        self.presence: object | None = None
        self.proxy: Proxy | None = None
        """The router, once :meth:`route_for` knows the node's addresses."""
        self._routed: tuple[ListenSpec, ...] = ()
        if "registrar" in config.roles:
            role = RegistrarRole(self.registrar, self.guard, self.hss, self.domains, now=now)
            self.endpoint.register("REGISTER", role.handle)
            self.endpoint.add_role(self.registrar)
            self.endpoint.add_role(role)
        if "presence" in config.roles:
            self._add_presence(now)
        self.endpoint.add_role(self.clock)  # (reports steps of the system clock)
        self.endpoint.add_role(self.commits)  # last: commits what the other timers changed
        self.driver = Driver(
            self.endpoint,
            limits=config.limits,
            clock=self.clock,  # stored expiries are wall-clock; timers must not jump with it
        )
        self._report_strays(config.limits)
        if config.tls is not None:
            contexts, warnings = load_tls(config.tls)
            for warning in warnings:
                log.warning("%s", warning)
            self.driver.use_tls(contexts)
        self.driver.tls_names = route_tls_names(config.routes)
        # Last (nothing after it can fail): WAL checkpoints leave the loop's thread.
        self.checkpoints = Checkpointer(self.conn, database_path(config.data_dir))

    def _authenticator(self) -> DigestAuthenticator | None:
        if self.config.auth == "none":
            return None
        algorithms = []
        for name in self.config.digest_algorithms:
            algorithm = DigestAlgorithm.from_token(name)
            if algorithm is None:
                raise ConfigError(f"unknown digest algorithm {name!r}")
            algorithms.append(algorithm)
        return DigestAuthenticator(
            self.config.domain, self._secret(), algorithms=algorithms, state_since=self.clock()
        )

    def _secret(self) -> bytes:
        """Nonce HMAC key shared by the nodes of a network (kept in the database)."""
        stored = get_setting(self.conn, "nonce_secret")
        if stored is None:
            stored = secrets.token_hex(32)
            with transaction(self.conn):
                set_setting(self.conn, "nonce_secret", stored)
        return bytes.fromhex(stored)

    def _ha1(self, username: str, algorithm: DigestAlgorithm) -> str | None:
        return self.hss.get_ha1(username, algorithm.base.value)

    def _add_presence(self, now: float) -> None:
        from presence_sip.presence.role import PresenceRole
        from presence_sip.storage.sqlite_presence import SqlitePresenceStore

        role = PresenceRole(
            endpoint=self.endpoint,
            store=SqlitePresenceStore(self.conn, self.commits, node=self.config.name),
            hss=self.hss,
            registrar=self.registrar,
            guard=self.guard,
            domains=self.domains,
            default_policy=self.config.default_policy,
            settings=self.config.presence,
            now=now,
        )
        self.presence = role
        self.registrar.listeners.append(role.registration_changed)
        self.endpoint.add_role(role)

    @property
    def local_addresses(self) -> list[ListenSpec]:
        return list(self.driver.local_addresses)

    async def start(self) -> None:
        await self.driver.start(self.config.listen)
        self.route_for(self.driver.local_addresses)
        if self.config.auth == "none":
            log.warning("authentication is OFF (--auth none): lab use only")
        log.info(
            "%s serving domain %s on a %s", self.config.name, self.config.domain, native.describe()
        )
        stale = native.stale_modules()
        if stale:
            log.warning(
                "compiled modules older than their source (rebuild: make venv): %s",
                ", ".join(stale),
            )

    def route_for(self, addresses: Sequence[ListenSpec]) -> None:
        """Answer as the node listening on ``addresses`` (bound: no port 0) and install the
        router: what :meth:`start` does once the sockets are open, and all a sans-IO harness
        (profile, fuzzer) needs to drive :attr:`endpoint` without them."""
        self._routed = tuple(addresses)
        for spec in addresses:
            self.endpoint.addresses.setdefault(spec.transport, (spec.host, spec.port))
        self._move_large_requests(addresses)
        identity = LocalIdentity(
            self.domains | {spec.host for spec in addresses},
            frozenset((spec.host, spec.port) for spec in addresses),
        )
        self.proxy = Proxy(
            self.endpoint,
            identity,
            RouteTable(self.config.routes),
            record_route=self.config.record_route,
        )
        self.endpoint.router = self.proxy

    def status(self) -> NodeStatus:
        """What the node holds and has done since start (SIGUSR1 logs :meth:`NodeStatus.line`)."""
        now = self.clock()
        endpoint = self.endpoint
        stats = endpoint.stats
        transactions = endpoint.transactions
        server = getattr(self.presence, "server", None)
        throttle = self.guard.throttle
        flood = self.driver.flood
        return NodeStatus(
            name=self.config.name,
            uptime=now - self.built_at,
            aors=self.registrar.aor_count,
            bindings=self.registrar.binding_count(),
            subscriptions=None if server is None else len(server.subscriptions),
            publications=None if server is None else len(server.compositor),
            publications_ended=None if server is None else server.compositor.evicted,
            subscriptions_refused=None if server is None else server.subscriptions_refused,
            transactions=len(transactions),
            connections=self.driver.connection_count(),
            received=stats.received,
            responses_sent=stats.responses_sent,
            by_class=responses_by_class(stats.by_status),
            requests_sent=stats.requests_sent,
            timeouts=transactions.stats["timeouts"],
            transport_errors=transactions.stats["transport_errors"],
            malformed=stats.malformed_answered,
            retransmitted=transactions.stats["requests_retransmitted"],
            refused_for_load=transactions.stats["overload_rejected"],
            moved_to_tcp=transactions.stats["requests_moved_to_tcp"],
            auth_failed=self.guard.failures,
            auth_blocked=0 if throttle is None else throttle.blocked_requests,
            flood_dropped=None if flood is None else flood.dropped,
            source_refused=0 if flood is None else flood.refused_connections,
            tls_failed=self.driver.handshakes.failures,
            keepalives=stats.keepalives + stats.stun_answered,
            stun_answered=stats.stun_answered,
            storage_ok=not self.commits.cannot_store(now),
        )

    def _move_large_requests(self, addresses: Sequence[ListenSpec]) -> None:
        """RFC 3261 §18.1.1 for requests sent from a UDP address where TCP is taken too."""
        mtu = self.config.limits.udp_mtu
        tcp = frozenset((s.host, s.port) for s in addresses if s.transport == "tcp")
        self.endpoint.transactions.move_large_requests(mtu, tcp)
        alone = [str(s) for s in addresses if s.transport == "udp" and (s.host, s.port) not in tcp]
        if mtu and alone:
            log.warning(
                "requests over %d bytes from %s stay on UDP: no TCP listener at that address",
                mtu,
                ", ".join(alone),
            )

    def reconfigure(self, new: NodeConfig) -> list[ConfigChange]:
        """A reload (SIGHUP) with ``new`` read from the config file again: what differs from the
        configuration in use, the settings the node takes at once applied now
        (:mod:`presence_sip.config_changes`), the others left for its next start.  Requests
        under way finish as they began; bindings, subscriptions and publications keep the
        lifetimes they were given; a block by the auth or flood guard keeps its end.  The TLS
        files named are read by the :meth:`reload_tls` that follows."""
        changes = config_changes(self.config, new)
        if any(change.live for change in changes):
            self.config = config = live_config(self.config, new)
            self._apply_live(config)
        return changes

    def _report_strays(self, limits: Limits) -> None:
        """Stray responses count as requests while the flood guard counts requests
        (``transport.flood``); otherwise the endpoint drops them without a word."""
        self.endpoint.report_stray = self.driver.stray_response if limits.flood_requests else None

    def _apply_live(self, config: NodeConfig) -> None:
        now = self.clock()
        limits = config.limits
        self.endpoint.user_agent = config.server_header
        self.endpoint.transactions.set_max_transactions(limits.max_transactions)
        self.registrar.policy = config.registrar
        self.guard.throttle = auth_throttle_for(limits, self.guard.throttle)
        self.driver.use_flood_limits(limits)
        self._report_strays(limits)
        self.driver.tls_names = route_tls_names(config.routes)
        if self.proxy is not None:  # (routed: see route_for)
            self.proxy.routes = RouteTable(config.routes)
            self._move_large_requests(self._routed)
        reconfigure = getattr(self.presence, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(config.presence, config.default_policy, now)

    async def reload_tls(self) -> None:
        """SIGHUP: read the TLS files again, on a thread, and give the connections accepted and
        opened from now on the contexts they make; connections up keep theirs.  All or
        nothing: when a file fails, every context in use is kept and one ERROR line says which
        file and why; else one line of :data:`answers` names the certificate."""
        name, tls = self.config.name, self.config.tls
        if tls is None:
            answers.info("%s: SIGHUP: no TLS certificates to reload", name)
            return
        try:
            contexts, warnings = await asyncio.to_thread(load_tls, tls)
        except ConfigError as exc:
            log.error("%s: TLS reload failed, the certificates in use are kept: %s", name, exc)
            return
        self.driver.use_tls(contexts)
        answers.info("%s: TLS reloaded: new connections get %s", name, contexts.certificate)
        for warning in warnings:
            log.warning("%s: %s", name, warning)

    async def stop(self) -> None:
        """Send the NOTIFYs still waiting (:meth:`PresenceServer.send_waiting`), then close
        every socket and the stores."""
        server = getattr(self.presence, "server", None)
        if server is not None:
            sent = server.send_waiting(self.clock())
            if sent:
                log.info("%s: %d NOTIFYs that waited sent before stopping", self.config.name, sent)
                self.driver.transmit()
        await self.driver.stop()
        self.close()

    def close(self) -> None:
        """Write what the stores still hold back (group commit) and close the database."""
        close = getattr(self.presence, "close", None)
        if close is not None:
            close()
        try:
            self.commits.close()
        finally:
            self.checkpoints.close()
            self._close_database()

    def _close_database(self) -> None:
        """Close the database and give the node's lock back."""
        self.conn.close()
        self.lock.release()

    def _abandon(self) -> None:
        """Start-up failed part way: stop what was started, then :meth:`_close_database`."""
        for part in ("commits", "checkpoints"):
            started = getattr(self, part, None)
            if started is not None:
                with contextlib.suppress(Exception):
                    started.close()
        self._close_database()

    async def serve_forever(
        self,
        alongside: Sequence[Node] = (),
        read_configs: Callable[[], Sequence[NodeConfig]] | None = None,
    ) -> None:
        """Run until SIGINT/SIGTERM (one signal is enough), then stop cleanly; SIGUSR1 logs the
        status of this node and of the nodes ``alongside`` it in the process, SIGHUP reloads
        them (:class:`Reloads`: the configuration ``read_configs`` reads again, when there is a
        file to read, then their TLS files; as nginx and Postfix reload on it).

        SIGHUP does not stop the node: one started from a terminal whose session ends must not
        die without its clean stop (the group commit's last window would be lost)."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        reloads = Reloads([self, *alongside], read_configs)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        loop.add_signal_handler(signal.SIGHUP, reloads.hangup)
        loop.add_signal_handler(signal.SIGUSR1, _log_statuses, [self, *alongside])
        await self.start()
        try:
            await stopping.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            await reloads.close()
            log.info("%s stopping", self.config.name)
            await self.stop()


class Reloads:
    """SIGHUP for the nodes of a process: the configuration read again by ``read_configs``
    (None: the nodes run from flags alone, nothing to read), its ``log_level`` set for the
    process and the rest taken by each node (:meth:`Node.reconfigure`), then each node's TLS
    files (:meth:`Node.reload_tls`); one reload at a time.  A SIGHUP during a reload asks for
    one more after it (the files may have changed since that one read them); more SIGHUPs
    meanwhile add nothing.

    A configuration that does not load (``serve --check`` would refuse it) changes nothing: one
    ERROR line says why, and the TLS files are still read again from the paths in use (a
    certificate rotation does not wait for the file to be fixed)."""

    def __init__(
        self,
        nodes: Sequence[Node],
        read_configs: Callable[[], Sequence[NodeConfig]] | None = None,
    ) -> None:
        self._nodes = list(nodes)
        self._read_configs = read_configs
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def hangup(self) -> None:
        """A SIGHUP (the signal handler's callback, on the event loop)."""
        if self._task is not None:
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._reload())
        self._task.add_done_callback(_reload_done)

    async def _reload(self) -> None:
        try:
            again = True
            while again:
                self._again = False
                await self._reconfigure()
                for node in self._nodes:
                    await node.reload_tls()
                again = self._again
        finally:
            self._task = None

    async def _reconfigure(self) -> None:
        if self._read_configs is None:
            return
        try:
            configs = await asyncio.to_thread(self._read_configs)
        except ConfigError as exc:
            log.error("configuration reload failed, the settings in use are kept: %s", exc)
            return
        if configs:
            _set_log_level(configs[0].log_level)
        read = {config.name: config for config in configs}
        for node in self._nodes:
            name = node.config.name
            new = read.pop(name, None)
            if new is None:
                log.warning("%s: no longer in the configuration: it serves on until stopped", name)
            else:
                _report_changes(name, node.reconfigure(new))
        for name in read:
            log.warning("%s: new in the configuration: it runs from the next start", name)

    async def close(self) -> None:
        """Stop a reload under way (the node is stopping): nothing more is swapped."""
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _set_log_level(level: str) -> None:
    """The process's log level (``log_level``), with one line when it changes."""
    root = logging.getLogger()
    before = logging.getLevelName(root.level)
    if before != level:
        root.setLevel(level)
        answers.info("log level %s -> %s", before, level)


def _report_changes(name: str, changes: Sequence[ConfigChange]) -> None:
    """One line for what a node took (or that nothing changed), one WARNING line for what
    waits for its next start."""
    taken = [str(change) for change in changes if change.live]
    waiting = [str(change) for change in changes if not change.live]
    if taken or not waiting:
        answers.info("%s: configuration reloaded: %s", name, "; ".join(taken) or "no change")
    if waiting:
        log.warning(
            "%s: configuration reloaded: %s: takes a restart, the values in use are kept",
            name,
            "; ".join(waiting),
        )


def _log_statuses(nodes: Sequence[Node]) -> None:
    """SIGUSR1: one line of :meth:`Node.status` per node (``kill -USR1 PID``) in
    :data:`answers`."""
    for node in nodes:
        try:
            answers.info("%s", node.status().line())
        except Exception:  # a figure that cannot be read must not stop the node
            log.exception("cannot report the status of %s", node.config.name)


def _reload_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("reload failed (a bug)", exc_info=error)


def route_tls_names(
    routes: dict[str, tuple[NextHop, ...]],
) -> dict[tuple[str, int], frozenset[str]]:
    """The domains each TLS next hop of ``routes`` must stand for (the driver's ``tls_names``):
    those of every route naming it."""
    names: dict[tuple[str, int], frozenset[str]] = {}
    for domain, hops in routes.items():
        for hop in hops:
            if hop.transport == "tls":
                names[(hop.host, hop.port)] = names.get((hop.host, hop.port), frozenset()) | {
                    domain
                }
    return names


def load_tls(tls: TlsSettings) -> tuple[TlsContexts, list[str]]:
    """The contexts of the node's TLS files and what to warn about its certificate (an expired
    one, one about to expire); blocks while it reads them, :class:`ConfigError` if one fails."""
    contexts = load_contexts(tls.cert, tls.key, tls.ca, require_client_cert=tls.require_client_cert)
    return contexts, certificate_warnings(tls.cert, time.time())
