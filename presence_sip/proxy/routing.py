"""Static next-hop records (SRV-like, RFC 3263 priority/weight) and URI -> Peer without DNS.

A node never asks system DNS: a host is either an IP literal, or a name configured here
(DESIGN.md: "next hops come from the configuration's static records").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import SipUri, Uri, is_ip


@dataclass(frozen=True, slots=True)
class NextHop:
    """One SRV-like record: where requests for a domain may go."""

    transport: str
    host: str
    """An IP literal."""
    port: int
    priority: int = 10
    """Lower is tried first (RFC 2782)."""
    weight: int = 1
    """Share of traffic among records of equal priority."""

    @property
    def peer(self) -> Peer:
        return Peer(self.transport, self.host, self.port)


def default_port(transport: str) -> int:
    return 5061 if transport == "tls" else 5060


def uri_peer(uri: Uri, default_transport: str = "udp") -> Peer | None:
    """The Peer a SIP URI names directly (IP host), or None when it needs a lookup."""
    if not isinstance(uri, SipUri) or not is_ip(uri.host):
        return None
    transport = uri.transport or ("tls" if uri.scheme == "sips" else default_transport)
    if transport not in ("udp", "tcp", "tls"):
        return None
    port = uri.port if uri.port is not None else default_port(transport)
    return Peer(transport, uri.host.strip("[]"), port)


class RouteTable:
    """Domain -> ordered next hops; ``order`` picks the try order (priority, then weighted)."""

    def __init__(self, records: Mapping[str, Sequence[NextHop]] | None = None) -> None:
        self._records: dict[str, tuple[NextHop, ...]] = {
            domain.lower(): tuple(hops) for domain, hops in (records or {}).items()
        }

    def __contains__(self, domain: object) -> bool:
        return isinstance(domain, str) and domain.lower() in self._records

    def hops(self, domain: str, choose: Callable[[int], int] | None = None) -> list[NextHop]:
        """Next hops for ``domain`` in the order to try them (RFC 2782 §"Usage rules").

        ``choose(total)`` returns an integer in ``[0, total]`` (injected randomness); without it
        the order within a priority is by descending weight, which is deterministic.
        """
        records = self._records.get(domain.lower(), ())
        ordered: list[NextHop] = []
        for priority in sorted({hop.priority for hop in records}):
            ordered.extend(_weighted([h for h in records if h.priority == priority], choose))
        return ordered


def _weighted(hops: list[NextHop], choose: Callable[[int], int] | None) -> Iterable[NextHop]:
    if choose is None:
        return sorted(hops, key=lambda hop: -hop.weight)
    remaining = list(hops)
    out: list[NextHop] = []
    while remaining:
        total = sum(hop.weight for hop in remaining)
        pick = choose(total)
        running = 0
        for index, hop in enumerate(remaining):
            running += hop.weight
            if running >= pick:
                out.append(remaining.pop(index))
                break
        else:
            out.append(remaining.pop())
    return out
