"""``presence-sip parse [FILE ...|-]``: check SIP messages and print each as one JSON line.

Each FILE (``-`` or no FILE: standard input) holds one SIP message as raw bytes, framed as a UDP
datagram would be (RFC 3261 §18.3).  The checker is :func:`presence_sip.sip.parse_message`, the
parser every node runs, so the two accept exactly the same messages.  Output, one line per file::

    {"file": "a.sip", "valid": true, "kind": "request", "method": "SUBSCRIBE",
     "uri": "sip:bob@example.com", "headers": [["Via", "SIP/2.0/UDP ..."], ...],
     "body_length": 0, "content_type": null}
    {"file": "r.sip", "valid": true, "kind": "response", "status": 200, "reason": "OK", ...}
    {"file": "b.sip", "valid": false, "error": {"status": 400, "reason": "Malformed Via"}}

Header names are the full canonical ones (compact forms expanded).  Exit status: 0 when every
message is valid, 1 when any is not, 2 for a usage error (e.g. a missing file: one line on stderr,
nothing on stdout).  One process handles thousands of files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias

from presence_sip.sip import Request, SipParseError, parse_message
from presence_sip.sip.errors import ConfigError
from presence_sip.sip.parser import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["describe", "register", "run"]

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_VALID = 0
EXIT_INVALID = 1
STDIN = "-"


def register(subparsers: Subparsers) -> None:
    """Add the ``parse`` subcommand."""
    parser = subparsers.add_parser(
        "parse",
        help="check SIP messages (one per file) and print each as a JSON line",
        description="Check SIP messages (one raw message per file) and print each as a JSON line.",
    )
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="file holding one raw SIP message; '-' or none reads standard input",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        help="largest message accepted, in bytes (default %(default)s; larger ones: 513)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check every file of ``args.files``; return the exit status."""
    files: list[str] = list(args.files) or [STDIN]
    for name in files:
        if name != STDIN and not os.path.isfile(name):
            reason = "no such file" if not os.path.exists(name) else "not a regular file"
            raise ConfigError(f"{name}: {reason}")
    out = sys.stdout
    status = EXIT_VALID
    lines: list[str] = []
    for name in files:
        record = describe(name, _read(name, sys.stdin.buffer), args.max_size)
        if not record["valid"]:
            status = EXIT_INVALID
        lines.append(json.dumps(record, ensure_ascii=False))
        if len(lines) >= 256:
            out.write("\n".join(lines) + "\n")
            lines.clear()
    if lines:
        out.write("\n".join(lines) + "\n")
    out.flush()
    return status


def _read(name: str, stdin: BinaryIO) -> bytes:
    if name == STDIN:
        return stdin.read()
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"{name}: {exc.strerror or exc}") from None


def describe(name: str, data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> dict[str, Any]:
    """The JSON record of one message: what it is when valid, the SIP status and reason if not."""
    try:
        message = parse_message(data, datagram=True, max_size=max_size)
    except SipParseError as exc:
        error: dict[str, Any] = {"status": exc.status, "reason": exc.reason}
        if b"\n" in data and b"\r\n" not in data:
            # The usual cause with a hand-written file: an editor's line ends, not SIP's.
            error["hint"] = "SIP lines end with CRLF; this file has LF only (e.g. unix2dos)"
        return {"file": name, "valid": False, "error": error}
    record: dict[str, Any] = {"file": name, "valid": True}
    if isinstance(message, Request):
        record.update(kind="request", method=message.method, uri=message.uri)
    else:
        record.update(kind="response", status=message.status, reason=message.reason)
    record["headers"] = [[field, value] for field, value in message.headers]
    record["body_length"] = len(message.body)
    record["content_type"] = message.headers.get("Content-Type")
    return record
