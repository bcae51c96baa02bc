"""Sans-IO SIP message layer: bytes <-> :class:`Request` / :class:`Response`."""

from __future__ import annotations

from .errors import RemoteProtocolError, SipParseError
from .framing import StreamBuffer
from .headers import Headers
from .message import CSeq, EventHeader, Request, Response, SubscriptionState
from .parser import ParseFailure, parse_message
from .responses import make_response
from .serializer import to_bytes
from .status import StatusCode, reason_phrase
from .uri import AbsoluteUri, NameAddr, SipUri, TelUri, Via, parse_name_addr, parse_uri, parse_via

__all__ = [
    "AbsoluteUri",
    "CSeq",
    "EventHeader",
    "Headers",
    "NameAddr",
    "ParseFailure",
    "RemoteProtocolError",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "StatusCode",
    "StreamBuffer",
    "SubscriptionState",
    "TelUri",
    "Via",
    "make_response",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "to_bytes",
]
