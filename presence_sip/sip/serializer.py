"""Message -> bytes.  The inverse of :func:`parse_message`, byte-exact for canonical input."""

from __future__ import annotations

from .message import Request, Response


def to_bytes(message: Request | Response) -> bytes:
    """Serialise ``message``; Content-Length is written from the body when missing or stale.

    Header fields are written ``Name: value`` with their full canonical names.  A header block that
    was parsed in exactly that form and not modified since is reused as received.
    """
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} {message.version}"
    else:
        start = f"{message.version} {message.status} {message.reason}"
    body = message.body
    headers = message.headers
    raw = headers._raw
    if raw is not None and headers._raw_length == len(body):
        return start.encode("utf-8") + raw + body
    # One join over the pieces, no string made per header line (issue 8: cachegrind, -6,000
    # instructions per cycle, -0.9 %).
    parts = [start, "\r\n"]
    length_seen = False
    for name, value in headers:
        if name == "Content-Length":
            if length_seen:
                continue
            length_seen = True
            value = _content_length(value, len(body))
        parts.append(name)
        parts.append(": ")
        parts.append(value)
        parts.append("\r\n")
    if not length_seen:
        parts.append("Content-Length: ")
        parts.append(str(len(body)))
        parts.append("\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8") + body


def _content_length(value: str, length: int) -> str:
    """The received value when it already states ``length``, else ``length`` (RFC 3261 §20.14)."""
    text = value.strip()
    if text.isdigit() and text.isascii() and int(text) == length:
        return value
    return str(length)
