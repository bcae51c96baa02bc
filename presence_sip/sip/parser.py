"""Bytes -> :class:`Request` / :class:`Response` (RFC 3261 §7, §25).

:func:`parse_message` is the one entry point.  It is strict: every header whose grammar the project
knows is validated, single-valued headers appear once, the mandatory ones are present.  Any input
either yields a message or raises :class:`SipParseError` carrying the status to answer with and a
reason naming the defect.  When the start line and header block could be split, the error carries the
half-parsed message in ``partial`` so a node can still address a 400 to the sender.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from . import grammar
from .errors import SipParseError
from .message import (
    SINGLE_VALUED,
    Headers,
    Message,
    Request,
    Response,
    canonical_name,
    parse_content_type,
    parse_delta_seconds,
)
from .uri import SipUri, parse_name_addr

DEFAULT_MAX_MESSAGE_SIZE = 65535
"""Largest message accepted (bytes); larger ones get 513 (RFC 3261 §18.1.1, §21.5.14)."""

KNOWN_METHODS = frozenset(
    {
        "REGISTER",
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "MESSAGE",
        "INFO",
        "PRACK",
        "UPDATE",
        "REFER",
    }
)

_FOLD = re.compile(r"[ \t]*\r\n[ \t]+")
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")


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
    if "\r\n " in head or "\r\n\t" in head:
        head = _FOLD.sub(" ", head)
    lines = head.split("\r\n")
    message = _start_line(lines[0])
    message.headers = _header_block(lines)
    try:
        message.body = _body(message.headers, rest, datagram)
        validate_message(message)
    except SipParseError as exc:
        raise ParseFailure(exc.reason, exc.status, message) from None
    return message


def _start_line(line: str) -> Request | Response:
    if line.startswith(("SIP/", "sip/")):
        return _status_line(line)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("Malformed Request-Line")
    method, uri, version = parts
    if not grammar.METHOD.fullmatch(method):
        raise SipParseError("Malformed method")
    _check_version(version)
    return Request(method, uri, Headers(), b"", "SIP/2.0")


def _status_line(line: str) -> Response:
    parts = line.split(" ", 2)
    if len(parts) < 3:
        raise SipParseError("Malformed Status-Line")
    version, code, reason = parts
    _check_version(version)
    if not grammar.STATUS_CODE.fullmatch(code) or not 100 <= int(code) <= 699:
        raise SipParseError("Invalid status code")
    return Response(int(code), reason, Headers(), b"", "SIP/2.0")


def _check_version(version: str) -> None:
    match = grammar.SIP_VERSION.fullmatch(version)
    if match is None:
        raise SipParseError("Malformed SIP-Version")
    if (match.group(1), match.group(2)) != ("2", "0"):
        raise SipParseError("Version Not Supported", 505)


def _header_block(lines: list[str]) -> Headers:
    items: list[tuple[str, str]] = []
    keys: list[str] = []
    token = grammar.TOKEN.fullmatch
    for i in range(1, len(lines)):
        line = lines[i]
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError("Malformed header line")
        name = line[:colon].rstrip(" \t")
        if not token(name):
            raise SipParseError("Malformed header name")
        cname = canonical_name(name)
        items.append((cname, line[colon + 1 :].strip(" \t")))
        keys.append(cname.lower())
    return Headers._from_canonical(items, keys)


def _body(headers: Headers, rest: bytes, datagram: bool) -> bytes:
    values = headers.get_all("Content-Length")
    if not values:
        return rest if datagram else b""
    if len(values) > 1:
        raise SipParseError("Multiple Content-Length headers")
    text = values[0].strip()
    if not text.isdigit() or not text.isascii():
        raise SipParseError("Malformed Content-Length")
    length = int(text)
    if length > len(rest):
        raise SipParseError("Content-Length larger than message")
    return rest[:length]


def validate_message(message: Message) -> None:
    """Check every header whose grammar is known; raise :class:`SipParseError` on the first defect."""
    headers = message.headers
    for name in _MANDATORY:
        if name not in headers:
            raise SipParseError(f"Missing {name}")
    seen: set[str] = set()
    for name, _value in headers:
        if name in SINGLE_VALUED:
            if name in seen:
                raise SipParseError(f"Multiple {name} headers")
            seen.add(name)
    message.vias  # noqa: B018 - parse and cache every Via
    call_id = message.call_id
    if not grammar.CALL_ID.fullmatch(call_id):
        raise SipParseError("Malformed Call-ID")
    message.from_  # noqa: B018
    message.to  # noqa: B018
    cseq = message.cseq
    for name, value in headers:
        check = _VALIDATORS.get(name)
        if check is not None:
            check(message, value)
    if isinstance(message, Request):
        _validate_request(message, cseq.method)


def _validate_request(request: Request, cseq_method: str) -> None:
    if cseq_method != request.method:
        if request.method not in KNOWN_METHODS:
            raise SipParseError("CSeq method mismatch", 501)
        raise SipParseError("CSeq method mismatch")
    uri = request.uri
    if uri.startswith("<"):
        raise SipParseError("Malformed Request-URI")
    ruri = request.request_uri
    if isinstance(ruri, SipUri) and ruri.headers is not None:
        # RFC 3261 §19.1.5: headers are not allowed in a Request-URI (RFC 4475 escruri)
        raise SipParseError("Request-URI must not contain headers")


def _check_name_addrs(message: Message, value: str, name: str) -> None:
    for item in grammar.split_commas(value):
        if not item:
            raise SipParseError(f"Malformed {name}")
        parse_name_addr(item, name)


def _check_contact(message: Message, value: str) -> None:
    if value.strip() == "*":
        return
    _check_name_addrs(message, value, "Contact")


def _check_route(message: Message, value: str) -> None:
    _check_name_addrs(message, value, "Route")


def _check_record_route(message: Message, value: str) -> None:
    _check_name_addrs(message, value, "Record-Route")


def _check_path(message: Message, value: str) -> None:
    _check_name_addrs(message, value, "Path")


def _check_max_forwards(message: Message, value: str) -> None:
    message.max_forwards  # noqa: B018


def _check_expires(message: Message, value: str) -> None:
    parse_delta_seconds(value, "Expires")


def _check_min_expires(message: Message, value: str) -> None:
    parse_delta_seconds(value, "Min-Expires")


def _check_content_type(message: Message, value: str) -> None:
    parse_content_type(value)


def _check_event(message: Message, value: str) -> None:
    message.event  # noqa: B018


def _check_subscription_state(message: Message, value: str) -> None:
    message.subscription_state  # noqa: B018


def _check_etag(message: Message, value: str) -> None:
    if not grammar.TOKEN.fullmatch(value.strip()):
        raise SipParseError("Malformed SIP-ETag")


def _check_date(message: Message, value: str) -> None:
    if not grammar.RFC1123_DATE.fullmatch(value.strip()):
        raise SipParseError("Malformed Date")


def _token_list_checker(name: str) -> Callable[[Message, str], None]:
    def check(message: Message, value: str) -> None:
        if not value.strip():
            return
        for item in grammar.split_commas(value):
            if not grammar.TOKEN.fullmatch(item):
                raise SipParseError(f"Malformed {name}")

    return check


def _check_accept(message: Message, value: str) -> None:
    if not value.strip():
        return
    for item in grammar.split_commas(value):
        parse_content_type(item) if item else _raise("Malformed Accept")


def _raise(reason: str) -> None:
    raise SipParseError(reason)


def _check_digits(name: str) -> Callable[[Message, str], None]:
    def check(message: Message, value: str) -> None:
        head = value.strip().split(" ", 1)[0].split(";", 1)[0]
        if not head.isdigit() or not head.isascii():
            raise SipParseError(f"Malformed {name}")
        if int(head) > grammar.MAX_UINT32:
            raise SipParseError(f"{name} out of range")

    return check


_VALIDATORS: dict[str, Callable[[Message, str], None]] = {
    "Contact": _check_contact,
    "Route": _check_route,
    "Record-Route": _check_record_route,
    "Path": _check_path,
    "Max-Forwards": _check_max_forwards,
    "Expires": _check_expires,
    "Min-Expires": _check_min_expires,
    "Content-Type": _check_content_type,
    "Event": _check_event,
    "Subscription-State": _check_subscription_state,
    "SIP-ETag": _check_etag,
    "SIP-If-Match": _check_etag,
    "Date": _check_date,
    "Accept": _check_accept,
    "Retry-After": _check_digits("Retry-After"),
    "Allow": _token_list_checker("Allow"),
    "Supported": _token_list_checker("Supported"),
    "Require": _token_list_checker("Require"),
    "Proxy-Require": _token_list_checker("Proxy-Require"),
    "Unsupported": _token_list_checker("Unsupported"),
    "Allow-Events": _token_list_checker("Allow-Events"),
}
