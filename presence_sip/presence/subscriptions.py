"""The RFC 6665 notifier-side subscription machine, and the stored form of a subscription.

A subscription is created by an accepted SUBSCRIBE whose watcher authorization (RFC 5025
``<sub-handling>``) decides its first state; refreshes, unsubscribes, expiry, rule changes and
NOTIFY failures drive it afterwards. The machine only says *what* to send; the presence server
(``presence.server``) builds the NOTIFY.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

from presence_sip.sip.errors import LocalProtocolError

__all__ = [
    "TRANSITIONS",
    "Input",
    "SavedSubscription",
    "SideEffect",
    "State",
    "SubscriptionMachine",
    "SubscriptionRecord",
    "SubscriptionStore",
]


class State(Enum):
    """RFC 6665 §4.1.3 ``Subscription-State`` values, plus INIT before authorization."""

    __hash__ = object.__hash__  # members are singletons; Enum hashes the name in Python

    INIT = "init"
    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


class Input(Enum):
    """What happens to a subscription."""

    __hash__ = object.__hash__  # members are singletons; Enum hashes the name in Python

    AUTH_ALLOW = "auth-allow"
    """Authorization (first, or after a rule change) says allow."""
    AUTH_POLITE_BLOCK = "auth-polite-block"
    """Authorization says polite-block: active, but the watcher sees a neutral document."""
    AUTH_CONFIRM = "auth-confirm"
    """Authorization says confirm: pending until the presentity decides."""
    AUTH_BLOCK = "auth-block"
    """Authorization says block."""
    REFRESH = "refresh"
    """An in-dialog SUBSCRIBE with a non-zero Expires."""
    UNSUBSCRIBE = "unsubscribe"
    """A SUBSCRIBE with Expires: 0 (an unsubscribe, or the end of a fetch)."""
    EXPIRE = "expire"
    """The subscription's expiry passed without a refresh."""
    NOTIFY_FAILED = "notify-failed"
    """A NOTIFY got 481/408/another failure or timed out (RFC 6665 §4.2.2)."""
    STATE_CHANGED = "state-changed"
    """The presentity's document changed."""
    RESOURCE_GONE = "resource-gone"
    """The presentity no longer exists (its subscriber was removed from the HSS)."""


class SideEffect(Enum):
    """What the server must do after a transition."""

    __hash__ = object.__hash__  # members are singletons; Enum hashes the name in Python

    NOTIFY = "notify"
    """Send a NOTIFY with the current document and Subscription-State."""
    NOTIFY_REJECTED = "notify-rejected"
    """Send ``Subscription-State: terminated;reason=rejected`` (RFC 6665 §4.1.3)."""
    NOTIFY_TIMEOUT = "notify-timeout"
    """Send ``Subscription-State: terminated;reason=timeout``."""
    NOTIFY_NORESOURCE = "notify-noresource"
    """Send ``Subscription-State: terminated;reason=noresource`` (RFC 6665 §4.1.3)."""
    REJECT = "reject"
    """Refuse the SUBSCRIBE (403, RFC 3856 §6.6); no dialog, no NOTIFY."""


S, In, E = State, Input, SideEffect

