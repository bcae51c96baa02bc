"""In-memory ``SubscriberStore`` for unit tests: the same contract as the SQLite store.

Each write validates everything first and mutates only when every check passed, so a failing
write changes nothing (the memory counterpart of a rolled-back transaction).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager

from presence_sip.gateway.numbering import NumberPlan
from presence_sip.hss.msisdn import (
    canonical_identity,
    msisdn_from_identity,
    msisdn_from_username,
    normalize_msisdn,
    normalize_prefix,
)
from presence_sip.hss.records import (
    DEFAULT_DOMAIN,
    PlanEntry,
    PortEntry,
    PresenceServerRecord,
    Rule,
    RuleAction,
    Subscriber,
    SubscriberField,
    canonical_watcher,
    check_credit,
    make_subscriber,
    normalize_algorithm,
    normalize_domain,
    with_identities,
    with_password,
)
from presence_sip.hss.store import (
    DuplicateRecord,
    InsufficientCredit,
    UnknownRecord,
    last_prefix_in_use,
)
from presence_sip.sip.errors import StoreError

__all__ = ["MemorySubscriberStore"]


class MemorySubscriberStore:
    """``SubscriberStore`` kept in dictionaries (one process, no persistence)."""

    def __init__(self, domain: str = DEFAULT_DOMAIN) -> None:
        self._domain = normalize_domain(domain)
        self._subscribers: dict[str, Subscriber] = {}
        self._identities: dict[str, str] = {}
        self._rules: dict[str, dict[str, RuleAction]] = {}
        self._plan: dict[str, str] = {}
        self._ported: dict[str, str] = {}
        self._servers: dict[str, PresenceServerRecord] = {}
        self._version = 0

    @property
    def domain(self) -> str:
        """The network domain and digest realm."""
        return self._domain

    def close(self) -> None:
        """Nothing to release."""

    @contextmanager
    def batch(self) -> Iterator[None]:
        """All the changes inside, or none: the tables are put back when the block raises."""
        saved = copy.deepcopy(vars(self))
        try:
            yield
        except BaseException:
            vars(self).update(saved)
            raise

    # -- subscribers -------------------------------------------------------------------------

    def get_subscriber(self, msisdn: str) -> Subscriber | None:
        """The subscriber with this MSISDN, or ``None``."""
        return self._subscribers.get(normalize_msisdn(msisdn))

    def extra_identities(self) -> dict[str, str]:
        return {u: m for u, m in self._identities.items() if msisdn_from_identity(u) is None}

    def find_by_identity(self, uri_or_user: str) -> Subscriber | None:
        """The subscriber an AOR, extra identity or digest username designates."""
        msisdn = msisdn_from_identity(uri_or_user)
        if msisdn is None:
            try:
                msisdn = self._identities.get(canonical_identity(uri_or_user))
            except ValueError:
                return None
        return None if msisdn is None else self._subscribers.get(msisdn)

    def add_subscriber(
        self,
        msisdn: str,
        password: str,
        *,
        credit: int = 0,
        presence_server: str | None = None,
        identities: Sequence[str] = (),
    ) -> Subscriber:
        """Create a subscriber with default identities plus *identities*."""
        record = make_subscriber(
            normalize_msisdn(msisdn),
            password,
            self._domain,
            credit=credit,
            presence_server=presence_server,
            identities=identities,
        )
        if record.msisdn in self._subscribers:
            raise DuplicateRecord(f"subscriber {record.msisdn} already exists")
        self._check_server(presence_server)
        for uri in record.identities:
            if uri in self._identities:
                raise DuplicateRecord(f"identity {uri} already belongs to {self._identities[uri]}")
        self._subscribers[record.msisdn] = record
        self._identities.update(dict.fromkeys(record.identities, record.msisdn))
        self._version += 1
        return record

    def import_subscribers(
        self,
        new: Sequence[Subscriber],
        replacing: Sequence[Subscriber] = (),
        *,
        fields: Collection[SubscriberField] = (),
    ) -> None:
        """Add *new*, overwrite the subscribers *replacing* names: all checked, then written."""
        with self.batch():
            replaced = [self._replace(record, fields) for record in replacing]
            for record in replaced:
                self._take_identities(record)
            for record in new:
                self._check_server(record.presence_server)
                if record.msisdn in self._subscribers:
                    raise DuplicateRecord(f"subscriber {record.msisdn} already exists")
                self._take_identities(record)
                self._subscribers[record.msisdn] = record
            self._version += 1

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
        """Change the given fields and return the new record."""
        before = self._require(normalize_msisdn(msisdn))
        record = with_identities(before, add_identities, remove_identities)
        for uri in record.identities:
            owner = self._identities.get(uri, record.msisdn)
            if owner != record.msisdn:
                raise DuplicateRecord(f"identity {uri} already belongs to {owner}")
        if password is not None:
            record = with_password(record, password, self._domain)
        if credit is not None:
            record = dataclasses.replace(record, credit=check_credit(credit))
        if presence_server is not None:
            self._check_server(presence_server)
            record = dataclasses.replace(record, presence_server=presence_server)
        for uri in before.identities:
            self._identities.pop(uri, None)
        self._identities.update(dict.fromkeys(record.identities, record.msisdn))
        self._subscribers[record.msisdn] = record
        self._version += 1
        return record

    def remove_subscriber(self, msisdn: str) -> None:
        """Delete a subscriber, its identities and its rules."""
        record = self._require(normalize_msisdn(msisdn))
        del self._subscribers[record.msisdn]
        for uri in record.identities:
            self._identities.pop(uri, None)
        self._rules.pop(record.msisdn, None)
        self._version += 1

    def msisdns(self) -> set[str]:
        return set(self._subscribers)

    def list_subscribers(self) -> list[Subscriber]:
        """All subscribers ordered by MSISDN."""
        return [self._subscribers[key] for key in sorted(self._subscribers)]

    def get_ha1(self, username: str, algorithm_name: str) -> str | None:
        """The HA1 for a digest username (MSISDN, with or without ``+``) and algorithm."""
        algorithm = normalize_algorithm(algorithm_name)
        msisdn = msisdn_from_username(username)
        record = None if msisdn is None else self._subscribers.get(msisdn)
        if algorithm is None or record is None:
            return None
        with_plus = username.startswith("+")
        if algorithm == "MD5":
            value = record.ha1_md5 if with_plus else record.ha1_md5_digits
        else:
            value = record.ha1_sha256 if with_plus else record.ha1_sha256_digits
        return value or None

    def debit_credit(self, msisdn: str, amount: int) -> int:
        """Take *amount* from the credit; return the credit left."""
        record = self._require(normalize_msisdn(msisdn))
        check_credit(amount)
        if record.credit < amount:
            raise InsufficientCredit(
                f"credit of {record.msisdn} is {record.credit}, {amount} needed"
            )
        self._subscribers[record.msisdn] = dataclasses.replace(
            record, credit=record.credit - amount
        )
        self._version += 1
        return record.credit - amount

    # -- presence rules ----------------------------------------------------------------------

    def rules_for(self, owner_msisdn: str) -> dict[str, str]:
        """``{canonical watcher: action}`` of *owner* (empty if unknown or malformed)."""
        owner = msisdn_from_identity(owner_msisdn)
        rules = self._rules.get(owner, {}) if owner is not None else {}
        return {watcher: action.value for watcher, action in rules.items()}

    def set_rule(self, owner: str, watcher_uri: str, action: RuleAction | str) -> Rule:
        """Create or replace *owner*'s rule about *watcher_uri*."""
        rule = Rule(
            owner=normalize_msisdn(owner),
            watcher_uri=canonical_watcher(watcher_uri),
            action=RuleAction.parse(action),
        )
        self._require(rule.owner)
        self._rules.setdefault(rule.owner, {})[rule.watcher_uri] = rule.action
        self._version += 1
        return rule

    def remove_rule(self, owner: str, watcher_uri: str) -> None:
        """Delete *owner*'s rule about *watcher_uri*."""
        canonical = normalize_msisdn(owner)
        watcher = canonical_watcher(watcher_uri)
        self._require(canonical)
        rules = self._rules.get(canonical, {})
        if watcher not in rules:
            raise UnknownRecord(f"no rule of {canonical} about {watcher}")
        del rules[watcher]
        self._version += 1

    def list_rules(self, owner: str) -> list[Rule]:
        """*owner*'s rules ordered by watcher."""
        canonical = normalize_msisdn(owner)
        self._require(canonical)
        rules = self._rules.get(canonical, {})
        return [Rule(canonical, watcher, rules[watcher]) for watcher in sorted(rules)]

    # -- number plan and porting -------------------------------------------------------------

    def plan_add(self, prefix: str, network: str) -> PlanEntry:
        """Add a number-plan prefix."""
        entry = PlanEntry(normalize_prefix(prefix), normalize_domain(network))
        if entry.prefix in self._plan:
            raise DuplicateRecord(
                f"prefix {entry.prefix} is already in the plan ({self._plan[entry.prefix]})"
            )
        self._plan[entry.prefix] = entry.network
        self._version += 1
        return entry

    def plan_list(self) -> list[PlanEntry]:
        """The number plan ordered by prefix."""
        return [PlanEntry(prefix, self._plan[prefix]) for prefix in sorted(self._plan)]

    def plan_remove(self, prefix: str) -> None:
        """Delete a prefix."""
        canonical = normalize_prefix(prefix)
        network = self._plan.get(canonical)
        if network is None:
            raise UnknownRecord(f"prefix {canonical} is not in the plan")
        others = [p for p, n in self._plan.items() if n == network and p != canonical]
        ported = sum(1 for n in self._ported.values() if n == network)
        if network != self._domain and not others and ported:
            raise StoreError(last_prefix_in_use(canonical, network, ported))
        del self._plan[canonical]
        self._version += 1

    def port_add(self, msisdn: str, network: str) -> PortEntry:
        """Record that *msisdn* was ported to *network* (a network the plan knows)."""
        entry = PortEntry(normalize_msisdn(msisdn), normalize_domain(network))
        if entry.network not in self._plan.values() and entry.network != self._domain:
            raise UnknownRecord(f"unknown network {entry.network} (not in the number plan)")
        if entry.msisdn in self._ported:
            raise DuplicateRecord(
                f"{entry.msisdn} is already ported (to {self._ported[entry.msisdn]})"
            )
        self._ported[entry.msisdn] = entry.network
        self._version += 1
        return entry

    def port_list(self) -> list[PortEntry]:
        """Ported numbers ordered by MSISDN."""
        return [PortEntry(msisdn, self._ported[msisdn]) for msisdn in sorted(self._ported)]

    def port_remove(self, msisdn: str) -> None:
        """Delete a porting override."""
        canonical = normalize_msisdn(msisdn)
        if self._ported.pop(canonical, None) is None:
            raise UnknownRecord(f"{canonical} is not ported")
        self._version += 1

    def network_for(self, msisdn: str) -> str | None:
        """Porting override first, then the longest matching prefix (``None`` if neither)."""
        canonical = msisdn_from_identity(msisdn)
        if canonical is None:
            return None
        return NumberPlan(self._plan, self._ported).network_for(canonical)

    # -- presence servers --------------------------------------------------------------------

    def presence_servers(self) -> list[PresenceServerRecord]:
        """The network's presence servers ordered by name."""
        return [self._servers[name] for name in sorted(self._servers)]

    def add_presence_server(self, name: str, uri: str) -> PresenceServerRecord:
        """Add a presence server."""
        record = PresenceServerRecord(name.strip(), uri.strip())
        if record.name in self._servers:
            raise DuplicateRecord(f"presence server {record.name} already exists")
        self._servers[record.name] = record
        self._version += 1
        return record

    def remove_presence_server(self, name: str) -> None:
        """Delete a presence server no subscriber is assigned to."""
        if name not in self._servers:
            raise UnknownRecord(f"unknown presence server {name}")
        users = sum(1 for s in self._subscribers.values() if s.presence_server == name)
        if users:
            raise StoreError(f"presence server {name} still serves {users} subscriber(s)")
        del self._servers[name]
        self._version += 1

    def data_version(self) -> int:
        """The write counter."""
        return self._version

    # -- helpers -----------------------------------------------------------------------------

    def _require(self, msisdn: str) -> Subscriber:
        record = self._subscribers.get(msisdn)
        if record is None:
            raise UnknownRecord(f"unknown subscriber {msisdn}")
        return record

    def _replace(self, record: Subscriber, fields: Collection[SubscriberField]) -> Subscriber:
        """An import's update of an existing subscriber, its identities let go (to be taken
        again once every updated subscriber let go of its own)."""
        before = self._require(record.msisdn)
        replaced = dataclasses.replace(
            record,
            credit=record.credit if SubscriberField.CREDIT in fields else before.credit,
            presence_server=(
                record.presence_server
                if SubscriberField.PRESENCE_SERVER in fields
                else before.presence_server
            ),
            identities=(
                record.identities if SubscriberField.IDENTITIES in fields else before.identities
            ),
        )
        self._check_server(replaced.presence_server)
        for uri in before.identities:
            self._identities.pop(uri, None)
        self._subscribers[record.msisdn] = replaced
        return replaced

    def _take_identities(self, record: Subscriber) -> None:
        for uri in record.identities:
            owner = self._identities.get(uri)
            if owner is not None:
                raise DuplicateRecord(f"identity {uri} already belongs to {owner}")
            self._identities[uri] = record.msisdn

    def _check_server(self, name: str | None) -> None:
        if name is not None and name not in self._servers:
            raise UnknownRecord(f"unknown presence server {name} (add it with `hss server add`)")
