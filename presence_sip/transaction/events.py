"""What the transaction layer tells its user (the TU), drained with ``next_event()``.

Immutable records with a docstring per field (STYLE.md §3; h2 ``events.py``).  NamedTuples, not
frozen dataclasses: about four are built per SUBSCRIBE/NOTIFY cycle and a NamedTuple builds in
roughly half the time (issue 8), faster still with positional arguments (fields in order).
"""

from __future__ import annotations

from typing import NamedTuple

from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer


class TransactionKey(NamedTuple):
    """Identifies one transaction (RFC 3261 §17.1.3 client side, §17.2.3 server side).

    A tuple, so it hashes fast.  Client keys have an empty ``sent_by``; server keys never do.
    """

    branch: str
    """Top Via branch.  For a request without a usable RFC 3261 branch (RFC 2543 peers), a
    composite of Request-URI, From tag, To tag, Call-ID, CSeq number and top Via instead."""
    method: str
    """Method of the request that created the transaction (ACK is matched as INVITE)."""
    sent_by: str = ""
    """Server keys: the top Via sent-by, ``host:port`` (host lower-case); client keys: ``""``."""

    @property
    def server(self) -> bool:
        """True for a server transaction key."""
        return bool(self.sent_by)


class RequestReceived:
    """A new request: a server transaction was created (or a stray ACK is passed up).

    This event and :class:`ResponseReceived`, one per message, are plain classes, not
    NamedTuples: compiled by mypyc they build in ~40 ns, where a NamedTuple's Python-level
    ``__new__`` takes ~400 ns (issue 8).  They compare by identity.
    """

    __slots__ = ("key", "request", "source")

    def __init__(self, request: Request, source: Peer, key: TransactionKey | None) -> None:
        self.request = request
        """The request, its top Via stamped with ``received``/``rport`` (RFC 3261 §18.2.1)."""
        self.source = source
        """Where it came from (with the stream connection id on TCP/TLS)."""
        self.key = key
        """The server transaction to answer through with ``respond``; None for an ACK that
        matches no transaction (the ACK for a 2xx, RFC 3261 §17.2.3), never to be answered."""

    def __repr__(self) -> str:
        return f"RequestReceived({self.request.method} from {self.source}, key={self.key})"


class ResponseReceived:
    """A response for one of our client transactions: every 1xx, and the first final response.

    Retransmissions of the final response are absorbed (RFC 3261 §17.1.2.2).  A plain class,
    like :class:`RequestReceived`.
    """

    __slots__ = ("key", "request", "response", "source")

    def __init__(
        self, response: Response, source: Peer, key: TransactionKey, request: Request
    ) -> None:
        self.response = response
        """The response as received."""
        self.source = source
        """Where it came from."""
        self.key = key
        """The client transaction it belongs to."""
        self.request = request
        """The request that transaction sent."""

    def __repr__(self) -> str:
        return f"ResponseReceived({self.response.status} from {self.source}, key={self.key})"


class TransactionTimedOut(NamedTuple):
    """A transaction ended without its exchange completing.

    Client side: Timer F fired or the transport failed (RFC 3261 §17.1.2.2, §17.1.4); the TU acts as
    if it had received 408 (timeout) or 503 (transport error), RFC 3261 §8.1.3.1.  Server side:
    Timer H fired, the ACK for an INVITE's final response never came (§17.2.1).
    """

    key: TransactionKey
    """The transaction that ended."""
    request: Request
    """The request that created it."""
    transport_error: bool = False
    """True when the stream connection was lost rather than Timer F/H firing."""


class StrayResponse(NamedTuple):
    """A response that matches no client transaction (RFC 3261 §17.1.3, §18.1.2).

    A stateful proxy may still want to see it (a 2xx retransmission for INVITE); others drop it.
    """

    response: Response
    """The response as received."""
    source: Peer
    """Where it came from."""


Event = RequestReceived | ResponseReceived | TransactionTimedOut | StrayResponse
"""Any transaction-layer event."""

__all__ = [
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "StrayResponse",
    "TransactionKey",
    "TransactionTimedOut",
]
