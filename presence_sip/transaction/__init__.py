"""Sans-IO RFC 3261 §17 transactions: state tables, transactions, and the manager that runs them.

Usage: one :class:`TransactionManager` per node.  ``receive(message, source, now)``,
``respond(key, response, now)``, ``send_request(request, destination, now)``; then drain
``next_event()`` and ``outbox()`` and arm one timer for ``get_timer()`` (``handle_timer(now)``).
"""

from __future__ import annotations

from .client import ClientTransaction
from .context import STAT_NAMES
from .events import (
    Event,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTimedOut,
)
from .manager import DEFAULT_TIMERS, TransactionManager
from .server import InviteServerTransaction, ServerTransaction, response_destination, stamp_via
from .states import (
    INVITE_SERVER_TRANSITIONS,
    NON_INVITE_CLIENT_TRANSITIONS,
    NON_INVITE_SERVER_TRANSITIONS,
    TRANSITIONS,
    Input,
    Machine,
    SideEffect,
    State,
)

__all__ = [
    "DEFAULT_TIMERS",
    "INVITE_SERVER_TRANSITIONS",
    "NON_INVITE_CLIENT_TRANSITIONS",
    "NON_INVITE_SERVER_TRANSITIONS",
    "STAT_NAMES",
    "TRANSITIONS",
    "ClientTransaction",
    "Event",
    "Input",
    "InviteServerTransaction",
    "Machine",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "SideEffect",
    "State",
    "StrayResponse",
    "TransactionKey",
    "TransactionManager",
    "TransactionTimedOut",
    "response_destination",
    "stamp_via",
]
