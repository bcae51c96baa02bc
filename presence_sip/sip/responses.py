"""The one builder of responses to a request (RFC 3261 §8.2.6)."""

from __future__ import annotations

from collections.abc import Iterable

from .message import Headers, Request, Response
from .status import reason_phrase

_COPIED = ("Via", "From", "Call-ID", "CSeq")


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
    out = Headers()
    for name, value in source:
        if name in _COPIED:
            out.add(name, value)
        elif name == "To":
            if (
                to_tag is not None
                and status > 100
                and ";tag=" not in value.replace(" ", "").lower()
            ):
                value = f"{value};tag={to_tag}"
            out.add(name, value)
        elif name == "Timestamp" and status == 100:
            out.add(name, value)
    for name, value in headers:
        out.add(name, value)
    out.add("Content-Length", str(len(body)))
    return Response(status, reason or reason_phrase(status), out, body)
