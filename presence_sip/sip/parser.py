"""Bytes -> :class:`Request` / :class:`Response` (RFC 3261 §7, §25).

:func:`parse_message` is the one entry point.  It is strict: every header whose grammar the project
knows is validated, single-valued headers appear once, the mandatory ones are present.  Any input
either yields a message or raises :class:`SipParseError` carrying the status to answer with and a
reason naming the defect.  When the start line and header block could be split, the error carries
the half-parsed message in ``partial`` so a node can still address a 400 to the sender.

Speed without a second grammar: each header line is first tried against one compiled regex that
accepts a strict subset of the general grammar (:data:`~presence_sip.sip.validate.FAST_CHECKS`).
When every line, the CSeq method and the Request-URI pass, the message is proven valid; otherwise
:func:`~presence_sip.sip.validate.validate_message` runs and decides.  Canonical header lines that
passed (``Name: value``, known to repeat between messages such as ``Max-Forwards: 70`` or
``Event: presence``) are remembered in a bounded cache, and typed values (Vias, From, CSeq...) are
only built when an accessor asks for them.

The optional C extension :mod:`._speedups` runs that same fast path for canonical messages and
answers None whenever it is not sure; then the Python code below runs and decides.  It accepts a
subset of what this module accepts, with the identical result (tests/unit/test_speedups.py).
``PRESENCE_SIP_PURE=1`` in the environment disables it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Final

from . import grammar
from .errors import SipParseError
from .headers import CANONICAL_NAMES, SINGLE_VALUED, Headers
from .memo import remember
from .message import Message, Request, Response
from .validate import FAST_CHECKS, KNOWN_METHODS, MANDATORY, Fast, validate_message

DEFAULT_MAX_MESSAGE_SIZE = 65535
"""Largest message accepted (bytes); larger ones get 513 (RFC 3261 §18.1.1, §21.5.14)."""

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "KNOWN_METHODS",
    "ParseFailure",
    "parse_message",
    "validate_message",
]

_FOLD = re.compile(r"[ \t]*\r\n[ \t]+")
_NONCANONICAL: Final = 1
_UNPROVEN: Final = 2
_CACHE_LIMIT = 4096
_CACHED_LINE_MAX: Final = 256
_UNCACHED: Final = frozenset(
    {"Via", "CSeq"}
)  # unique per transaction: caching them only evicts others
_MANDATORY_KEYS: Final = frozenset(name.lower() for name in MANDATORY)
_SINGLE_KEYS: Final = frozenset(name.lower() for name in SINGLE_VALUED)

_Entry = tuple[tuple[str, str], str]
_LINE_CACHE: Final[dict[str, _Entry]] = {}
"""Canonical header lines already proven valid -> (canonical item, lower-case key)."""
_NameInfo = tuple[str, str, bool, "Fast | None", bool]
_NAME_INFO: Final[dict[str, _NameInfo]] = {}
"""Header names as received (valid tokens) -> what :func:`_scan_line` needs to know about them."""
_RURI_CACHE: Final[dict[str, bool]] = {}
"""Request-URIs already proven valid by the fast path."""


class ParseFailure(SipParseError):
    """A :class:`SipParseError` that also carries the message as far as it was parsed."""

    def __init__(self, reason: str, status: int, partial: Message) -> None:
        super().__init__(reason, status)
        self.partial = partial


def parse_message(
    data: bytes, *, datagram: bool = True, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> Request | Response:
    """Parse one complete SIP message.

    ``datagram`` selects RFC 3261 §18.3 framing: on UDP a missing Content-Length means "the rest of
    the datagram" and octets beyond Content-Length are discarded; on a stream the framer has already
    cut the message by Content-Length.
    """
    if len(data) > max_size:
        raise SipParseError("Message too large", 513)
    if _fast_parse is not None:
        found = _fast_parse(data, datagram)
        if found is not None:
            first, second, items, keys, body, raw, length = found
            headers = Headers._from_canonical(items, keys)
            headers._raw = raw
            headers._raw_length = length
            if isinstance(first, int):
                return Response._parsed(first, second, headers, body)
            return Request._parsed(first, second, headers, body)
    return _parse(data, datagram)


def _parse(data: bytes, datagram: bool) -> Request | Response:
    """The pure Python :func:`parse_message` (the reference the C fast path must agree with)."""
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 3261 §7.5: ignore leading CRLFs
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        head_bytes, rest = data[start:].rstrip(b"\r\n"), b""
    else:
        head_bytes, rest = data[start:end], data[end + 4 :]
    if not head_bytes:
        raise SipParseError("Empty message")
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("Invalid UTF-8 in header section") from None
    folded = "\r\n " in head or "\r\n\t" in head
    if folded:  # RFC 3261 §7.3.1: a line starting with SP/HT continues the previous one
        head = _FOLD.sub(" ", head)
    lines = head.split("\r\n")
    if head.count("\r") != len(lines) - 1 or head.count("\n") != len(lines) - 1:
        # RFC 3261 §7.3.1: CR and LF only as CRLF (a bare one would split the line downstream)
        raise SipParseError("Malformed header line")
    try:
        message = _start_line(lines[0])
    except SipParseError as exc:
        raise _start_line_failure(exc, lines) from None
    headers, flags = _header_block(lines)
    message.headers = headers
    try:
        message.body, length = _body(headers, rest, datagram)
        if flags & _UNPROVEN or not _proven(message):
            validate_message(message)
    except SipParseError as exc:
        raise ParseFailure(exc.reason, exc.status, message) from None
    if not flags and not folded and end >= 0 and length >= 0:
        headers._raw = data[data.find(b"\r\n", start) : end + 4]
        headers._raw_length = length
    return message


def _start_line_failure(error: SipParseError, lines: list[str]) -> SipParseError:
    """A bad Request-Line (RFC 4475 badvers, lwsruri, lwsstart, trws) over good headers still
    deserves its 400/505: return the error carrying a partial request with those headers."""
    first = lines[0]
    if first.startswith(("SIP/", "sip/")):
        return error
    method = first.split(" ", 1)[0]
    try:
        headers, _flags = _header_block(lines)
    except SipParseError:
        return error
    partial = Request._parsed(
        method if grammar.METHOD.fullmatch(method) else "INVALID", "sip:invalid", headers, b""
    )
    return ParseFailure(error.reason, error.status, partial)


def _start_line(line: str) -> Request | Response:
    if line.startswith(("SIP/", "sip/")):
        return _status_line(line)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("Malformed Request-Line")
    method, uri, version = parts
    if method not in KNOWN_METHODS and not grammar.METHOD.fullmatch(method):
        raise SipParseError("Malformed method")
    if version != "SIP/2.0":
        _check_version(version)
    return Request._parsed(method, uri, _NO_HEADERS, b"")


def _status_line(line: str) -> Response:
    parts = line.split(" ", 2)
    if len(parts) < 3:
        raise SipParseError("Malformed Status-Line")
    version, code, reason = parts
    if version != "SIP/2.0":
        _check_version(version)
    if not grammar.STATUS_CODE.fullmatch(code) or not 100 <= int(code) <= 699:
        raise SipParseError("Invalid status code")
    return Response._parsed(int(code), reason, _NO_HEADERS, b"")


_NO_HEADERS: Final = Headers()
"""Placeholder until the header block is parsed (replaced before the message is returned)."""


def _check_version(version: str) -> None:
    match = grammar.SIP_VERSION.fullmatch(version)
    if match is None:
        raise SipParseError("Malformed SIP-Version")
    if (match.group(1), match.group(2)) != ("2", "0"):
        raise SipParseError("Version Not Supported", 505)


def _header_block(lines: list[str]) -> tuple[Headers, int]:
    fields = lines[1:]
    entries = list(map(_LINE_CACHE.get, fields))  # one C loop; misses come back as None
    flags = 0
    if None in entries:
        for i, entry in enumerate(entries):
            if entry is None:
                entries[i], status = _scan_line(fields[i])
                flags |= status
    found: list[_Entry] = entries  # type: ignore[assignment]  # no None is left
    items = [entry[0] for entry in found]
    keys = [entry[1] for entry in found]
    return Headers._from_canonical(items, keys), flags


def _scan_line(line: str) -> tuple[_Entry, int]:
    """Split one header line; tell whether it is canonical and proven valid by its fast regex."""
    colon = line.find(":")
    if colon <= 0:
        raise SipParseError("Malformed header line")
    raw_name = line[:colon]
    name, key, exact, check, cacheable = _NAME_INFO.get(raw_name) or _name_info(raw_name)
    value = line[colon + 1 :].strip(" \t")
    status = 0
    if not exact or len(line) != colon + 2 + len(value) or line[colon + 1] != " ":
        status = _NONCANONICAL
    if check is not None and check(value) is None:
        status |= _UNPROVEN
    entry = ((name, value), key)
    if not status and cacheable and len(line) <= _CACHED_LINE_MAX:
        if len(_LINE_CACHE) >= _CACHE_LIMIT:
            _LINE_CACHE.clear()
        _LINE_CACHE[line] = entry
    return entry, status


def _name_info(raw_name: str) -> _NameInfo:
    """Canonical name, lookup key, is ``raw_name`` canonical, fast check, cacheable line."""
    name = raw_name.rstrip(" \t")
    if not grammar.TOKEN.fullmatch(name):
        raise SipParseError("Malformed header name")
    canonical = CANONICAL_NAMES.get(name.lower(), name)
    info = (
        canonical,
        canonical.lower(),
        canonical == raw_name,
        FAST_CHECKS.get(canonical),
        canonical not in _UNCACHED,
    )
    if len(_NAME_INFO) >= _CACHE_LIMIT:
        _NAME_INFO.clear()
    _NAME_INFO[raw_name] = info
    return info


def _body(headers: Headers, rest: bytes, datagram: bool) -> tuple[bytes, int]:
    """The body framed by Content-Length (RFC 3261 §18.3, §20.14) and that length (-1: none)."""
    keys = headers._keys
    count = keys.count("content-length")
    if not count:
        return (rest if datagram else b""), -1
    if count > 1:
        raise SipParseError("Multiple Content-Length headers")  # RFC 4475 mcl01
    text = headers._items[keys.index("content-length")][1].strip()
    if not text.isdigit() or not text.isascii():
        raise SipParseError("Malformed Content-Length")  # RFC 4475 ncl
    length = int(text)
    if length > len(rest):
        raise SipParseError("Content-Length larger than message")  # RFC 4475 clerr
    return rest[:length], length


def _proven(message: Request | Response) -> bool:
    """Message-level rules on the fast path: False sends the message to ``validate_message``."""
    keys = message.headers._keys
    present = set(keys)
    if not present >= _MANDATORY_KEYS:
        return False
    if len(present) != len(keys):
        singles = [key for key in keys if key in _SINGLE_KEYS]
        if len(singles) != len(set(singles)):
            return False
    if isinstance(message, Response):
        return True
    cseq = message.headers._items[keys.index("cseq")][1]
    if cseq[cseq.index(" ") + 1 :] != message.method:
        return False
    return message.uri in _RURI_CACHE or _fast_ruri(message.uri)


def _fast_ruri(uri: str) -> bool:
    """Is ``uri`` proven valid by the fast regex?  Remembers it when it is."""
    if grammar.FAST_SIP_URI.fullmatch(uri) is None:
        return False
    remember(_RURI_CACHE, uri, True)  # one entry per presentity: as big as the URI memo
    return True


_FastResult = tuple[str | int, str, list[tuple[str, str]], list[str], bytes, bytes | None, int]
_fast_parse: Callable[[bytes, bool], _FastResult | None] | None = None
"""The C fast path (method or status, URI or reason, items, keys, body, raw block, length)."""
if not os.environ.get("PRESENCE_SIP_PURE"):
    try:
        from . import _speedups
    except ImportError:  # not compiled: pure Python
        pass
    else:
        _speedups.configure(
            _LINE_CACHE, _scan_line, _fast_ruri, _RURI_CACHE, _SINGLE_KEYS, SipParseError
        )
        _fast_parse = _speedups.parse
