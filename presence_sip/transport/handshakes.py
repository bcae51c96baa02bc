"""Inbound TLS handshakes as the driver keeps count of them, off the request path.

The pending ones are bounded by ``max_connections`` (``Driver.spawn``): what is refused then is
warned about once a minute.  An aborted one leaves C heap that glibc keeps (runtime/heap.py):
after many, the heap is trimmed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from presence_sip.log_limit import LogLimit
from presence_sip.runtime.heap import trim_heap

# The driver's logger: these lines keep the name operators (and their log filters) know.
logger = logging.getLogger("presence_sip.transport.driver")

HANDSHAKE_TIMEOUT = 10.0
"""Seconds an inbound TLS handshake may take, from its start (one timer, which a ClientHello
trickled a byte at a time does not push back); the connection counts towards
``max_connections_per_source`` meanwhile."""
TRIM_AFTER_HANDSHAKES = 500
"""Aborted inbound TLS handshakes after which the C heap is trimmed ..."""
TRIM_INTERVAL = 5.0
"""... at most once per this many seconds (on a thread: a trim walks the heap, 5-30 ms) ..."""
TRIM_DELAY = 1.0
"""... and this long after the threshold is reached, once the burst has ended."""


class HandshakeBookkeeping:
    """Refused and aborted inbound TLS handshakes: the warning, and the heap trim."""

    __slots__ = ("_aborted_since_trim", "_refused", "_trim", "_trimmed_at")

    def __init__(self) -> None:
        self._refused = LogLimit()
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
        """The driver stops: a trim scheduled does not run."""
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None

    def _trim_heap(self, loop: asyncio.AbstractEventLoop) -> None:
        self._trim = None
        self._aborted_since_trim = 0
        self._trimmed_at = time.monotonic()
        loop.run_in_executor(None, trim_heap)
