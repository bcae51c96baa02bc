"""What a running node holds and has done, in one log line (``kill -USR1 PID``).

Kamailio answers ``kamcmd stats.get_statistics all``; a node of ours logs the same kind of
figures when it gets SIGUSR1 (as dnsmasq and squid do), so an operator can see at once whether it
holds the registrations and subscriptions expected, answers errors, times out or is refusing
load, without a management port to secure.  The figures are read from the parts' own counters:
nothing is counted for this on the request path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
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
    tls_failed: int = 0
    """Inbound TLS handshakes that failed or timed out (a peer without a trusted certificate,
    plain SIP to a TLS port, a scanner)."""
    keepalives: int = 0
    """UDP keep-alives taken (RFC 5626): CRLF datagrams, and STUN Binding requests answered."""
    stun_answered: int = 0
    """Of those, the STUN Binding requests answered (RFC 5626 §8; outbound UDP flows)."""
    storage_ok: bool = True
    publications_ended: int | None = None
    """Publications ended to make room under ``max_publications`` (None: no presence role)."""
    subscriptions_refused: int | None = None
    """SUBSCRIBEs refused for ``max_subscriptions`` (None: no presence role)."""

    def line(self) -> str:
        held = [f"{self.aors} AORs ({self.bindings} bindings)"]
        if self.subscriptions is not None:
            refused = self.subscriptions_refused
            held.append(
                f"{self.subscriptions} subscriptions"
                + (f" ({refused} refused for max_subscriptions)" if refused else "")
            )
            ended = self.publications_ended
            held.append(
                f"{self.publications} publications"
                + (f" ({ended} ended for max_publications)" if ended else "")
            )
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
            f"{self.tls_failed} failed TLS handshakes",
            f"{self.keepalives} UDP keep-alives"
            + (f" ({self.stun_answered} STUN)" if self.stun_answered else ""),
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


METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("uptime_seconds", "gauge", "uptime", "Seconds since the node was built."),
    ("aors", "gauge", "aors", "Addresses of record with bindings."),
    ("bindings", "gauge", "bindings", "Registrar bindings held."),
    ("subscriptions", "gauge", "subscriptions", "Presence subscriptions held."),
    ("subscriptions_refused_total", "counter", "subscriptions_refused",
     "SUBSCRIBEs refused for max_subscriptions."),
    ("publications", "gauge", "publications", "Presence publications held."),
    ("publications_ended_total", "counter", "publications_ended",
     "Publications ended to make room under max_publications."),
    ("transactions", "gauge", "transactions", "Server and client transactions held."),
    ("connections", "gauge", "connections", "TCP/TLS connections held."),
    ("messages_received_total", "counter", "received", "Requests and responses taken in."),
    ("requests_sent_total", "counter", "requests_sent", "Requests sent (NOTIFYs, forwarded)."),
    ("timeouts_total", "counter", "timeouts", "Requests sent that timed out."),
    ("transport_errors_total", "counter", "transport_errors",
     "Requests sent whose connection could not be made or failed."),
    ("malformed_total", "counter", "malformed", "Malformed requests answered."),
    ("retransmissions_total", "counter", "retransmitted", "Requests retransmitted."),
    ("refused_for_load_total", "counter", "refused_for_load",
     "Requests refused with 503 for a full transaction table."),
    ("moved_to_tcp_total", "counter", "moved_to_tcp",
     "Requests moved from UDP to TCP for their size (udp_mtu)."),
    ("auth_failures_total", "counter", "auth_failed", "Failed digest authentications."),
    ("auth_blocked_total", "counter", "auth_blocked",
     "Requests refused while their source was blocked for failed authentications."),
    ("tls_handshakes_failed_total", "counter", "tls_failed",
     "Inbound TLS handshakes that failed or timed out."),
    ("udp_keepalives_total", "counter", "keepalives",
     "UDP keep-alives taken: CRLF datagrams and STUN Binding requests answered (RFC 5626)."),
    ("stun_answered_total", "counter", "stun_answered",
     "STUN Binding requests answered on a SIP UDP port (RFC 5626 keep-alives)."),
)  # fmt: skip
"""(name after ``presence_sip_``, type, :class:`NodeStatus` field, help) of each figure
:meth:`NodeStatus.metrics` writes besides the per-class responses, the flood guard's and the
storage's."""


def metrics_text(statuses: Iterable[NodeStatus]) -> str:
    """The Prometheus text exposition (format 0.0.4) of the nodes' figures: a sample per node
    of each metric, labelled with the node's name (a metric no node has is left out)."""
    lines: list[str] = []
    for name, kind, text, samples in _families(list(statuses)):
        if not samples:
            continue
        lines += (f"# HELP presence_sip_{name} {text}", f"# TYPE presence_sip_{name} {kind}")
        lines += (f"presence_sip_{name}{{{labels}}} {_number(v)}" for labels, v in samples)
    return "\n".join(lines) + "\n"


_Samples = list[tuple[str, float]]


def _families(statuses: list[NodeStatus]) -> Iterator[tuple[str, str, str, _Samples]]:
    """(name, type, help, [(labels, value)]) of every metric."""
    nodes = [(f'node="{_label(s.name)}"', s) for s in statuses]
    for name, kind, attribute, text in METRICS:
        samples = [(labels, getattr(s, attribute)) for labels, s in nodes]
        yield name, kind, text, [(labels, v) for labels, v in samples if v is not None]
    by_class = [
        (f'{labels},class="{c}xx"', float(n))
        for labels, s in nodes
        for c, n in sorted(s.by_class.items())
    ]
    yield "responses_sent_total", "counter", "Responses sent, by class.", by_class
    guarded = [(labels, s) for labels, s in nodes if s.flood_dropped is not None]
    yield (
        "flood_dropped_total", "counter",
        "Requests dropped from sources blocked for flooding (the flood guard on).",
        [(labels, float(s.flood_dropped or 0)) for labels, s in guarded],
    )  # fmt: skip
    yield (
        "source_connections_refused_total", "counter",
        "Connections refused for a flood block or max_connections_per_source.",
        [(labels, float(s.source_refused)) for labels, s in guarded],
    )  # fmt: skip
    yield (
        "storage_ok", "gauge", "1 while changes are committed, 0 while commits fail.",
        [(labels, 1.0 if s.storage_ok else 0.0) for labels, s in nodes],
    )  # fmt: skip


def _label(value: str) -> str:
    """A label value as the exposition format escapes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


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


__all__ = ["METRICS", "NodeStatus", "metrics_text", "responses_by_class"]
