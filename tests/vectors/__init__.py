"""Test vectors: exact wire bytes, loaded by name (``load("rfc4475/wsinv")``).

* ``rfc4475/*.dat`` — RFC 4475 torture messages, byte-exact copies of ``shared/torture/``.
* ``rfc5118/*`` — RFC 5118 IPv6 torture messages as archived (bare LF): use :func:`wire`.
* ``sip/*.sip`` — RFC 3261 / 3856 / 3903 style examples (REGISTER, SUBSCRIBE, NOTIFY with PIDF,
  PUBLISH, 200 OK) with canonical CRLF framing and Vias on 127.0.0.1.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent
_SUFFIXES = ("", ".dat", ".sip")


def path(name: str) -> Path:
    """File of vector ``name`` ("group/stem", extension optional)."""
    for suffix in _SUFFIXES:
        candidate = ROOT / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no test vector {name!r} under {ROOT}")


def load(name: str) -> bytes:
    """Exact bytes of vector ``name``."""
    return path(name).read_bytes()


def names(group: str) -> list[str]:
    """Sorted ``group/stem`` names of every vector in ``group`` (e.g. ``"rfc4475"``)."""
    return sorted(
        f"{group}/{p.name.removesuffix('.dat').removesuffix('.sip')}"
        for p in (ROOT / group).iterdir()
        if p.is_file() and not p.name.startswith(".")
    )


_LENGTH = re.compile(rb"(?im)^(content-length|l)([ \t]*:[ \t]*)[0-9]+")


def wire(name: str) -> bytes:
    """An RFC 5118 archive message made wire-ready, as ``shared/torture/README.md`` says.

    LF -> CRLF, the header section closed by an empty line when it is not, Content-Length set to
    the real body length.  Nothing else changes.
    """
    data = load(name).replace(b"\n", b"\r\n")
    if b"\r\n\r\n" not in data:
        data += b"\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    head = _LENGTH.sub(lambda m: m.group(1) + m.group(2) + str(len(body)).encode(), head)
    return head + b"\r\n\r\n" + body
