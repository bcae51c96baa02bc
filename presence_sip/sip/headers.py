"""Header fields: :class:`Headers` (ordered multimap) and the names it files them under.

Header names are stored in their full canonical form (compact forms expanded, RFC 3261 §7.3.3);
values are ``str`` exactly as received after line folding.  Lookups are case-insensitive on names
(:func:`canonical_name`); :data:`SINGLE_VALUED` names the fields that may appear at most once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from . import grammar
from .memo import remember

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


__all__ = ["CANONICAL_NAMES", "COMPACT_FORMS", "SINGLE_VALUED", "Headers", "canonical_name"]
