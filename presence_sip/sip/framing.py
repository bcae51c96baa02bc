"""Content-Length framing of a SIP byte stream (TCP/TLS, RFC 3261 §18.3), with a size cap."""

from __future__ import annotations

import re
from typing import NoReturn

from .errors import SipParseError

# RFC 3261 §20.14 / §7.3.3: "Content-Length" or its compact form "l", any case, LWS before ':'.
_CONTENT_LENGTH = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)


class StreamBuffer:
    """Accumulates stream bytes and yields whole messages.

    ``feed(data)`` then call ``next_message()`` until it returns None.  A framing error (missing or
    bad Content-Length, header block over the size cap) raises :class:`SipParseError`; framing is
    then lost and the buffer stays in error (the connection must be closed, RFC 4475 ncl/mcl01).
    CRLF keep-alives (RFC 5626 §3.5.1) between messages are skipped and counted in ``pings``.
    """

    __slots__ = ("_buf", "_error", "max_size", "pings")

    def __init__(self, max_size: int = 65535) -> None:
        self._buf = bytearray()
        self._error: tuple[str, int] | None = None
        """(reason, status) of the failure that lost the framing.  Kept as values: a kept
        exception would hold its traceback, whose frames hold this buffer (a reference cycle
        that only the cyclic collector frees, see ``runtime.gc_policy``)."""
        self.max_size = max_size
        self.pings = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes (ignored once the buffer is in error)."""
        if self._error is None:
            self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    def next_message(self) -> bytes | None:
        """The next complete message (headers + body), or None when more bytes are needed."""
        if self._error is not None:
            raise SipParseError(*self._error)
        buf = self._buf
        while buf.startswith(b"\r\n"):
            del buf[:2]
            self.pings += 1
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.max_size:
                self._fail("Message too large", 513)
            return None
        total = end + 4 + self._content_length(bytes(buf[:end]))
        if total > self.max_size:
            self._fail("Message too large", 513)
        if len(buf) < total:
            return None
        message = bytes(buf[:total])
        del buf[:total]
        return message

    def _content_length(self, head: bytes) -> int:
        unfolded = head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
        lengths = _CONTENT_LENGTH.findall(unfolded)
        if not lengths:
            self._fail("Missing Content-Length")  # RFC 3261 §18.3: mandatory on a stream
        if len(lengths) > 1:
            self._fail("Multiple Content-Length headers")  # RFC 4475 mcl01
        text = lengths[0]
        if not text.isdigit():
            self._fail("Malformed Content-Length")  # RFC 4475 ncl: never use it as a count
        return int(text)

    def _fail(self, reason: str, status: int = 400) -> NoReturn:
        self._error = (reason, status)
        self._buf.clear()
        raise SipParseError(reason, status)
