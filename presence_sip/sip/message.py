"""SIP messages: :class:`Request` and :class:`Response`, and the typed values of their fields.

The header fields are a :class:`~presence_sip.sip.headers.Headers` (``headers.py``): names in
their full canonical form, values ``str`` exactly as received after line folding.  Typed accessors
(``via``, ``cseq``, ``from_``, ``event`` ...) parse on first use and cache the result; malformed
values raise :class:`SipParseError` naming the header.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from . import grammar
from .errors import SipParseError
from .headers import Headers
from .memo import remember
from .uri import (
    NameAddr,
    Params,
    Uri,
    Via,
    get_param,
    parse_header_params,
    parse_name_addr,
    parse_uri,
    parse_via,
)


class CSeq(NamedTuple):
    """``CSeq: 1*DIGIT LWS Method`` (RFC 3261 §20.16); a NamedTuple like the values of ``uri``."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@dataclass(frozen=True, slots=True)
class EventHeader:
    """``Event: event-type *( SEMI event-param )`` (RFC 6665 §8.2.1)."""

    package: str
    params: Params = ()

    @property
    def id(self) -> str | None:
        return get_param(self.params, "id")

    def __str__(self) -> str:
        return self.package + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """``Subscription-State: substate-value *( SEMI subexp-params )`` (RFC 6665 §8.2.3)."""

    state: str
    params: Params = ()

    @property
    def expires(self) -> int | None:
        value = get_param(self.params, "expires")
        return int(value) if value and value.isdigit() else None

    @property
    def reason(self) -> str | None:
        return get_param(self.params, "reason")


@dataclass(frozen=True, slots=True)
class ContentType:
    """``m-type / m-subtype *( SEMI m-parameter )``, type and subtype lower-cased."""

    type: str
    subtype: str
    params: Params = ()

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"


_CSEQ_CACHE: Final[dict[str, CSeq]] = {}
"""CSeq values already parsed, by text ("1 SUBSCRIBE", "2 NOTIFY"... recur in every dialog)."""


def parse_cseq(value: str) -> CSeq:
    found = _CSEQ_CACHE.get(value)
    if found is None:
        found = remember(_CSEQ_CACHE, value, _parse_cseq(value))
    return found


def _parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not grammar.METHOD.fullmatch(parts[1]):
        raise SipParseError("Malformed CSeq")
    seq = int(parts[0])
    if seq > grammar.MAX_UINT32:
        raise SipParseError("CSeq out of range")
    return CSeq(seq, parts[1])


def parse_max_forwards(value: str) -> int:
    """``Max-Forwards = 1*DIGIT``, at most 255 (RFC 3261 §20.22)."""
    text = value.strip()
    if not text.isdigit() or not text.isascii() or int(text) > 255:
        raise SipParseError("Malformed Max-Forwards")
    return int(text)


def parse_delta_seconds(value: str, name: str) -> int:
    """``delta-seconds = 1*DIGIT``; values above 2**32-1 are clamped (RFC 3261 §20.19)."""
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise SipParseError(f"Malformed {name}")
    return min(int(text), grammar.MAX_UINT32)


def parse_token_with_params(value: str, name: str) -> tuple[str, Params]:
    match = grammar.TOKEN.match(value.strip(" \t"))
    if match is None:
        raise SipParseError(f"Malformed {name}")
    text = value.strip(" \t")
    return match.group(), parse_header_params(text[match.end() :], name)


def parse_content_type(value: str) -> ContentType:
    text = value.strip(" \t")
    match = grammar.MEDIA_TYPE.match(text)
    if match is None:
        raise SipParseError("Malformed Content-Type")
    params = parse_header_params(text[match.end() :], "Content-Type")
    return ContentType(match.group(1).lower(), match.group(2).lower(), params)


