"""What a running node holds and has done, in one log line (``kill -USR1 PID``).

Kamailio answers ``kamcmd stats.get_statistics all``; a node of ours logs the same kind of
figures when it gets SIGUSR1 (as dnsmasq and squid do), so an operator can see at once whether it
holds the registrations and subscriptions expected, answers errors, times out or is refusing
load, without a management port to secure.  The figures are read from the parts' own counters:
nothing is counted for this on the request path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A snapshot of one node; :meth:`line` is what is logged."""

    name: str
    uptime: float
    """Seconds since the node was built."""
    aors: int
    bindings: int
    subscriptions: int | None
    """None without the presence role (and so for publications)."""
    publications: int | None
    transactions: int
    connections: int
    received: int
    """Requests and responses taken in (parsed), since start."""
    responses_sent: int
    by_class: Mapping[int, int] = field(default_factory=dict)
    """Responses sent by class (2 for 2xx ...)."""
    requests_sent: int = 0
    timeouts: int = 0
    transport_errors: int = 0
    """Requests whose connection could not be made or failed (not counted as timed out)."""
    malformed: int = 0
    retransmitted: int = 0
    refused_for_load: int = 0
    moved_to_tcp: int = 0
    auth_failed: int = 0
    """Requests whose digest credentials failed."""
    auth_blocked: int = 0
    """Requests refused (503) while their source was blocked for failed authentications."""
    flood_dropped: int | None = None
    """Requests dropped from sources blocked for flooding (None: the flood guard is off)."""
    source_refused: int = 0
    """Connections refused for a block or ``max_connections_per_source``."""
    storage_ok: bool = True

    def line(self) -> str:
        held = [f"{self.aors} AORs ({self.bindings} bindings)"]
        if self.subscriptions is not None:
            held.append(f"{self.subscriptions} subscriptions")
            held.append(f"{self.publications} publications")
        held.append(f"{self.transactions} transactions")
        held.append(f"{self.connections} connections")
        classes = ", ".join(f"{c}xx {n}" for c, n in sorted(self.by_class.items()))
        done = [
            f"{self.received} messages in",
            f"{self.responses_sent} responses out" + (f" ({classes})" if classes else ""),
            f"{self.requests_sent} requests out",
            f"{self.timeouts} timed out",
            f"{self.transport_errors} unreachable",
            f"{self.malformed} malformed answered",
            f"{self.retransmitted} retransmitted",
            f"{self.refused_for_load} refused for load",
            f"{self.moved_to_tcp} moved to TCP",
            f"{self.auth_failed} failed authentications ({self.auth_blocked} refused blocked)",
        ]
        if self.flood_dropped is not None:
            done.append(
                f"{self.flood_dropped} dropped for flooding "
                f"({self.source_refused} connections refused)"
            )
        storage = "storage ok" if self.storage_ok else "STORAGE FAILING"
        return (
            f"{self.name} status: up {_duration(self.uptime)}; holds {', '.join(held)}; "
            f"since start {', '.join(done)}; {storage}"
        )


def responses_by_class(by_status: Mapping[int, int]) -> dict[int, int]:
    """``{200: 5, 202: 1, 404: 2}`` -> ``{2: 6, 4: 2}``."""
    classes: dict[int, int] = {}
    for status, count in by_status.items():
        classes[status // 100] = classes.get(status // 100, 0) + count
    return classes


def _duration(seconds: float) -> str:
    """``3d04h05m``, ``2h00m``, ``5m07s``."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


__all__ = ["NodeStatus", "responses_by_class"]
