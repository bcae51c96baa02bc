"""Exception tree of presence-sip (STYLE.md section 4).

``SipError`` is the root.  ``RemoteProtocolError`` means the peer sent something bad and carries
the SIP status and a reason naming the defect, so the layer that catches it can answer with exactly
that.
"""

from __future__ import annotations


class SipError(Exception):
    """Root of every exception raised by presence-sip."""


class ProtocolError(SipError):
    """A SIP protocol rule was broken, by us or by the peer."""


class LocalProtocolError(ProtocolError):
    """Our own misuse of an API or state machine (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol.

    ``status`` is the SIP response code to answer with and ``reason`` names the defect
    ("Missing Call-ID", "Malformed Via", ...).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class SipParseError(RemoteProtocolError):
    """Bytes that are not a well-formed SIP message."""


class TransportError(SipError):
    """A socket or TLS failure, mapped from ``OSError`` / ``ssl.SSLError`` at the edge."""


class PidfError(RemoteProtocolError):
    """A presence document that is not acceptable (bad XML, wrong namespace, missing fields)."""


class StoreError(SipError):
    """A storage backend failed or refused an operation."""


class ConfigError(SipError):
    """Invalid configuration or command line; shown to the user as one line."""
