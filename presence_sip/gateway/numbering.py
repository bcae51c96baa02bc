"""Which network a number belongs to: ported-number overrides, then the longest plan prefix.

DESIGN.md step 3: the watcher application derives B's network from B's MSISDN.  Sans-IO: the plan
is data handed in (from the HSS), lookups are dictionary probes, at most 15 per number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from presence_sip.hss.msisdn import is_msisdn
from presence_sip.hss.records import PlanEntry, PortEntry

__all__ = ["NumberPlan", "Resolution", "candidate_prefixes"]


def candidate_prefixes(msisdn: str) -> list[str]:
    """Every prefix of a canonical *msisdn* that a plan entry could have, longest first.

    ``"+4477"`` -> ``["+4477", "+447", "+44", "+4"]``; empty for a non-canonical number.
    """
    if not is_msisdn(msisdn):
        return []
    return [msisdn[:end] for end in range(len(msisdn), 1, -1)]


@dataclass(frozen=True, slots=True)
class Resolution:
    """The network a number belongs to and why."""

    network: str
    """Network domain (``net-b.test``)."""
    prefix: str | None
    """Plan prefix that matched, ``None`` when a porting override decided."""

    @property
    def ported(self) -> bool:
        """True when a ported-number override decided, not the plan."""
        return self.prefix is None


class NumberPlan:
    """An immutable number plan plus ported-number overrides.

    *prefixes* maps canonical prefixes (``+44``) to network domains; *ported* maps canonical
    MSISDNs to the network they were ported to.
    """

    def __init__(self, prefixes: Mapping[str, str], ported: Mapping[str, str]) -> None:
        self._prefixes = dict(prefixes)
        self._ported = dict(ported)

    @classmethod
    def from_entries(cls, plan: Iterable[PlanEntry], ports: Iterable[PortEntry]) -> NumberPlan:
        """Build from HSS records (``store.plan_list()``, ``store.port_list()``)."""
        return cls(
            {entry.prefix: entry.network for entry in plan},
            {entry.msisdn: entry.network for entry in ports},
        )

    def resolve(self, msisdn: str) -> Resolution | None:
        """Where *msisdn* (canonical) belongs, or ``None`` when no rule covers it."""
        network = self._ported.get(msisdn)
        if network is not None:
            return Resolution(network=network, prefix=None)
        for prefix in candidate_prefixes(msisdn):
            network = self._prefixes.get(prefix)
            if network is not None:
                return Resolution(network=network, prefix=prefix)
        return None

    def network_for(self, msisdn: str) -> str | None:
        """The network domain of *msisdn* (canonical), or ``None``."""
        resolution = self.resolve(msisdn)
        return None if resolution is None else resolution.network

    def networks(self) -> frozenset[str]:
        """Every network domain the plan or the overrides name."""
        return frozenset(self._prefixes.values()) | frozenset(self._ported.values())
