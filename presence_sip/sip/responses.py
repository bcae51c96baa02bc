"""The one builder of responses to a request (RFC 3261 §8.2.6)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .headers import Headers
from .message import Request, Response
from .status import reason_phrase

_COPIED: Final = frozenset({"via", "from", "call-id", "cseq"})
"""Lookup keys of the fields copied verbatim into every response (RFC 3261 §8.2.6.2)."""

_NO_BODY: Final = ("Content-Length", "0")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response: copies Via (all values, in order), From, To, Call-ID and CSeq verbatim.

    A To-tag is added when the request's To has none and ``to_tag`` is given (RFC 3261 §8.2.6.2);
    a 100 Trying never gets one.  ``headers`` are appended after the copied ones.
    """
    source = request.headers
    source_items, source_keys = source._items, source._keys
    items: list[tuple[str, str]] = []
    keys: list[str] = []
    # The request's fields are already canonical: copy its (name, value) tuples as they are.
    for index in range(len(source_keys)):  # compiled: indexing, not zip's iterator protocol
        key = source_keys[index]
        item = source_items[index]
        if key in _COPIED:
            items.append(item)
            keys.append(key)
        elif key == "to":
            value = item[1]
            if (
                to_tag is not None
                and status > 100
                and ";tag=" not in value.replace(" ", "").lower()
            ):
                item = ("To", f"{value};tag={to_tag}")
            items.append(item)
            keys.append(key)
        elif key == "timestamp" and status == 100:
            items.append(item)
            keys.append(key)
    out = Headers._from_canonical(items, keys)
    for name, value in headers:
        out.add(name, value)
    if body:
        out.add("Content-Length", str(len(body)))
    else:
        items.append(_NO_BODY)
        keys.append("content-length")
    return Response._parsed(status, reason or reason_phrase(status), out, body)
