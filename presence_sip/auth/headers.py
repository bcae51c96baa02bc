"""The values of the digest header fields (RFC 3261 §25.1): parsed, and quoted for writing.

* :func:`parse_credentials`: an Authorization / Proxy-Authorization value -> :class:`Credentials`
  (what ``DigestAuthenticator.verify`` checks);
* :func:`parse_challenge`: a WWW-Authenticate / Proxy-Authenticate value -> :class:`Challenge`
  (what ``build_authorization`` answers);
* :func:`quote`: a quoted-string, for the values we write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from presence_sip.sip.errors import LocalProtocolError, RemoteProtocolError

# Header grammar, RFC 3261 §25.1:
#   LWS = [*WSP CRLF] 1*WSP ; SWS = [LWS] ; EQUAL = SWS "=" SWS ; COMMA = SWS "," SWS
#   token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
#   quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
#   auth-param = auth-param-name EQUAL ( token / quoted-string )
# Values are accepted as token or quoted-string for every parameter (liberal in what we accept).

_LWS = r"(?:[ \t]*\r\n)?[ \t]+"
_SWS = rf"(?:{_LWS})?"
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 (a grammar rule)
_QUOTED = r'"((?:[\t !#-\[\]-~\x80-\U0010ffff]|\r\n[\t ]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"'
_SCHEME_RE = re.compile(rf"{_SWS}({_TOKEN})")
_LWS_RE = re.compile(_LWS)
_PARAM_RE = re.compile(rf"({_TOKEN}){_SWS}={_SWS}(?:({_TOKEN})|{_QUOTED})")
_COMMA_RE = re.compile(rf"{_SWS},{_SWS}")
_END_RE = re.compile(rf"{_SWS}\Z")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
NONCE_COUNT = re.compile(r"[0-9A-Fa-f]{8}")
"""``nonce-count = "nc" EQUAL 8LHEX`` (RFC 3261 §25.1): the value, to ``fullmatch``."""


def _split_scheme(value: str, what: str) -> tuple[str, int]:
    """The auth-scheme and the position where its auth-params start (-1: none)."""
    match = _SCHEME_RE.match(value)
    if match is None:
        raise RemoteProtocolError(f"Malformed {what}")
    end = match.end()
    if _END_RE.match(value, end):
        return match.group(1), -1
    lws = _LWS_RE.match(value, end)
    if lws is None:
        raise RemoteProtocolError(f"Malformed {what}")
    return match.group(1), lws.end()


def _parse_params(value: str, pos: int, what: str) -> dict[str, str]:
    """auth-param *(COMMA auth-param) from ``pos`` on; names lower-cased, values unquoted."""
    params: dict[str, str] = {}
    while True:
        match = _PARAM_RE.match(value, pos)
        if match is None:
            raise RemoteProtocolError(f"Malformed {what}")
        name = match.group(1).lower()
        if name in params:  # RFC 7616 §3.4: each directive at most once
            raise RemoteProtocolError(f"Duplicate {what} parameter {name}")
        raw = match.group(2)
        if raw is None:
            raw = match.group(3)
            if "\\" in raw:
                raw = _QUOTED_PAIR_RE.sub(r"\1", raw)
        params[name] = raw
        pos = match.end()
        if _END_RE.match(value, pos):
            return params
        comma = _COMMA_RE.match(value, pos)
        if comma is None:
            raise RemoteProtocolError(f"Malformed {what}")
        pos = comma.end()


def quote(value: str) -> str:
    """A quoted-string for ``value``; CR and LF cannot be represented (RFC 3261 §25.1)."""
    if "\r" in value or "\n" in value:
        raise LocalProtocolError("CR/LF cannot appear in a quoted-string")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Credentials (Authorization / Proxy-Authorization), RFC 3261 §22.4 / §25.1 "credentials"

_REQUIRED_CREDENTIALS = ("username", "realm", "nonce", "uri", "response")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A parsed Authorization / Proxy-Authorization value.

    For a scheme other than Digest only ``scheme`` (and ``params`` when they parse) are set.
    """

    scheme: str
    username: str = ""
    realm: str = ""
    nonce: str = ""
    uri: str = ""
    response: str = ""
    algorithm: str = ""
    """As sent; empty means MD5 (RFC 2617 §3.2.1)."""
    cnonce: str = ""
    qop: str = ""
    nc: str = ""
    """The nonce-count as sent: 8 hex digits (RFC 3261 §25.1 ``nonce-count``), or empty."""
    opaque: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    """Every auth-param, names lower-cased, quoted-strings unquoted."""

    @property
    def is_digest(self) -> bool:
        """True when the scheme is Digest (scheme names are case-insensitive)."""
        return self.scheme.lower() == "digest"


