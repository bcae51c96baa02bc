"""SIP messages: :class:`Headers` (ordered multimap), :class:`Request` and :class:`Response`.

Header names are stored in their full canonical form (compact forms expanded, RFC 3261 §7.3.3);
values are ``str`` exactly as received after line folding.  Typed accessors (``via``, ``cseq``,
``from_``, ``event`` ...) parse on first use and cache the result; malformed values raise
:class:`SipParseError` naming the header.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from . import grammar
from .errors import SipParseError
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

# RFC 3261 §7.3.3 compact forms, plus RFC 6665 (o, u), RFC 3515 (r), RFC 3892 (b), RFC 4028 (x),
# RFC 3841 (a, j, d), RFC 4474 (y, n).
COMPACT_FORMS: Final[dict[str, str]] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_KNOWN_NAMES = (  # noqa: SIM905 - one word per known header, kept compact
    "Accept Accept-Contact Accept-Encoding Accept-Language Alert-Info Allow Allow-Events "
    "Authentication-Info Authorization Call-ID Call-Info Contact Content-Disposition "
    "Content-Encoding Content-Language Content-Length Content-Type CSeq Date Error-Info Event "
    "Expires From Identity Identity-Info In-Reply-To Max-Forwards Min-Expires MIME-Version "
    "Organization Path Priority Proxy-Authenticate Proxy-Authorization Proxy-Require Reason "
    "Record-Route Refer-To Referred-By Reject-Contact Reply-To Request-Disposition Require "
    "Retry-After Route Server Service-Route Session-Expires SIP-ETag SIP-If-Match Subject "
    "Subscription-State Supported Timestamp To Unsupported User-Agent Via Warning "
    "WWW-Authenticate"
).split()

CANONICAL_NAMES: Final[dict[str, str]] = {name.lower(): name for name in _KNOWN_NAMES}
CANONICAL_NAMES.update(COMPACT_FORMS)

# Headers that may appear at most once (RFC 3261 §7.3.1: not a comma-separated list).
SINGLE_VALUED: Final[frozenset[str]] = frozenset(
    {
        "Call-ID",
        "CSeq",
        "From",
        "To",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Content-Disposition",
        "Expires",
        "Min-Expires",
        "Event",
        "Subscription-State",
        "SIP-ETag",
        "SIP-If-Match",
        "Date",
        "MIME-Version",
        "Timestamp",
        "Retry-After",
    }
)


def canonical_name(name: str) -> str:
    """Full canonical spelling of a header name; unknown names are returned as given."""
    return CANONICAL_NAMES.get(name.lower(), name)


_NAMES: Final[dict[str, tuple[str, str]]] = {}
"""Header names as callers spell them -> (canonical name, lookup key): one dict hit per call."""


def _name_and_key(name: str) -> tuple[str, str]:
    entry = _NAMES.get(name)
    if entry is None:
        cname = CANONICAL_NAMES.get(name.lower(), name)
        entry = remember(_NAMES, name, (cname, cname.lower()))
    return entry


def _key(name: str) -> str:
    entry = _NAMES.get(name)
    return entry[1] if entry is not None else _name_and_key(name)[1]


class Headers:
    """Ordered multimap of header fields, case-insensitive on names, compact forms expanded."""

    __slots__ = ("_items", "_keys", "_raw", "_raw_length")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._keys: list[str] = []
        self._raw: bytes | None = None
        """The header block as received (CRLF first, blank line last) while it is canonical and
        unmodified: the serializer then reuses it instead of formatting every field again."""
        self._raw_length = -1
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_canonical(cls, items: list[tuple[str, str]], keys: list[str]) -> Headers:
        """Headers owning ``items`` and their lookup ``keys`` as given (already canonical)."""
        headers = cls()  # (not cls.__new__: mypyc-compiled classes have none, see setup.py)
        headers._items = items
        headers._keys = keys
        return headers

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def copy(self) -> Headers:
        headers = Headers._from_canonical(list(self._items), list(self._keys))
        headers._raw = self._raw
        headers._raw_length = self._raw_length
        return headers

    def get(self, name: str) -> str | None:
        """Value of the first field called ``name``, or None."""
        entry = _NAMES.get(name)  # _key() inlined: a dozen calls per message (issue 8)
        key = entry[1] if entry is not None else _name_and_key(name)[1]
        keys = self._keys
        for index in range(len(keys)):  # compiled: one scan of str compares, no rich compare
            if keys[index] == key:
                return self._items[index][1]
        return None

    def get_all(self, name: str) -> list[str]:
        """Values of every field called ``name`` (one per header line)."""
        key = _key(name)
        keys, items = self._keys, self._items
        return [items[index][1] for index in range(len(keys)) if keys[index] == key]

    def values(self, name: str) -> list[str]:
        """Every comma-separated value across all fields called ``name``."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(grammar.split_commas(value))
        return out

    def count(self, name: str) -> int:
        return self._keys.count(_key(name))

    def add(self, name: str, value: str) -> None:
        """Append a field at the end."""
        self._raw = None
        cname, key = _name_and_key(name)
        self._items.append((cname, value))
        self._keys.append(key)

    def prepend(self, name: str, value: str) -> None:
        """Insert a field before every other field of the same name (or at the top)."""
        self._raw = None
        cname, key = _name_and_key(name)
        index = self._keys.index(key) if key in self._keys else 0
        self._items.insert(index, (cname, value))
        self._keys.insert(index, key)

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` by one field (kept at the first one's position)."""
        self._raw = None
        cname, key = _name_and_key(name)
        if key not in self._keys:
            self.add(cname, value)
            return
        index = self._keys.index(key)
        self.remove(cname)
        self._items.insert(index, (cname, value))
        self._keys.insert(index, key)

    def replace_first(self, name: str, value: str) -> bool:
        """Replace the first field called ``name`` (the others stay); False when there is none."""
        key = _key(name)
        if key not in self._keys:
            return False
        self._raw = None
        index = self._keys.index(key)
        self._items[index] = (self._items[index][0], value)
        return True

    def remove(self, name: str) -> int:
        """Remove every field called ``name``; returns how many were removed."""
        self._raw = None
        key = _key(name)
        if key not in self._keys:
            return 0
        keep = [i for i, k in enumerate(self._keys) if k != key]
        removed = len(self._keys) - len(keep)
        if removed:
            self._items = [self._items[i] for i in keep]
            self._keys = [self._keys[i] for i in keep]
        return removed

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first comma-separated value of ``name`` (top Via, top Route)."""
        self._raw = None
        key = _key(name)
        for i, k in enumerate(self._keys):
            if k != key:
                continue
            cname, value = self._items[i]
            parts = grammar.split_commas(value)
            if len(parts) == 1:
                del self._items[i]
                del self._keys[i]
            else:
                self._items[i] = (cname, ", ".join(parts[1:]))
            return parts[0]
        return None


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
    "Headers",
    "Message",
    "Request",
    "Response",
    "SubscriptionState",
    "canonical_name",
]