class Message:
    """Fields and typed accessors shared by :class:`Request` and :class:`Response`."""

    __slots__ = ("_cache", "body", "headers")

    def __init__(self, headers: Headers, body: bytes = b"") -> None:
        self.headers = headers
        self.body = body
        self._cache: dict[str, object] = {}

    def invalidate(self) -> None:
        """Forget cached typed values after editing ``headers``."""
        self._cache.clear()

    def seed(self, *, cseq: CSeq | None = None, top_via: Via | None = None) -> None:
        """Give the typed values of fields the caller has just written (no parse of them later):
        ``cseq`` and ``top_via`` must be what parsing the CSeq and the top Via would give."""
        if cseq is not None:
            self._cache["cseq"] = cseq
        if top_via is not None:
            self._cache["top_via"] = top_via

    def _single(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"Missing {name}")
        return value

    @property
    def call_id(self) -> str:
        return self._single("Call-ID").strip()

    @property
    def cseq(self) -> CSeq:
        cached = self._cache.get("cseq")
        if cached is None:
            cached = self._cache["cseq"] = parse_cseq(self._single("CSeq"))
        return cached  # type: ignore[return-value]

    @property
    def from_(self) -> NameAddr:
        cached = self._cache.get("from")
        if cached is None:
            cached = self._cache["from"] = parse_name_addr(self._single("From"), "From")
        return cached  # type: ignore[return-value]

    @property
    def to(self) -> NameAddr:
        cached = self._cache.get("to")
        if cached is None:
            cached = self._cache["to"] = parse_name_addr(self._single("To"), "To")
        return cached  # type: ignore[return-value]

    @property
    def vias(self) -> list[Via]:
        cached = self._cache.get("via")
        if cached is None:
            items = self.headers.values("Via")
            if not items:
                raise SipParseError("Missing Via")
            cached = self._cache["via"] = [parse_via(item) for item in items]
        return cached  # type: ignore[return-value]

    @property
    def top_via(self) -> Via:
        cached = self._cache.get("top_via")
        if cached is None:
            first = self.headers.get("Via")
            if first is None:
                raise SipParseError("Missing Via")
            cached = self._cache["top_via"] = parse_via(grammar.split_commas(first)[0])
        return cached  # type: ignore[return-value]

    def known_top_via(self) -> Via | None:
        """:attr:`top_via` when it is already parsed or was seeded; None (nothing is parsed)."""
        return self._cache.get("top_via")  # type: ignore[return-value]

    def name_addrs(self, name: str) -> list[NameAddr]:
        """Contact / Route / Record-Route / Path values parsed."""
        return [parse_name_addr(item, name) for item in self.headers.values(name)]

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values; ``[]`` for none.  ``Contact: *`` is reported by :attr:`contact_star`."""
        values = self.headers.values("Contact")
        if values == ["*"]:
            return []
        return [parse_name_addr(item, "Contact") for item in values]

    @property
    def contact_star(self) -> bool:
        return self.headers.values("Contact") == ["*"]

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else parse_max_forwards(value)

    @property
    def expires(self) -> int | None:
        value = self.headers.get("Expires")
        return None if value is None else parse_delta_seconds(value, "Expires")

    @property
    def content_type(self) -> ContentType | None:
        value = self.headers.get("Content-Type")
        return None if value is None else parse_content_type(value)

    @property
    def event(self) -> EventHeader | None:
        cached = self._cache.get("event")
        if cached is None:
            value = self.headers.get("Event")
            if value is None:
                return None
            package, params = parse_token_with_params(value, "Event")
            cached = self._cache["event"] = EventHeader(package, params)
        return cached  # type: ignore[return-value]

    @property
    def subscription_state(self) -> SubscriptionState | None:
        value = self.headers.get("Subscription-State")
        if value is None:
            return None
        state, params = parse_token_with_params(value, "Subscription-State")
        return SubscriptionState(state.lower(), params)

    @property
    def sip_etag(self) -> str | None:
        return self._token("SIP-ETag")

    @property
    def sip_if_match(self) -> str | None:
        return self._token("SIP-If-Match")

    def _token(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            return None
        text = value.strip()
        if not grammar.TOKEN.fullmatch(text):
            raise SipParseError(f"Malformed {name}")
        return text

    def token_list(self, name: str) -> list[str]:
        """Allow / Supported / Require / Allow-Events... as a list of tokens."""
        out: list[str] = []
        for item in self.headers.values(name):
            if not item:
                continue
            if not grammar.TOKEN.fullmatch(item):
                raise SipParseError(f"Malformed {name}")
            out.append(item)
        return out


class Request(Message):
    """A SIP request.  ``uri`` is the Request-URI text; ``request_uri`` its parsed form."""

    __slots__ = ("method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers if isinstance(headers, Headers) else Headers(headers), body)
        self.method = method
        self.uri = uri
        self.version = version

    @classmethod
    def _parsed(cls, method: str, uri: str, headers: Headers, body: bytes) -> Request:
        """The parser's constructor: ``headers`` is always a :class:`Headers` there."""
        return cls(method, uri, headers, body)

    @property
    def request_uri(self) -> Uri:
        cached = self._cache.get("ruri")
        if cached is None:
            cached = self._cache["ruri"] = parse_uri(self.uri)
        return cached  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Request)
            and self.method == other.method
            and self.uri == other.uri
            and self.version == other.version
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers if isinstance(headers, Headers) else Headers(headers), body)
        self.status = status
        self.reason = reason
        self.version = version

    @classmethod
    def _parsed(cls, status: int, reason: str, headers: Headers, body: bytes) -> Response:
        """The parser's constructor: ``headers`` is always a :class:`Headers` there."""
        return cls(status, reason, headers, body)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Response)
            and self.status == other.status
            and self.reason == other.reason
            and self.version == other.version
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


__all__ = [
    "CSeq",
    "ContentType",
    "EventHeader",
    "Message",
    "Request",
    "Response",
    "SubscriptionState",
]