# RFC 6665 §4.2 notifier behaviour (cf. the subscriber state diagram of RFC 6665 §4.1.2.4);
# RFC 5025 §3.2.1 sub-handling decides the first state. Pairs not listed are local misuse.
TRANSITIONS: Final[dict[tuple[State, Input], tuple[SideEffect | None, State]]] = {
    (S.INIT, In.AUTH_ALLOW): (E.NOTIFY, S.ACTIVE),
    (S.INIT, In.AUTH_POLITE_BLOCK): (E.NOTIFY, S.ACTIVE),
    (S.INIT, In.AUTH_CONFIRM): (E.NOTIFY, S.PENDING),
    (S.INIT, In.AUTH_BLOCK): (E.REJECT, S.TERMINATED),
    (S.PENDING, In.AUTH_ALLOW): (E.NOTIFY, S.ACTIVE),
    (S.PENDING, In.AUTH_POLITE_BLOCK): (E.NOTIFY, S.ACTIVE),
    (S.PENDING, In.AUTH_CONFIRM): (None, S.PENDING),
    (S.PENDING, In.AUTH_BLOCK): (E.NOTIFY_REJECTED, S.TERMINATED),
    (S.PENDING, In.REFRESH): (E.NOTIFY, S.PENDING),
    (S.PENDING, In.UNSUBSCRIBE): (E.NOTIFY_TIMEOUT, S.TERMINATED),
    (S.PENDING, In.EXPIRE): (E.NOTIFY_TIMEOUT, S.TERMINATED),
    (S.PENDING, In.NOTIFY_FAILED): (None, S.TERMINATED),
    (S.PENDING, In.STATE_CHANGED): (None, S.PENDING),
    (S.PENDING, In.RESOURCE_GONE): (E.NOTIFY_NORESOURCE, S.TERMINATED),
    (S.ACTIVE, In.AUTH_ALLOW): (E.NOTIFY, S.ACTIVE),
    (S.ACTIVE, In.AUTH_POLITE_BLOCK): (E.NOTIFY, S.ACTIVE),
    # Once approved, a later "confirm" rule does not take the approval back.
    (S.ACTIVE, In.AUTH_CONFIRM): (None, S.ACTIVE),
    (S.ACTIVE, In.AUTH_BLOCK): (E.NOTIFY_REJECTED, S.TERMINATED),
    (S.ACTIVE, In.REFRESH): (E.NOTIFY, S.ACTIVE),
    (S.ACTIVE, In.UNSUBSCRIBE): (E.NOTIFY_TIMEOUT, S.TERMINATED),
    (S.ACTIVE, In.EXPIRE): (E.NOTIFY_TIMEOUT, S.TERMINATED),
    (S.ACTIVE, In.NOTIFY_FAILED): (None, S.TERMINATED),
    (S.ACTIVE, In.STATE_CHANGED): (E.NOTIFY, S.ACTIVE),
    (S.ACTIVE, In.RESOURCE_GONE): (E.NOTIFY_NORESOURCE, S.TERMINATED),
    # The final NOTIFY itself may fail; nothing more to do.
    (S.TERMINATED, In.NOTIFY_FAILED): (None, S.TERMINATED),
}


class SubscriptionMachine:
    """One subscription's state; :meth:`process` applies :data:`TRANSITIONS`."""

    __slots__ = ("state",)

    def __init__(self, state: State = State.INIT) -> None:
        self.state = state

    def process(self, event: Input) -> SideEffect | None:
        """Apply ``event``; a pair not in the table raises ``LocalProtocolError`` and terminates."""
        try:
            effect, self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            old, self.state = self.state, State.TERMINATED
            message = f"subscription: {event.value} not allowed in {old.value}"
            raise LocalProtocolError(message) from None
        return effect


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """A subscription as stored (one row), enough to keep notifying after a restart."""

    id: str
    """Our local dialog tag (unique per subscription)."""
    presentity: str
    """Presentity key (``+MSISDN`` or ``sip:user@host``)."""
    entity: str
    """Presentity URI used as PIDF entity / watcherinfo resource."""
    event: str
    """``presence`` or ``presence.winfo``."""
    watcher: str
    """The watcher's URI (From)."""
    call_id: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: tuple[str, ...]
    local_contact: str
    source: str
    """The peer the SUBSCRIBE came from, ``transport:host:port``."""
    remote_cseq: int
    cseq_reserved: int
    """Highest local CSeq that may have been used; a restart continues above it."""
    expires_at: float
    created_at: float
    state: str
    """``pending`` or ``active``."""
    polite: bool
    accept_diff: bool
    """The SUBSCRIBE's Accept listed application/pidf-diff+xml (RFC 5263)."""
    event_id: str | None = None
    """The Event header's ``id`` parameter, echoed in every NOTIFY."""
    display_name: str | None = None
    flow: bool = False
    """NOTIFYs go back the way the watcher's requests come (RFC 5626 ``ob``, see ``Dialog``)."""

    def record(self) -> SubscriptionRecord:
        """A record is its own :class:`SavedSubscription`."""
        return self


class SavedSubscription(Protocol):
    """What :meth:`SubscriptionStore.save_subscription` takes: a live subscription or a record.

    A store may call :meth:`record` later than the save (a write-behind store builds the row
    when it commits, so a subscription that ends before then costs no row at all)."""

    @property
    def id(self) -> str: ...

    def record(self) -> SubscriptionRecord:
        """The row as it is now."""
        ...


class SubscriptionStore(Protocol):
    """Durable storage of subscriptions (SQLite in a node, memory in unit tests)."""

    def load_subscriptions(self, now: float) -> list[SubscriptionRecord]:
        """Every unexpired subscription (expired rows are deleted, never loaded)."""
        ...

    def save_subscription(self, subscription: SavedSubscription) -> None:
        """Insert or replace one subscription (its newest state: see :class:`SavedSubscription`)."""
        ...

    def save_cseq(self, subscription_id: str, cseq_reserved: int) -> None:
        """Record a new CSeq block for one subscription."""
        ...

    def delete_subscription(self, subscription_id: str) -> None:
        """Forget one subscription (no error when absent)."""
        ...
