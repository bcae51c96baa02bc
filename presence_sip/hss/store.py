"""The ``SubscriberStore`` port: what the network's nodes and the CLI ask of the HSS.

Implementations live in ``presence_sip.storage`` (SQLite for nodes and the CLI, memory for unit
tests).  Stores are synchronous: they are local (STYLE.md section 2).  Every write is atomic: a
write that fails validation changes nothing.  Reads that take identities from the wire
(``find_by_identity``, ``get_ha1``, ``rules_for``, ``network_for``) return ``None``/empty for
malformed input instead of raising; writes and operator lookups raise ``InvalidMsisdn`` /
``InvalidRecord`` (both ``ValueError``) or a ``StoreError`` below.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from presence_sip.hss.records import (
    PlanEntry,
    PortEntry,
    PresenceServerRecord,
    Rule,
    RuleAction,
    Subscriber,
    SubscriberField,
)
from presence_sip.sip.errors import StoreError

__all__ = [
    "DuplicateRecord",
    "InsufficientCredit",
    "SubscriberStore",
    "UnknownRecord",
    "last_prefix_in_use",
]


class UnknownRecord(StoreError):
    """The subscriber, rule, prefix, ported number, network or server named does not exist."""


class DuplicateRecord(StoreError):
    """A record with that key already exists (duplicate MSISDN, prefix, server, identity)."""


def last_prefix_in_use(prefix: str, network: str, ported: int) -> str:
    """Why ``plan remove`` refuses a network's last prefix while numbers are ported to it (they
    would point at a network the plan no longer knows, which ``port add`` refuses)."""
    return (
        f"prefix {prefix} is the last of network {network}, to which {ported} number(s) are"
        " ported (remove those ports first)"
    )


class InsufficientCredit(StoreError):
    """A debit larger than the subscriber's credit (DESIGN.md step 2: ``402 Payment Required``)."""


class SubscriberStore(Protocol):
    """Subscriber data of one network (HSS).

    MSISDN arguments accept any form ``normalize_msisdn`` accepts; records carry canonical ones.
    """

    @property
    def domain(self) -> str:
        """The network domain, also the digest realm the HA1s are computed for."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """The changes made inside the ``with`` block are kept all, or none when it raises (a
        bulk import)."""
        ...

    def get_subscriber(self, msisdn: str) -> Subscriber | None:
        """The subscriber with this MSISDN, or ``None``."""
        ...

    def find_by_identity(self, uri_or_user: str) -> Subscriber | None:
        """The subscriber an AOR (``sip:+N@d;user=phone``, ``sip:N@d``, ``tel:+N``), an extra
        identity or a digest username (``+N`` or ``N``) designates; ``None`` if none.

        The domain of a numeric AOR is not checked here: whether a request is for this network
        is the registrar's and proxy's decision.
        """
        ...

    def extra_identities(self) -> dict[str, str]:
        """Every identity that is not a number form (``sip:dave@net-b.test``), canonical form
        (``canonical_identity``) -> MSISDN: what a presence node resolves in memory instead of
        asking the store on its request path."""
        ...

    def add_subscriber(
        self,
        msisdn: str,
        password: str,
        *,
        credit: int = 0,
        presence_server: str | None = None,
        identities: Sequence[str] = (),
    ) -> Subscriber:
        """Create a subscriber (``DuplicateRecord`` if the MSISDN or an identity is taken,
        ``UnknownRecord`` for an unknown presence server)."""
        ...

    def import_subscribers(
        self,
        new: Sequence[Subscriber],
        replacing: Sequence[Subscriber] = (),
        *,
        fields: Collection[SubscriberField] = (),
    ) -> None:
        """A bulk import of records built and checked by the caller (``hss subscriber
        import``): add *new*, and give the existing subscribers *replacing* names their
        password (HA1s) and their values of *fields* (the others are kept, rules too); all of
        it or none.  A change that makes it impossible since the caller's checks (a subscriber
        or identity now taken, an updated one removed, a presence server removed) is a
        ``StoreError`` and nothing is written."""
        ...

    def update_subscriber(
        self,
        msisdn: str,
        *,
        password: str | None = None,
        credit: int | None = None,
        presence_server: str | None = None,
        add_identities: Sequence[str] = (),
        remove_identities: Sequence[str] = (),
    ) -> Subscriber:
        """Change the given fields (``None`` = unchanged) and return the new record; extra
        identities are added and removed as :func:`~presence_sip.hss.records.with_identities`
        says (``DuplicateRecord`` for one another subscriber has)."""
        ...

    def remove_subscriber(self, msisdn: str) -> None:
        """Delete a subscriber with its identities and rules (``UnknownRecord`` if absent)."""
        ...

    def list_subscribers(self) -> list[Subscriber]:
        """All subscribers ordered by MSISDN."""
        ...

    def msisdns(self) -> set[str]:
        """The MSISDN of every subscriber (one query: a registrar's check after a change)."""
        ...

    def get_ha1(self, username: str, algorithm_name: str) -> str | None:
        """The stored HA1 for a digest username (MSISDN with or without ``+``) and algorithm
        (``MD5``, ``SHA-256``, their ``-sess`` forms); ``None`` for an unknown user or algorithm.
        The realm is :attr:`domain`."""
        ...

    def debit_credit(self, msisdn: str, amount: int) -> int:
        """Atomically take *amount* from the credit and return what is left
        (``InsufficientCredit`` and no change when the credit is smaller)."""
        ...

    def rules_for(self, owner_msisdn: str) -> dict[str, str]:
        """``{canonical watcher identity: action}`` for *owner* (empty if unknown).

        Look a watcher up with ``canonical_identity(watcher_uri)``."""
        ...

    def set_rule(self, owner: str, watcher_uri: str, action: RuleAction | str) -> Rule:
        """Create or replace *owner*'s rule about *watcher_uri*."""
        ...

    def remove_rule(self, owner: str, watcher_uri: str) -> None:
        """Delete a rule (``UnknownRecord`` if absent)."""
        ...

    def list_rules(self, owner: str) -> list[Rule]:
        """*owner*'s rules ordered by watcher (``UnknownRecord`` for an unknown owner)."""
        ...

    def plan_add(self, prefix: str, network: str) -> PlanEntry:
        """Add a number-plan prefix (``DuplicateRecord`` if the prefix is already there)."""
        ...

    def plan_list(self) -> list[PlanEntry]:
        """The number plan ordered by prefix."""
        ...

    def plan_remove(self, prefix: str) -> None:
        """Delete a prefix (``UnknownRecord`` if absent)."""
        ...

    def port_add(self, msisdn: str, network: str) -> PortEntry:
        """Record a ported number; *network* must appear in the plan or be :attr:`domain`
        (``UnknownRecord`` otherwise)."""
        ...

    def port_list(self) -> list[PortEntry]:
        """Ported numbers ordered by MSISDN."""
        ...

    def port_remove(self, msisdn: str) -> None:
        """Delete a porting override (``UnknownRecord`` if absent)."""
        ...

    def network_for(self, msisdn: str) -> str | None:
        """The network domain of a number: porting override first, then the longest plan prefix."""
        ...

    def presence_servers(self) -> list[PresenceServerRecord]:
        """The network's presence servers ordered by name."""
        ...

    def add_presence_server(self, name: str, uri: str) -> PresenceServerRecord:
        """Add a presence server (``DuplicateRecord`` if the name is taken)."""
        ...

    def remove_presence_server(self, name: str) -> None:
        """Delete a presence server no subscriber is assigned to."""
        ...

    def data_version(self) -> int:
        """A counter bumped by every write, by any process: compare to notice changes cheaply."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...
