"""In-memory presence store (unit tests): the same contract as :mod:`sqlite_presence`."""

from __future__ import annotations

import dataclasses

from presence_sip.presence.publications import PublicationRecord
from presence_sip.presence.subscriptions import SavedSubscription, SubscriptionRecord

__all__ = ["MemoryPresenceStore"]


class MemoryPresenceStore:
    """Publications and subscriptions kept in dictionaries; survives a simulated restart when
    the same instance is handed to a new presence server."""

    def __init__(self) -> None:
        self.publications: dict[str, PublicationRecord] = {}
        self.subscriptions: dict[str, SubscriptionRecord] = {}
        self.writes = 0

    def load_publications(self, now: float) -> list[PublicationRecord]:
        return sorted(self.publications.values(), key=lambda r: r.seq)

    def save_publication(self, record: PublicationRecord, replaces: str | None) -> None:
        self.writes += 1
        if replaces is not None:
            self.publications.pop(replaces, None)
        self.publications[record.etag] = record

    def delete_publication(self, etag: str) -> None:
        self.writes += 1
        self.publications.pop(etag, None)

    def load_subscriptions(self, now: float) -> list[SubscriptionRecord]:
        self.subscriptions = {k: r for k, r in self.subscriptions.items() if r.expires_at > now}
        return list(self.subscriptions.values())

    def save_subscription(self, subscription: SavedSubscription) -> None:
        self.writes += 1
        self.subscriptions[subscription.id] = subscription.record()

    def save_cseq(self, subscription_id: str, cseq_reserved: int) -> None:
        self.writes += 1
        record = self.subscriptions.get(subscription_id)
        if record is not None:
            self.subscriptions[subscription_id] = dataclasses.replace(
                record, cseq_reserved=cseq_reserved
            )

    def delete_subscription(self, subscription_id: str) -> None:
        self.writes += 1
        self.subscriptions.pop(subscription_id, None)
