"""Inbound TLS handshakes as the driver keeps count of them, off the request path.

The pending ones are bounded by ``max_connections`` (``Driver.spawn``): what is refused then is
warned about once a minute.  A failed one is an INFO line, a few a minute per source and a few
more in all at most, the others counted in one line (a handshake flood would fill the log, and a
flood from one source would hide the others' lines).  An aborted one leaves C heap that
glibc keeps (runtime/heap.py): after many, the heap is trimmed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from presence_sip.log_limit import LogLimit, SourceBurst
from presence_sip.runtime.heap import trim_heap

# The driver's logger, and the stream's for failed handshakes: these lines keep the names
# operators (and their log filters) know.
logger = logging.getLogger("presence_sip.transport.driver")
failed_logger = logging.getLogger("presence_sip.transport.stream")

HANDSHAKE_TIMEOUT = 10.0
"""Seconds an inbound TLS handshake may take, from its start (one timer, which a ClientHello
trickled a byte at a time does not push back); the connection counts towards
``max_connections_per_source`` meanwhile."""
FAILED_LINES_PER_SOURCE = 3
"""Failed inbound handshakes logged one by one per :data:`FAILED_INTERVAL` (from the first
failed handshake) from one source address: each names its source, worth a line while they are
few (a phone that does not trust the node's certificate); the others are counted, in one line
when the interval ends.  Per source, so that a flood from one address cannot hide a phone's
line."""
FAILED_LINES = 20
"""Failed inbound handshakes logged one by one per :data:`FAILED_INTERVAL`, from all sources
(a flood from many addresses cannot fill the log either)."""
FAILED_SOURCES = 1024
"""Source addresses whose failed handshakes not logged are counted one by one per line that
says how many (the memory stays bounded under a flood from many addresses: past that, they
are counted in the total only)."""
FAILED_INTERVAL = 60.0
"""Seconds of :data:`FAILED_LINES_PER_SOURCE` and :data:`FAILED_LINES`."""
TRIM_AFTER_HANDSHAKES = 500
"""Aborted inbound TLS handshakes after which the C heap is trimmed ..."""
TRIM_INTERVAL = 5.0
"""... at most once per this many seconds (on a thread: a trim walks the heap, 5-30 ms) ..."""
TRIM_DELAY = 1.0
"""... and this long after the threshold is reached, once the burst has ended."""


class HandshakeBookkeeping:
    """Refused, failed and aborted inbound TLS handshakes: the warning, the log lines of failed
    ones, and the heap trim."""

    __slots__ = (
        "_aborted_since_trim",
        "_failed",
        "_refused",
        "_summary",
        "_trim",
        "_trimmed_at",
        "failures",
    )

    def __init__(self) -> None:
        self._refused = LogLimit()
        self._failed = SourceBurst(
            FAILED_LINES, FAILED_LINES_PER_SOURCE, FAILED_SOURCES, FAILED_INTERVAL
        )
        self.failures = 0
        """Inbound handshakes failed or timed out since start, logged or not (the status)."""
        self._summary: asyncio.TimerHandle | None = None
        self._aborted_since_trim = 0
        self._trimmed_at = float("-inf")
        self._trim: asyncio.TimerHandle | None = None

    def refused(self, pending: int) -> None:
        """A handshake was refused, ``pending`` tasks running (max_connections).  Refusing
        handshakes is when an operator needs to know why peers cannot connect (a flood of
        connections that never finish theirs): once a minute at most."""
        if self._refused.due(time.monotonic()):
            logger.warning(
                "refusing TLS connections: %d handshakes pending (max_connections); %d refused",
                pending,
                self._refused.count,
            )

    def ended(
        self, peer: tuple[str, int], reason: str | None, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        """An inbound handshake from ``peer`` was aborted: its line when it failed or timed out
        (``reason``: :meth:`failed`), and the heap trim (:meth:`aborted`)."""
        if reason is not None:
            self.failed(peer, reason, loop)
        self.aborted(loop)

    def failed(
        self, peer: tuple[str, int], reason: str, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        """An inbound handshake from ``peer`` failed or timed out: an INFO line, up to
        :data:`FAILED_LINES_PER_SOURCE` per source address and :data:`FAILED_LINES` in all per
        :data:`FAILED_INTERVAL`.  With the flood guard off, or from many sources, a handshake
        flood made one line each; past the limits they are counted, and one line says how many
        when the interval ends (on ``loop``; ``None``: the driver is stopping, and
        :meth:`cancel` says it once its handshakes have ended)."""
        self.failures += 1
        now = time.monotonic()
        if self._failed.due(peer[0], now, reason):
            failed_logger.info("TLS handshake from %s failed: %s", peer, reason)
            return
        if self._summary is None and loop is not None:
            delay = max(0.0, self._failed.ends - now)
            self._summary = loop.call_later(delay, self._summarize_failed)

    def _summarize_failed(self) -> None:
        """The line for the failed handshakes not logged (none: no line)."""
        self._summary = None
        unlogged = self._failed.take_unlogged()
        if unlogged is not None:
            failed_logger.info(
                "%d more TLS handshakes failed, not logged (%d lines a source, %d in all, in %g s"
                " at most), from %s%d source(s); the most from %s (%d), the latest: %s",
                unlogged.total,
                self._failed.per_source,
                self._failed.lines,
                self._failed.interval,
                "more than " if unlogged.more_sources else "",
                unlogged.sources,
                unlogged.top,
                unlogged.top_count,
                unlogged.top_detail,
            )

    def aborted(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """An inbound handshake was aborted.  It left C heap glibc keeps (runtime/heap.py):
        after many, give it back, a second after the burst (a flood times out together, and
        trimming in the middle of one gives back only half of it), on a thread of ``loop`` (a
        trim walks the whole heap).  ``loop`` None: the driver is stopped, nothing is
        scheduled."""
        self._aborted_since_trim += 1
        if (
            self._aborted_since_trim >= TRIM_AFTER_HANDSHAKES
            and self._trim is None
            and loop is not None
        ):
            delay = max(TRIM_DELAY, self._trimmed_at + TRIM_INTERVAL - time.monotonic())
            self._trim = loop.call_later(delay, self._trim_heap, loop)

    def cancel(self) -> None:
        """The driver has stopped (its handshake tasks have ended: call it after them): a trim
        scheduled does not run; the failed handshakes not logged yet, those reported while it
        was stopping included, are counted in their line now."""
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        if self._summary is not None:
            self._summary.cancel()
        self._summarize_failed()

    def _trim_heap(self, loop: asyncio.AbstractEventLoop) -> None:
        self._trim = None
        self._aborted_since_trim = 0
        self._trimmed_at = time.monotonic()
        loop.run_in_executor(None, trim_heap)
