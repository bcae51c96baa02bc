"""HSS: subscriber records and the ``SubscriberStore`` port (sans-IO).

Implementations of the port are in ``presence_sip.storage``; the operator CLI is
``presence-sip hss`` (``presence_sip.cli.hss``).
"""

from __future__ import annotations

from presence_sip.hss.msisdn import (
    InvalidMsisdn,
    canonical_identity,
    is_msisdn,
    msisdn_from_identity,
    msisdn_from_uri,
    msisdn_from_username,
    normalize_msisdn,
    normalize_prefix,
)
from presence_sip.hss.records import (
    DEFAULT_DOMAIN,
    InvalidRecord,
    PlanEntry,
    PortEntry,
    PresenceServerRecord,
    Rule,
    RuleAction,
    Subscriber,
)
from presence_sip.hss.store import (
    DuplicateRecord,
    InsufficientCredit,
    SubscriberStore,
    UnknownRecord,
)

__all__ = [
    "DEFAULT_DOMAIN",
    "DuplicateRecord",
    "InsufficientCredit",
    "InvalidMsisdn",
    "InvalidRecord",
    "PlanEntry",
    "PortEntry",
    "PresenceServerRecord",
    "Rule",
    "RuleAction",
    "Subscriber",
    "SubscriberStore",
    "UnknownRecord",
    "canonical_identity",
    "is_msisdn",
    "msisdn_from_identity",
    "msisdn_from_uri",
    "msisdn_from_username",
    "normalize_msisdn",
    "normalize_prefix",
]