def parse_credentials(value: str) -> Credentials:
    """Parse an Authorization / Proxy-Authorization header value.

    Raises ``RemoteProtocolError`` (400) for malformed Digest credentials.  An unknown scheme gives
    ``Credentials(scheme=...)`` and never an error (RFC 4475 §3.3.7, regaut01).
    """
    scheme, pos = _split_scheme(value, "credentials")
    if scheme.lower() != "digest":
        try:
            params = _parse_params(value, pos, "credentials") if pos >= 0 else {}
        except RemoteProtocolError:
            params = {}  # e.g. Basic's token68: not ours to judge
        return Credentials(scheme=scheme, params=params)
    if pos < 0:
        raise RemoteProtocolError("Malformed credentials")
    params = _parse_params(value, pos, "credentials")
    for name in _REQUIRED_CREDENTIALS:  # RFC 7616 §3.4
        if name not in params:
            raise RemoteProtocolError(f"Missing digest parameter {name}")
    nc = params.get("nc", "")
    if nc and NONCE_COUNT.fullmatch(nc) is None:  # nonce-count = "nc" EQUAL 8LHEX
        raise RemoteProtocolError("Malformed digest nonce-count")
    get = params.get
    return Credentials(
        scheme="Digest", username=params["username"], realm=params["realm"],
        nonce=params["nonce"], uri=params["uri"], response=params["response"],
        algorithm=get("algorithm", ""), cnonce=get("cnonce", ""), qop=get("qop", ""), nc=nc,
        opaque=get("opaque", ""), params=params,
    )  # fmt: skip


# Challenges (WWW-Authenticate / Proxy-Authenticate), RFC 3261 §25.1 "challenge"


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed WWW-Authenticate / Proxy-Authenticate value (RFC 3261 §25.1 ``challenge``)."""

    scheme: str
    realm: str = ""
    nonce: str = ""
    opaque: str | None = None
    """None when absent; echoed back unaltered when present (RFC 2617 §3.2.2)."""
    algorithm: str = ""
    qop: tuple[str, ...] = ()
    """The qop-options tokens, lower-cased; empty for an RFC 2069 style challenge."""
    stale: bool = False
    params: Mapping[str, str] = field(default_factory=dict)


def parse_challenge(value: str) -> Challenge:
    """Parse a WWW-Authenticate / Proxy-Authenticate value; malformed -> ``RemoteProtocolError``."""
    scheme, pos = _split_scheme(value, "challenge")
    if scheme.lower() != "digest":
        return Challenge(scheme=scheme)
    if pos < 0:
        raise RemoteProtocolError("Malformed challenge")
    params = _parse_params(value, pos, "challenge")
    for name in ("realm", "nonce"):
        if name not in params:
            raise RemoteProtocolError(f"Missing digest parameter {name}")
    qop = tuple(t.strip().lower() for t in params.get("qop", "").split(",") if t.strip())
    stale = params.get("stale", "").lower() == "true"
    return Challenge(
        scheme="Digest", realm=params["realm"], nonce=params["nonce"], opaque=params.get("opaque"),
        algorithm=params.get("algorithm", ""), qop=qop, stale=stale, params=params,
    )  # fmt: skip


__all__ = [
    "NONCE_COUNT",
    "Challenge",
    "Credentials",
    "parse_challenge",
    "parse_credentials",
    "quote",
]
