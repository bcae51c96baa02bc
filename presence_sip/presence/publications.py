"""The event state compositor of RFC 3903: PUBLISH, SIP-ETag / SIP-If-Match, expiry, composition.

Each publication (one entity-tag lineage) follows :data:`TRANSITIONS`; the compositor keeps the
live ones per presentity, composes them into one PIDF document per change (and only then:
watchers reuse the composed bytes), expires them from a heap and writes every change to a
:class:`PublicationStore`.  A presentity keeps at most ``max_publications``: a new one past that
ends the one its publisher sent least recently, once those whose time has passed are expired.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from typing import Final, NamedTuple, Protocol

from presence_sip.deadlines import DeadlineHeap
from presence_sip.ids import IdSource
from presence_sip.log_limit import LogLimit
from presence_sip.presence.pidf import PIDF_CONTENT_TYPE, PIDF_DIFF_CONTENT_TYPE, validate_pidf
from presence_sip.presence.pidf_compose import compose_documents, with_entity
from presence_sip.presence.pidf_diff import apply_diff
from presence_sip.sharded import ShardedDict
from presence_sip.sip.errors import LocalProtocolError, PidfError, RemoteProtocolError

log = logging.getLogger(__name__)

MAX_PUBLICATIONS: Final = 64
"""Publications one presentity keeps at once (``max_publications``, by default).  An initial
PUBLISH past that ends the publication sent least recently: a publisher that never refreshes
with SIP-If-Match (after each restart, or every time) keeps working, while one presentity can
hold neither unbounded memory (64 KiB a body) nor an unbounded composition (every publication is
parsed again at each change of a watched presentity)."""

__all__ = [
    "MAX_PUBLICATIONS",
    "TRANSITIONS",
    "Compositor",
    "PubEffect",
    "PubInput",
    "PubState",
    "PublicationMachine",
    "PublicationRecord",
    "PublicationStore",
    "PublishOutcome",
    "PublishRefused",
]


class PubState(Enum):
    """Life of one publication (RFC 3903 §4)."""

    __hash__ = object.__hash__  # members are singletons; Enum hashes the name in Python

    NONE = "none"
    ACTIVE = "active"
    REMOVED = "removed"


class PubInput(Enum):
    """RFC 3903 §4 PUBLISH kinds, plus expiry."""

    __hash__ = object.__hash__  # members are singletons; Enum hashes the name in Python

    INITIAL = "initial"
    """No SIP-If-Match, a body: a new publication."""
    REFRESH = "refresh"
    """SIP-If-Match, no body: extend the lifetime."""
    MODIFY = "modify"
    """SIP-If-Match and a body: replace the state."""
    REMOVE = "remove"
    """SIP-If-Match and Expires: 0."""
    EXPIRE = "expire"
    """The lifetime ran out (RFC 3903 §6 last paragraph)."""


class PubEffect(Enum):
    """What the compositor does on a transition."""

    __hash__ = object.__hash__  # members are singletons; Enum hashes the name in Python

    STORE = "store"
    EXTEND = "extend"
    REPLACE = "replace"
    DELETE = "delete"


# RFC 3903 §4 (initial / refresh / modify / remove) and §6 (expiry).
TRANSITIONS: Final[dict[tuple[PubState, PubInput], tuple[PubEffect, PubState]]] = {
    (PubState.NONE, PubInput.INITIAL): (PubEffect.STORE, PubState.ACTIVE),
    (PubState.ACTIVE, PubInput.REFRESH): (PubEffect.EXTEND, PubState.ACTIVE),
    (PubState.ACTIVE, PubInput.MODIFY): (PubEffect.REPLACE, PubState.ACTIVE),
    (PubState.ACTIVE, PubInput.REMOVE): (PubEffect.DELETE, PubState.REMOVED),
    (PubState.ACTIVE, PubInput.EXPIRE): (PubEffect.DELETE, PubState.REMOVED),
}


class PublicationMachine:
    """One publication's state; :meth:`process` applies :data:`TRANSITIONS`."""

    __slots__ = ("state",)

    def __init__(self, state: PubState = PubState.NONE) -> None:
        self.state = state

    def process(self, event: PubInput) -> PubEffect:
        """Apply ``event``; a pair not in the table raises ``LocalProtocolError`` (-> REMOVED)."""
        try:
            effect, self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            old, self.state = self.state, PubState.REMOVED
            message = f"publication: {event.value} not allowed in {old.value}"
            raise LocalProtocolError(message) from None
        return effect


