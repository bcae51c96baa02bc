"""Message -> bytes.  The inverse of :func:`parse_message`, byte-exact for canonical input."""

from __future__ import annotations

from .message import Request, Response


def to_bytes(message: Request | Response) -> bytes:
    """Serialise ``message``; Content-Length is written from the body when missing or stale."""
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} {message.version}"
    else:
        start = f"{message.version} {message.status} {message.reason}"
    body = message.body
    parts = [start]
    length_seen = False
    for name, value in message.headers:
        if name == "Content-Length":
            if length_seen:
                continue
            length_seen = True
            value = str(len(body)) if not value.strip().isdigit() or int(value) != len(body) else value
        parts.append(f"{name}: {value}")
    if not length_seen:
        parts.append(f"Content-Length: {len(body)}")
    parts.append("")
    parts.append("")
    return "\r\n".join(parts).encode("utf-8") + body
