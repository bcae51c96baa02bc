"""What the transaction manager shares with its transactions (RFC 3261 §17): :class:`Context`.

The tables of live transactions, the outbox, the events for the TU, the counters, and the timers.
:class:`~presence_sip.transaction.manager.TransactionManager` owns one; its transactions call
:meth:`Context.transmit`, :meth:`Context.arm`, :meth:`Context.cancel`, :meth:`Context.forget`,
:meth:`Context.linger` and :meth:`Context.emit`.

Timers of all transactions share one heap of ``(deadline, seq, transaction, timer)`` entries with
lazy deletion: cancelling or re-arming only changes the transaction's ``armed`` map, and stale heap
entries are skipped when they surface (or dropped by a periodic rebuild).

A non-INVITE transaction in Completed over UDP has one job left until Timer J (server, 64*T1) or
Timer K (client, T4): answer or absorb retransmissions.  Such a transaction *lingers*: the object
is dropped and one plain tuple ``(deadline, response bytes, reply host, reply port)`` stays in
``Context.lingering`` until its timer.  Timer J has the same duration for every transaction, and so
has Timer K: each expires in the order it was armed, so one FIFO per timer (two parallel deques,
:class:`Expiry`) replaces the heap for them.  Tens of thousands of transactions wait there under
load; plain tuples of strings, bytes and numbers are invisible to the cyclic GC, objects and
NamedTuples are not (issue 8).
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from typing import Final, Protocol

from presence_sip.config import Timers
from presence_sip.sharded import ShardedDict
from presence_sip.sip.peer import Peer

from .client import ClientTransaction
from .events import Event, TransactionKey
from .server import InviteServerTransaction, ServerTransaction
from .states import Input

# The logger of the module this code came from (transaction/manager.py): log queries and
# fail2ban-style filters match logger names, so operators keep seeing the same one.
logger = logging.getLogger("presence_sip.transaction.manager")

STAT_NAMES = (
    "requests_received",
    "requests_absorbed",
    "responses_resent",
    "responses_retransmitted",
    "responses_discarded",
    "requests_sent",
    "requests_retransmitted",
    "responses_received",
    "responses_absorbed",
    "acks_absorbed",
    "stray_acks",
    "stray_responses",
    "timeouts",
    "transport_errors",
    "dropped",
    "overload_rejected",
    "lingering_shed",
    "abandoned",
    "requests_moved_to_tcp",
    "stream_fallbacks",
)
"""The counters in :attr:`Context.stats` (``TransactionManager.stats``), all starting at 0."""

_COMPACT_MIN: Final = 1024


STREAM_FAILED_FOR: Final = 300.0
"""Seconds an address whose TCP connection failed gets its large requests over UDP directly
(RFC 3261 §18.1.1 fallback), instead of another attempt that would fail the same way."""

STREAM_FAILED_MAX: Final = 4096
"""Addresses remembered so at once; the oldest goes first."""

PlainKey = tuple[str, str, str]
"""A :class:`TransactionKey` as a plain tuple (equal and hashing alike; untracked by the GC)."""

Lingering = tuple[float, bytes, str, int]
"""A Completed non-INVITE UDP transaction: (deadline, response bytes, reply host, reply port); a
client transaction keeps ``b""``, ``""``, 0.  The deadline is the float object its FIFO entry holds
too: it tells that entry from an older one of the same key, without a sequence number."""


def plain(key: TransactionKey) -> PlainKey:
    """``key`` as a plain tuple: a NamedTuple is always tracked by the GC, a tuple of str not."""
    return (key.branch, key.method, key.sent_by)


class Expiry:
    """Lingering records of one fixed-duration timer (J or K), in the order they expire.

    Parallel deques instead of one tuple per entry: nothing here for the cyclic GC to visit.  An
    entry whose key lingers again later (a newer record, a later deadline) ends nothing.
    """

    __slots__ = ("deadlines", "keys")

    def __init__(self) -> None:
        self.deadlines: deque[float] = deque()
        self.keys: deque[PlainKey] = deque()

    def append(self, deadline: float, key: PlainKey) -> None:
        self.deadlines.append(deadline)
        self.keys.append(key)

    def expire(self, now: float, lingering: ShardedDict[PlainKey, Lingering]) -> None:
        """Drop the records due at ``now``."""
        deadlines, keys = self.deadlines, self.keys
        while deadlines and deadlines[0] <= now:
            deadline = deadlines.popleft()
            key = keys.popleft()
            record = lingering.get(key)
            if record is not None and record[0] == deadline:
                del lingering[key]

    def drop_oldest(self, lingering: ShardedDict[PlainKey, Lingering]) -> bool:
        """Drop the record due first, before its deadline; False when none is left."""
        deadlines, keys = self.deadlines, self.keys
        while deadlines:
            deadline = deadlines.popleft()
            key = keys.popleft()
            record = lingering.get(key)
            if record is not None and record[0] == deadline:
                del lingering[key]
                return True
        return False


class Timed(Protocol):
    """Anything with timers in the heap: a transaction."""

    armed: dict[Input, int]
    """Live timers: timer -> sequence number of its heap entry."""

    def fire(self, timer: Input, now: float) -> None: ...


ServerTx = ServerTransaction | InviteServerTransaction


class Context:
    """What the manager shares with its transactions: tables, timers, outbox, events, counters.

    Internal to the package; transactions call :meth:`transmit`, :meth:`arm`, :meth:`cancel`,
    :meth:`forget`, :meth:`linger` and :meth:`emit`.
    """

    __slots__ = (
        "clients",
        "events",
        "expiry_j",
        "expiry_k",
        "heap",
        "lingering",
        "live",
        "outbox",
        "seq",
        "servers",
        "stats",
        "stream_failures",
        "streams",
        "timers",
    )

    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        # Keyed by TransactionKey; typed by its plain form, which FIFO entries look up with.
        self.clients: dict[PlainKey, ClientTransaction] = {}
        self.servers: dict[PlainKey, ServerTx] = {}
        self.lingering: ShardedDict[PlainKey, Lingering] = ShardedDict()
        """Completed non-INVITE UDP transactions, client and server, waiting for Timer J/K
        (sharded: tens of thousands under load, and no insertion may copy them all)."""
        self.events: deque[Event] = deque()
        self.outbox: list[tuple[bytes, Peer]] = []
        self.heap: list[tuple[float, int, Timed, Input]] = []
        self.expiry_j = Expiry()
        """Lingering server transactions (Timer J)."""
        self.expiry_k = Expiry()
        """Lingering client transactions (Timer K)."""
        self.seq = 0
        self.live = 0
        """Armed heap timers."""
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.stream_failures: dict[tuple[str, int], float] = {}
        """(host, port) -> until when its large requests go over UDP (:data:`STREAM_FAILED_FOR`)."""
        self.streams: dict[tuple[str, str, int], dict[PlainKey, ClientTransaction]] = {}
        """Client transactions in flight over a stream transport, by (transport, host, port) of
        their destination: what a lost connection fails without a scan of every transaction."""

    def transmit(self, data: bytes, peer: Peer) -> None:
        self.outbox.append((data, peer))

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def carry(self, txn: ClientTransaction) -> None:
        """Index ``txn``, sent over a stream transport, by its destination's address."""
        dest = txn.destination
        address = (dest.transport, dest.host, dest.port)
        carried = self.streams.get(address)
        if carried is None:
            carried = self.streams[address] = {}
        carried[txn.key] = txn

    def uncarry(self, txn: ClientTransaction) -> None:
        """Drop ``txn`` from the index of :meth:`carry` (it ended or left its stream)."""
        dest = txn.destination
        address = (dest.transport, dest.host, dest.port)
        carried = self.streams.get(address)
        if carried is not None and carried.get(txn.key) is txn:
            del carried[txn.key]
            if not carried:
                del self.streams[address]

    def stream_failed(self, peer: Peer, now: float) -> None:
        """A TCP connection to ``peer`` for a request moved off UDP failed (§18.1.1)."""
        failures = self.stream_failures
        address = (peer.host, peer.port)
        failures.pop(address, None)
        if len(failures) >= STREAM_FAILED_MAX:
            del failures[next(iter(failures))]
        failures[address] = now + STREAM_FAILED_FOR
        # (Debug: one per watcher that takes no TCP; the driver's warning counts them.)
        logger.debug("no TCP connection to %s for a request over the UDP size limit", peer)

    def stream_usable(self, host: str, port: int, now: float) -> bool:
        """False while a failed TCP connection to (host, port) is remembered."""
        until = self.stream_failures.get((host, port))
        if until is None:
            return True
        if until > now:
            return False
        del self.stream_failures[(host, port)]
        return True

    def arm(self, owner: Timed, timer: Input, deadline: float) -> None:
        """(Re)arm ``timer`` of ``owner`` to fire at ``deadline``."""
        self.seq += 1
        if timer not in owner.armed:
            self.live += 1
        owner.armed[timer] = self.seq
        heapq.heappush(self.heap, (deadline, self.seq, owner, timer))
        self._maybe_compact()

    def linger(
        self, key: TransactionKey, deadline: float, data: bytes = b"", reply_to: Peer | None = None
    ) -> None:
        """Replace the transaction ``key`` (Completed over UDP) by a record until ``deadline``.

        Deadlines must not decrease from one call to the next (``now`` + the Timer J or K
        constant); a clock that steps back only delays the records queued behind the late one.
        The caller has forgotten the transaction's heap timers.
        """
        if key.sent_by:
            del self.servers[key]
            expiry = self.expiry_j
        else:
            del self.clients[key]
            expiry = self.expiry_k
        plain_key = plain(key)
        if reply_to is None:
            self.lingering[plain_key] = (deadline, data, "", 0)
        else:
            self.lingering[plain_key] = (deadline, data, reply_to.host, reply_to.port)
        expiry.append(deadline, plain_key)

    def shed(self) -> bool:
        """Make room for one transaction: drop the lingering record closest to its deadline.

        A Completed non-INVITE transaction only absorbs retransmissions of its request (RFC 3261
        §17.2.2, §17.1.2.2); ending it early costs at most a late retransmission being handled
        as a new request, where refusing new work costs every caller a 503.  False when no
        record is left to drop.
        """
        first, second = self.expiry_j, self.expiry_k
        if not first.deadlines or (second.deadlines and second.deadlines[0] < first.deadlines[0]):
            first, second = second, first
        return first.drop_oldest(self.lingering) or second.drop_oldest(self.lingering)

    def cancel(self, owner: Timed, timer: Input) -> None:
        if owner.armed.pop(timer, None) is not None:
            self.live -= 1
            self._maybe_compact()  # the heap entry went stale

    def forget(self, owner: Timed) -> None:
        """Cancel every timer of ``owner`` (it terminated)."""
        self.live -= len(owner.armed)
        owner.armed.clear()
        self._maybe_compact()  # its heap entries went stale

    def _maybe_compact(self) -> None:
        """Rebuild the heap when most of its entries are stale."""
        if len(self.heap) > _COMPACT_MIN and len(self.heap) > 2 * self.live:
            self._compact()

    def _compact(self) -> None:
        self.heap = [entry for entry in self.heap if entry[2].armed.get(entry[3]) == entry[1]]
        heapq.heapify(self.heap)


__all__ = [
    "STAT_NAMES",
    "STREAM_FAILED_MAX",
    "Context",
    "Expiry",
    "Lingering",
    "PlainKey",
    "ServerTx",
    "Timed",
    "plain",
]