class PublicationRecord(NamedTuple):
    """A publication as stored (one row, in the column order of the store's INSERT)."""

    presentity: str
    """Presentity key (``+MSISDN`` or ``sip:user@host``)."""
    etag: str
    expires_at: float
    body: bytes
    """The full PIDF document (partial publications are applied before storing)."""
    seq: int
    """Composition order: a later seq is a newer publication."""


class PublicationStore(Protocol):
    """Durable storage of publications."""

    def load_publications(self, now: float) -> list[PublicationRecord]:
        """Every publication, also those that expired while the node was down: the compositor
        expires them as a running node would, so that their watchers are told."""
        ...

    def save_publication(self, record: PublicationRecord, replaces: str | None) -> None:
        """Insert ``record``, atomically deleting the row of entity-tag ``replaces``."""
        ...

    def delete_publication(self, etag: str) -> None:
        """Forget one publication (no error when absent)."""
        ...


class PublishRefused(RemoteProtocolError):
    """A PUBLISH the compositor refuses: ``status``, ``reason`` and headers for the answer."""

    def __init__(self, reason: str, status: int, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason, status)
        self.headers = headers


class PublishOutcome:
    """A PUBLISH the compositor accepted.

    One per PUBLISH, so a plain class: compiled by mypyc it builds in ~40 ns, a NamedTuple in
    ~400 ns (its ``__new__`` is Python code; issue 8)."""

    __slots__ = ("changed", "etag", "expires")

    def __init__(self, etag: str | None, expires: int, changed: bool) -> None:
        self.etag = etag
        """The publication's entity-tag: the new one, or after a removal the one removed (RFC
        3903 §6 step 6 puts it in every 200)."""
        self.expires = expires
        """Granted lifetime in seconds (0 after a removal)."""
        self.changed = changed
        """Did the presentity's composed document change?"""

    def __repr__(self) -> str:
        return f"PublishOutcome(etag={self.etag!r}, expires={self.expires}, changed={self.changed})"


class _Publication(PublicationMachine):
    """One live publication: its machine state (a subclass, so one object per publication)
    and what composition needs, the entity and the canonical PIDF bytes."""

    __slots__ = ("entity", "etag", "expires_at", "presentity", "seq", "touched", "xml")

    def __init__(
        self,
        presentity: str,
        etag: str,
        expires_at: float,
        entity: str,
        xml: bytes,
        seq: int,
        touched: float,
        *,
        fresh: bool = False,
    ) -> None:
        super().__init__(PubState.NONE if fresh else PubState.ACTIVE)
        self.presentity = presentity
        self.etag = etag
        self.expires_at = expires_at
        self.entity = entity
        self.xml = xml
        self.seq = seq
        self.touched = touched
        """When its publisher last sent it (initial, refresh or modify; loaded: the start)."""

    def record(self) -> PublicationRecord:
        # tuple.__new__ skips the NamedTuple's Python-level __new__: ~220 ns instead of ~400.
        fields = (self.presentity, self.etag, self.expires_at, self.xml, self.seq)
        return tuple.__new__(PublicationRecord, fields)


EntityKey = Callable[[str], str | None]
"""Maps a PIDF ``entity`` to its presentity key (None: not a presentity of ours)."""


