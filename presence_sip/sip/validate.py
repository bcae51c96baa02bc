"""Strict validation of a parsed message: the one authority on what presence-sip accepts.

:func:`validate_message` checks every header whose grammar the project knows (RFC 3261 §25 and the
event RFCs), that single-valued headers appear once and that the mandatory ones are present
(RFC 3261 §8.1.1).  The parser's fast path (:data:`FAST_CHECKS`) only *proves* values valid with one
regex per header; whenever it cannot, :func:`validate_message` runs and decides, so the node's hot
path and ``presence-sip parse`` accept exactly the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from . import grammar
from .errors import SipParseError
from .headers import SINGLE_VALUED
from .message import (
    Message,
    Request,
    parse_content_type,
    parse_cseq,
    parse_delta_seconds,
    parse_max_forwards,
    parse_token_with_params,
)
from .uri import SipUri, parse_name_addr, parse_via

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

# RFC 3261 §8.1.1: the header fields every request (and so every response) carries.
MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")

Check = Callable[[str], None]
"""A general validator: raises :class:`SipParseError` naming the defect, returns None when valid."""


def validate_message(message: Message) -> None:
    """Check every header whose grammar is known; raise :class:`SipParseError` on the first defect.

    Typed values it parses on the way (Vias, From, To, CSeq) are cached on the message.
    """
    headers = message.headers
    for name in MANDATORY:
        if name not in headers:
            raise SipParseError(f"Missing {name}")
    seen: set[str] = set()
    for name, _value in headers:
        if name in SINGLE_VALUED:
            if name in seen:
                raise SipParseError(f"Multiple {name} headers")
            seen.add(name)
    message.vias  # noqa: B018 - parse and cache every Via
    check_call_id(message.call_id)
    message.from_  # noqa: B018
    message.to  # noqa: B018
    cseq = message.cseq
    for name, value in headers:
        check = VALIDATORS.get(name)
        if check is not None:
            check(value)
    if isinstance(message, Request):
        validate_request_line(message, cseq.method)


def validate_request_line(request: Request, cseq_method: str) -> None:
    """Method vs CSeq (RFC 3261 §8.1.1.5) and the Request-URI (§19.1.5, RFC 4475 §3.1.2.7/11)."""
    if cseq_method != request.method:
        if request.method not in KNOWN_METHODS:
            # RFC 4475 §3.1.2.18: unknown method and mismatch -> 501 is better than 400
            raise SipParseError("CSeq method mismatch", 501)
        raise SipParseError("CSeq method mismatch")
    if request.uri.startswith("<"):
        raise SipParseError("Malformed Request-URI")
    ruri = request.request_uri
    if isinstance(ruri, SipUri) and ruri.headers is not None:
        # RFC 3261 §19.1.5: headers are not allowed in a Request-URI (RFC 4475 escruri)
        raise SipParseError("Request-URI must not contain headers")


def check_call_id(value: str) -> None:
    """``callid = word [ "@" word ]`` (RFC 3261 §25.1)."""
    if not grammar.CALL_ID.fullmatch(value.strip()):
        raise SipParseError("Malformed Call-ID")


def _name_addrs(name: str) -> Check:
    def check(value: str) -> None:
        for item in grammar.split_commas(value):
            if not item:
                raise SipParseError(f"Malformed {name}")
            parse_name_addr(item, name)

    return check


def _check_contact(value: str) -> None:
    if value.strip() != "*":  # RFC 3261 §10.2.2: "Contact: *" (removal of all bindings)
        _CHECK_CONTACT_LIST(value)


def _check_vias(value: str) -> None:
    for item in grammar.split_commas(value):
        parse_via(item)


def _entity_tag(name: str) -> Check:
    def check(value: str) -> None:
        if not grammar.TOKEN.fullmatch(value.strip()):
            raise SipParseError(f"Malformed {name}")

    return check


def _check_date(value: str) -> None:
    if not grammar.RFC1123_DATE.fullmatch(value.strip()):
        raise SipParseError("Malformed Date")


def _token_list(name: str) -> Check:
    def check(value: str) -> None:
        if not value.strip():
            return
        for item in grammar.split_commas(value):
            if not grammar.TOKEN.fullmatch(item):
                raise SipParseError(f"Malformed {name}")

    return check


def _check_accept(value: str) -> None:
    if not value.strip():
        return
    for item in grammar.split_commas(value):
        if not item:
            raise SipParseError("Malformed Accept")
        parse_content_type(item)


def _digits(name: str) -> Check:
    def check(value: str) -> None:
        head = value.strip().split(" ", 1)[0].split(";", 1)[0]
        if not head.isdigit() or not head.isascii():
            raise SipParseError(f"Malformed {name}")
        if int(head) > grammar.MAX_UINT32:
            raise SipParseError(f"{name} out of range")

    return check


def _token_params(name: str) -> Check:
    def check(value: str) -> None:
        parse_token_with_params(value, name)

    return check


def _delta(name: str) -> Check:
    def check(value: str) -> None:
        parse_delta_seconds(value, name)

    return check


def _check_cseq(value: str) -> None:
    parse_cseq(value)


def _check_name_addr(name: str) -> Check:
    def check(value: str) -> None:
        parse_name_addr(value, name)

    return check


def _check_max_forwards(value: str) -> None:
    parse_max_forwards(value)


def _check_content_type(value: str) -> None:
    parse_content_type(value)


_CHECK_CONTACT_LIST = _name_addrs("Contact")

VALIDATORS: dict[str, Check] = {
    "Contact": _check_contact,
    "Route": _name_addrs("Route"),
    "Record-Route": _name_addrs("Record-Route"),
    "Path": _name_addrs("Path"),
    "Max-Forwards": _check_max_forwards,
    "Expires": _delta("Expires"),
    "Min-Expires": _delta("Min-Expires"),
    "Content-Type": _check_content_type,
    "Event": _token_params("Event"),
    "Subscription-State": _token_params("Subscription-State"),
    "SIP-ETag": _entity_tag("SIP-ETag"),
    "SIP-If-Match": _entity_tag("SIP-If-Match"),
    "Date": _check_date,
    "Accept": _check_accept,
    "Retry-After": _digits("Retry-After"),
    "Allow": _token_list("Allow"),
    "Supported": _token_list("Supported"),
    "Require": _token_list("Require"),
    "Proxy-Require": _token_list("Proxy-Require"),
    "Unsupported": _token_list("Unsupported"),
    "Allow-Events": _token_list("Allow-Events"),
}
"""General validators of the headers checked in the loop of :func:`validate_message`."""

CORE_VALIDATORS: dict[str, Check] = {
    "Via": _check_vias,
    "Call-ID": check_call_id,
    "From": _check_name_addr("From"),
    "To": _check_name_addr("To"),
    "CSeq": _check_cseq,
}
"""General validators of the five headers :func:`validate_message` checks through accessors."""

Fast = Callable[[str], "re.Match[str] | None"]

FAST_CHECKS: dict[str, Fast] = {
    "Via": grammar.FAST_VIA_LIST.fullmatch,
    "Call-ID": grammar.CALL_ID.fullmatch,
    "From": grammar.FAST_NAME_ADDR.fullmatch,
    "To": grammar.FAST_NAME_ADDR.fullmatch,
    "CSeq": grammar.FAST_CSEQ.fullmatch,
    "Contact": grammar.FAST_CONTACT.fullmatch,
    "Route": grammar.FAST_NAME_ADDR_LIST.fullmatch,
    "Record-Route": grammar.FAST_NAME_ADDR_LIST.fullmatch,
    "Path": grammar.FAST_NAME_ADDR_LIST.fullmatch,
    "Max-Forwards": grammar.FAST_MAX_FORWARDS.fullmatch,
    "Expires": grammar.FAST_DIGITS.fullmatch,
    "Min-Expires": grammar.FAST_DIGITS.fullmatch,
    "Content-Type": grammar.FAST_MEDIA_TYPE.fullmatch,
    "Event": grammar.FAST_TOKEN_PARAMS.fullmatch,
    "Subscription-State": grammar.FAST_TOKEN_PARAMS.fullmatch,
    "SIP-ETag": grammar.TOKEN.fullmatch,
    "SIP-If-Match": grammar.TOKEN.fullmatch,
    "Date": grammar.RFC1123_DATE.fullmatch,
    "Accept": grammar.FAST_ACCEPT.fullmatch,
    "Retry-After": grammar.FAST_UINT32.fullmatch,
    "Allow": grammar.FAST_TOKEN_LIST.fullmatch,
    "Supported": grammar.FAST_TOKEN_LIST.fullmatch,
    "Require": grammar.FAST_TOKEN_LIST.fullmatch,
    "Proxy-Require": grammar.FAST_TOKEN_LIST.fullmatch,
    "Unsupported": grammar.FAST_TOKEN_LIST.fullmatch,
    "Allow-Events": grammar.FAST_TOKEN_LIST.fullmatch,
}
"""One regex per validated header, each accepting a subset of its general validator.

The keys are exactly those of :data:`VALIDATORS` and :data:`CORE_VALIDATORS`.
"""
