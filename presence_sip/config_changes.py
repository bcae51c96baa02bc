"""What a configuration read again changes for a running node, and which of it the node takes
at once (SIGHUP, ``systemctl reload``): pure functions over two :class:`NodeConfig` values.

Taken at once (``live``): the limits and knobs a request is checked against when it comes —
``default_policy``, ``server_header``, ``udp_mtu``, ``max_transactions``, the ``auth_*`` and
``flood_*`` guards, ``max_connections_per_source``, every key of ``[network.registrar]`` and
``[network.presence]``, the ``[[network.route]]`` next hops, and the TLS files (``cert``,
``key``, ``ca``, ``require_client_cert``).  What the node was built around — its domain,
aliases, listeners, data directory, roles, authentication, digest algorithms and metrics
address — takes a restart: a reload names each such change and leaves it for the next start, as
Kamailio does for everything but its ``cfg`` framework variables and ``*.reload`` RPCs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from presence_sip.config import Limits
from presence_sip.proxy.routing import NextHop

if TYPE_CHECKING:
    from presence_sip.node import NodeConfig


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One setting whose value differs in the file read again."""

    key: str
    """The setting as the config file names it (``[network.presence] max_subscriptions``)."""
    old: str
    """Its value in use, as text."""
    new: str
    """Its value in the file, as text."""
    live: bool
    """Taken at once (True) or at the next start (False)."""

    def __str__(self) -> str:
        return f"{self.key} {self.old} -> {self.new}"


LIVE_FIELDS = ("default_policy", "server_header", "routes", "registrar", "presence")
"""NodeConfig fields a running node takes whole."""

LIVE_LIMITS = (
    "udp_mtu",
    "max_transactions",
    "auth_failures",
    "auth_block",
    "auth_failures_exempt",
    "flood_requests",
    "flood_block",
    "max_connections_per_source",
    "flood_exempt",
    "flood_exempt_peers",
)
""":class:`Limits` fields a running node takes (the rest are not in the config file)."""

RESTART_FIELDS = (
    "domain",
    "aliases",
    "listen",
    "data_dir",
    "roles",
    "auth",
    "digest_algorithms",
    "metrics_listen",
    "record_route",
    "timers",
)
"""NodeConfig fields a node is built around: a change waits for the next start."""

_FILE_KEYS: Mapping[str, str] = {
    "data_dir": "data",
    "auth_block": "auth_block_seconds",
    "flood_block": "flood_block_seconds",
    "routes": "[[network.route]]",
    "flood_exempt_peers": "flood_exempt (the file's nodes and next hops)",
}
"""Config file keys that are not spelt as their field."""

_TLS_KEYS = ("cert", "key", "ca", "require_client_cert")


def config_changes(old: NodeConfig, new: NodeConfig) -> list[ConfigChange]:
    """Every setting of ``new`` that differs from ``old`` (the node's name is never compared:
    it is how the two are matched), in the order the README's config file lists them."""
    return list(_changes(old, new))


def _changes(old: NodeConfig, new: NodeConfig) -> Iterator[ConfigChange]:
    for name in RESTART_FIELDS:
        yield from _differs(name, getattr(old, name), getattr(new, name), live=False)
    yield from _differs("default_policy", old.default_policy, new.default_policy, live=True)
    yield from _differs("server_header", old.server_header, new.server_header, live=True)
    for name in LIVE_LIMITS:
        yield from _differs(name, getattr(old.limits, name), getattr(new.limits, name), True)
    for table in ("registrar", "presence"):
        before, after = _table(old, table), _table(new, table)
        for field in fields(before):
            yield from _differs(
                f"[network.{table}] {field.name}",
                getattr(before, field.name),
                getattr(after, field.name),
                live=True,
            )
    yield from _differs("routes", old.routes, new.routes, live=True)
    yield from _tls_changes(old, new)


def _table(config: NodeConfig, name: str) -> Any:
    value = getattr(config, name)
    if value is None:  # (presence: None stands for the defaults)
        from presence_sip.presence.watchers import PresenceSettings

        return PresenceSettings()
    return value


def _tls_changes(old: NodeConfig, new: NodeConfig) -> Iterator[ConfigChange]:
    if old.tls is None or new.tls is None:  # TLS on or off: listeners and contexts to build
        yield from _differs("cert", old.tls and old.tls.cert, new.tls and new.tls.cert, False)
        return
    for key in _TLS_KEYS:
        yield from _differs(key, getattr(old.tls, key), getattr(new.tls, key), live=True)


def _differs(name: str, old: object, new: object, live: bool) -> Iterator[ConfigChange]:
    if old != new:
        yield ConfigChange(_FILE_KEYS.get(name, name), _text(old), _text(new), live)


def _text(value: object) -> str:
    """A value as an operator wrote it: lists bracketed, next hops as
    ``domain: transport:host:port``."""
    if value is None:
        return "(none)"
    if isinstance(value, dict):
        return _routes_text(value)
    if isinstance(value, (tuple, list, frozenset)):
        items = sorted(value) if isinstance(value, frozenset) else value
        return "[" + ", ".join(str(item) for item in items) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _routes_text(routes: Mapping[str, Sequence[NextHop]]) -> str:
    if not routes:
        return "[]"
    entries = (
        f"{domain}: " + ", ".join(f"{hop.transport}:{hop.host}:{hop.port}" for hop in hops)
        for domain, hops in sorted(routes.items())
    )
    return "[" + "; ".join(entries) + "]"


def live_config(old: NodeConfig, new: NodeConfig) -> NodeConfig:
    """``old`` with what a running node takes of ``new`` (see the module docstring): the
    configuration the node runs with after a reload, the rest waiting for its next start."""
    live: dict[str, Any] = {name: getattr(new, name) for name in LIVE_FIELDS}
    live["limits"] = _live_limits(old.limits, new.limits)
    if old.tls is not None and new.tls is not None:
        live["tls"] = new.tls
    return replace(old, **live)


def _live_limits(old: Limits, new: Limits) -> Limits:
    return replace(old, **{name: getattr(new, name) for name in LIVE_LIMITS})


__all__ = ["ConfigChange", "config_changes", "live_config"]