class Compositor:
    """RFC 3903 event state compositor for the ``presence`` event package."""

    def __init__(
        self,
        store: PublicationStore,
        ids: IdSource,
        entity_key: EntityKey,
        *,
        entity_of: Callable[[str], str] | None = None,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        partial: bool = True,
        max_publications: int = MAX_PUBLICATIONS,
        now: float = 0.0,
    ) -> None:
        self.store = store
        self.ids = ids
        self.entity_key = entity_key
        self.entity_of = entity_of
        """The entity composed documents name for a presentity key (None: the newest
        publication's own)."""
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.partial = partial
        if max_publications < 1:
            raise ValueError(f"max_publications must be at least 1, not {max_publications}")
        self.max_publications = max_publications
        self.evicted = 0
        """Publications ended to make room under ``max_publications``."""
        self._evictions = LogLimit()
        self._by_etag: ShardedDict[str, _Publication] = ShardedDict()
        self._by_presentity: dict[str, dict[str, _Publication]] = {}
        self._composed: dict[str, bytes] = {}
        self._stale: set[str] = set()
        """Presentities whose publications changed since their document was last composed."""
        self._entity_keys: ShardedDict[str, str | None] = ShardedDict()
        self._expiry: DeadlineHeap[str] = DeadlineHeap()
        """Entity-tag -> the expiry of its publication."""
        self._seq = 0
        self._etag_second: int | None = None
        self._etag_prefix = ""
        self.watched: Callable[[str], bool] | None = None
        """When set, only presentities it names are composed at each change; the others when
        their document is asked for (nobody is told about their changes meanwhile)."""
        for record in store.load_publications(now):
            self._load(record, now)
        for presentity in self._by_presentity:
            self._recompose(presentity)

    @property
    def accepted_types(self) -> tuple[str, ...]:
        if self.partial:
            return (PIDF_CONTENT_TYPE, PIDF_DIFF_CONTENT_TYPE)
        return (PIDF_CONTENT_TYPE,)

    def _load(self, record: PublicationRecord, now: float) -> None:
        try:
            entity, xml = validate_pidf(record.body)
        except PidfError:
            self.store.delete_publication(record.etag)
            return
        self._seq = max(self._seq, record.seq)
        self._index(
            _Publication(
                record.presentity, record.etag, record.expires_at, entity, xml, record.seq, now
            )
        )

    # --- queries ------------------------------------------------------------------------------

    def document(self, presentity: str) -> bytes | None:
        """The composed PIDF of ``presentity``, or None when nothing is published."""
        if presentity in self._stale:
            self._compose(presentity)
        return self._composed.get(presentity)

    def has_document(self, presentity: str) -> bool:
        """Is anything published for ``presentity`` (without composing it)?"""
        return presentity in self._by_presentity

    def etags(self, presentity: str) -> list[str]:
        return list(self._by_presentity.get(presentity, {}))

    def __len__(self) -> int:
        return len(self._by_etag)

    # --- PUBLISH ------------------------------------------------------------------------------

    def publish(
        self,
        presentity: str,
        *,
        if_match: str | None,
        expires: int | None,
        content_type: str | None,
        body: bytes,
        now: float,
    ) -> PublishOutcome:
        """Apply one PUBLISH (RFC 3903 §6 steps 2-5); refusals raise :class:`PublishRefused`."""
        current = None
        if if_match is not None:
            current = self._by_etag.get(if_match)
            if current is None or current.presentity != presentity:
                raise PublishRefused("Unknown SIP-If-Match entity-tag", 412)  # RFC 3903 §6 step 3
        lifetime = self._lifetime(expires)
        if current is None:
            if lifetime == 0:
                raise PublishRefused("Expires 0 needs SIP-If-Match", 400)
            if not body:
                raise PublishRefused("Initial PUBLISH without a body", 400)  # RFC 3903 §6 step 4
            entity, xml = self._document(presentity, content_type, body, None)
            return self._initial(presentity, entity, xml, lifetime, now)
        if lifetime == 0:
            return self._remove(current, PubInput.REMOVE)
        if not body:
            return self._refresh(current, lifetime, now)
        entity, xml = self._document(presentity, content_type, body, current.xml)
        return self._modify(current, entity, xml, lifetime, now)

    def _lifetime(self, expires: int | None) -> int:
        if expires is None:
            return self.default_expires
        if 0 < expires < self.min_expires:
            # RFC 3903 §6 step 4 / RFC 3261 §20.23: 423 with Min-Expires
            minimum = (("Min-Expires", str(self.min_expires)),)
            raise PublishRefused("Interval Too Brief", 423, minimum)
        return min(expires, self.max_expires)

    def _document(
        self, presentity: str, content_type: str | None, body: bytes, base: bytes | None
    ) -> tuple[str, bytes]:
        """The validated ``(entity, canonical xml)`` of a PUBLISH body (refusals raise)."""
        if content_type != PIDF_CONTENT_TYPE and content_type not in self.accepted_types:
            # RFC 3903 §6 step 5: 415 listing what we understand
            raise PublishRefused(
                "Unsupported Media Type", 415, (("Accept", ", ".join(self.accepted_types)),)
            )
        if content_type == PIDF_DIFF_CONTENT_TYPE:
            body = apply_diff(base, body)  # RFC 5264 §3: partial publication on the current state
        entity, xml = validate_pidf(body)
        if self._entity_key(entity) != presentity:
            raise PublishRefused("PIDF entity does not match the presentity", 400)
        return entity, xml

    def forget_entity_keys(self) -> None:
        """``entity_key`` may answer otherwise now (the HSS changed): drop its cached answers."""
        self._entity_keys = ShardedDict()

    def _entity_key(self, entity: str) -> str | None:
        """``entity_key`` with a cache: a presentity publishes the same entity URI every time."""
        cache = self._entity_keys
        key = cache.get(entity, _UNCACHED)  # (no KeyError: see role._presentity_key)
        if key != _UNCACHED:
            return key
        return cache.put_bounded(entity, self.entity_key(entity), _ENTITY_CACHE_SIZE)

    def _initial(
        self, presentity: str, entity: str, xml: bytes, lifetime: int, now: float
    ) -> PublishOutcome:
        self._seq += 1
        deadline = now + lifetime
        etag = self._new_etag(now)
        publication = _Publication(
            presentity, etag, deadline, entity, xml, self._seq, now, fresh=True
        )
        publication.process(PubInput.INITIAL)
        mine = self._by_presentity.get(presentity)
        if mine is not None and len(mine) >= self.max_publications:
            self._expire_due(mine, now)
            if len(mine) >= self.max_publications:
                self._make_room(mine, now)
        self.store.save_publication(publication.record(), None)
        self._index(publication)
        return PublishOutcome(publication.etag, lifetime, self._recompose(presentity))

    def _refresh(self, current: _Publication, lifetime: int, now: float) -> PublishOutcome:
        current.process(PubInput.REFRESH)
        old = current.etag
        self._unindex(current)
        # RFC 3903 §6 step 7: a fresh entity-tag on every success
        current.etag = self._new_etag(now)
        current.expires_at = now + lifetime
        current.touched = now
        self.store.save_publication(current.record(), old)
        self._index(current)
        return PublishOutcome(current.etag, lifetime, False)

    def _modify(
        self, current: _Publication, entity: str, xml: bytes, lifetime: int, now: float
    ) -> PublishOutcome:
        current.process(PubInput.MODIFY)
        old = current.etag
        self._unindex(current)
        self._seq += 1
        current.etag = self._new_etag(now)
        current.expires_at = now + lifetime
        current.touched = now
        current.entity = entity
        current.xml = xml
        current.seq = self._seq
        self.store.save_publication(current.record(), old)
        self._index(current)
        return PublishOutcome(current.etag, lifetime, self._recompose(current.presentity))

    def _remove(self, current: _Publication, event: PubInput) -> PublishOutcome:
        self._end(current, event)
        return PublishOutcome(current.etag, 0, self._recompose(current.presentity))

    def _end(self, publication: _Publication, event: PubInput) -> None:
        """Remove *publication* (its machine, the store's row, the indexes and its expiry);
        the caller recomposes its presentity."""
        publication.process(event)
        self.store.delete_publication(publication.etag)
        self._unindex(publication)

    def _expire_due(self, mine: dict[str, _Publication], now: float) -> None:
        """Expire the publications of ``mine`` whose time has passed but which the timer has
        not purged yet (expired while the node was down, or further down the expiry heap than
        the last batch), as the timer would: they leave no room to make, and are not counted as
        ended for ``max_publications``.  The new one's composition covers their going."""
        for publication in [p for p in mine.values() if p.expires_at <= now]:
            self._end(publication, PubInput.EXPIRE)

    def _make_room(self, mine: dict[str, _Publication], now: float) -> None:
        """End the publications of ``mine`` their publishers sent least recently (initial,
        refresh or modify; of two sent together, the older one), until there is room for one
        more (more than one only when ``max_publications`` was lowered since they were made;
        the expired ones are gone already, see :meth:`_expire_due`); the new one's composition
        covers their going.  Not the one expiring first: a phone that
        refreshes every 10 minutes would go before a broken client's hour-long publications.
        Said once a minute, with the publications ended so far (:attr:`evicted`, as the metric
        counts them)."""
        while len(mine) >= self.max_publications:
            first = min(mine.values(), key=_by_last_sent)
            self._end(first, PubInput.EXPIRE)
            self.evicted += 1
        if self._evictions.due(now):
            log.warning(
                "%s reached %d publications (max_publications): a new one ends the one sent"
                " least recently (%d so far; a publisher that does not refresh with"
                " SIP-If-Match?)",
                first.presentity,
                self.max_publications,
                self.evicted,
            )

    def _new_etag(self, now: float) -> str:
        # The random id follows the time in seconds (fixed width), so entity-tags made together
        # sort together and the rows of one commit share the pages of the store's etag index
        # instead of each landing on a random page (issue 8).
        second = int(now)
        if second != self._etag_second:
            self._etag_second = second
            self._etag_prefix = f"e{second & _SECONDS_MASK:09x}."
        etag = self.ids.new_id(self._etag_prefix)
        while etag in self._by_etag:
            etag = self.ids.new_id(self._etag_prefix)
        return etag

    def _index(self, publication: _Publication) -> None:
        self._by_etag[publication.etag] = publication
        mine = self._by_presentity.get(publication.presentity)
        if mine is None:
            mine = self._by_presentity[publication.presentity] = {}
        mine[publication.etag] = publication
        self._expiry.set(publication.etag, publication.expires_at)

    def _unindex(self, publication: _Publication) -> None:
        self._by_etag.pop(publication.etag)
        self._expiry.discard(publication.etag)
        mine = self._by_presentity.get(publication.presentity)
        if mine is not None:
            mine.pop(publication.etag, None)
            if not mine:
                del self._by_presentity[publication.presentity]

    def _recompose(self, presentity: str) -> bool:
        """The publications changed: compose now (True when the document changed), or, for a
        presentity nobody watches (see :attr:`watched`), when it is next asked for (True)."""
        if self.watched is not None and not self.watched(presentity):
            if presentity in self._by_presentity:
                self._stale.add(presentity)
            else:
                # Its last publication is gone: nothing to compose until it publishes again.
                # Marked stale instead, every presentity that ever published stayed in
                # `_stale` for good (~100 B each, RSS audit of 2026-11-27), and a document
                # composed while it was watched stayed in `_composed`.
                self._stale.discard(presentity)
                self._composed.pop(presentity, None)
            return True
        return self._compose(presentity)

    def _compose(self, presentity: str) -> bool:
        """Compose once per change (RFC 3903 §4 compositor); True when the document changed."""
        self._stale.discard(presentity)
        publications = sorted(self._by_presentity.get(presentity, {}).values(), key=_by_seq)
        old = self._composed.get(presentity)
        if not publications:
            self._composed.pop(presentity, None)
            return old is not None
        entity = publications[-1].entity if self.entity_of is None else self.entity_of(presentity)
        if len(publications) > 1:
            new = compose_documents(entity, publications)
        elif publications[0].entity == entity:
            new = publications[0].xml
        else:
            new = with_entity(publications[0].xml, entity)
        self._composed[presentity] = new
        return new != old

    # --- expiry -------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._expiry.next_deadline()

    def handle_timer(self, now: float, limit: int = 1000) -> set[str]:
        """Remove up to ``limit`` expired publications; return the presentities that changed."""
        changed: set[str] = set()
        while limit > 0:
            etag = self._expiry.pop_due(now)
            if etag is None:
                break
            publication = self._by_etag[etag]
            limit -= 1
            if self._remove(publication, PubInput.EXPIRE).changed:
                changed.add(publication.presentity)
        return changed


_SECONDS_MASK: Final = (1 << 36) - 1
"""Seconds kept in an entity-tag prefix (9 hex digits; wraps after ~2,177 years)."""

_ENTITY_CACHE_SIZE: Final = 65536
"""Entity URIs whose presentity key is remembered (about; a full shard of the cache starts over)."""
_UNCACHED: Final = ""
"""Not in the entity-key cache (no key is empty: a key is None or a non-empty string)."""


def _by_seq(publication: _Publication) -> int:
    return publication.seq


def _by_last_sent(publication: _Publication) -> tuple[float, int]:
    return (publication.touched, publication.seq)
