"""SIP digest authentication, sans-IO (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Server side: ``DigestAuthenticator`` issues challenges and verifies credentials.  Its nonces are
stateless-verifiable (issue time + random bytes + an HMAC-SHA256 over both with a shared secret), so
any worker sharing the secret can check them; the only state is a bounded per-nonce record of the
highest nonce-count seen, for replay protection.  Time comes in as ``now``; the clock is never read.

Client side: ``parse_challenge`` and ``build_authorization`` answer a 401/407 challenge.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from presence_sip.sip.errors import ConfigError, LocalProtocolError, RemoteProtocolError

NONCE_CLOCK_SKEW = 5.0
"""Seconds a nonce's time may lie ahead of now (nodes of a network sharing the nonce key)."""

# Algorithms and hashes


class DigestAlgorithm(Enum):
    """The ``algorithm`` of a digest challenge (RFC 7616 §6.1 registry; RFC 8760 §2.2 for SIP).

    A ``-sess`` variant uses the stored HA1 of its base algorithm (RFC 2617 §3.2.2.2).
    """

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"
    SHA512_256 = "SHA-512-256"
    SHA512_256_SESS = "SHA-512-256-sess"

    @property
    def is_session(self) -> bool:
        """True for the ``-sess`` variants."""
        return self.value.endswith("-sess")

    @property
    def base(self) -> DigestAlgorithm:
        """The algorithm whose HA1 is stored (``MD5`` for ``MD5-sess``)."""
        return DigestAlgorithm(self.value.removesuffix("-sess"))

    @classmethod
    def from_token(cls, token: str) -> DigestAlgorithm | None:
        """The algorithm named by ``token`` (case-insensitive); "" is MD5 (RFC 2617 §3.2.1)."""
        return _ALGORITHM_BY_TOKEN.get(token.lower() if token else "md5")


_ALGORITHM_BY_TOKEN = {alg.value.lower(): alg for alg in DigestAlgorithm}
_RANK = {"SHA-512-256": 0, "SHA-256": 1, "MD5": 2}


def _strength(algorithm: DigestAlgorithm) -> tuple[int, bool]:
    """Sort key: RFC 8760 §2.4 lists challenges in order of preference, strongest first."""
    return _RANK[algorithm.base.value], algorithm.is_session


_BASE_HASH: dict[str, Callable[[bytes], str]] = {
    # MD5 is what RFC 2617 mandates here, not our choice of a secure hash.
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}
_HASH: dict[DigestAlgorithm, Callable[[bytes], str]] = {
    alg: _BASE_HASH[alg.base.value] for alg in DigestAlgorithm
}


def compute_ha1(username: str, realm: str, password: str, algorithm: DigestAlgorithm) -> str:
    """H(username ":" realm ":" password) in lower-case hex (RFC 2617 §3.2.2.2).

    This is what the HSS stores, per algorithm; for a ``-sess`` algorithm it is the HA1 of the base
    algorithm (the per-nonce session key is derived from it at verification time).
    """
    return _HASH[algorithm](f"{username}:{realm}:{password}".encode())


def _session_ha1(ha1: str, nonce: str, cnonce: str, algorithm: DigestAlgorithm) -> str:
    # RFC 2617 §3.2.2.2: for "-sess", A1 = H(user:realm:password) ":" nonce ":" cnonce.
    if not algorithm.is_session:
        return ha1
    return _HASH[algorithm](f"{ha1}:{nonce}:{cnonce}".encode())


def _digest_response(
    ha1: str, algorithm: DigestAlgorithm, method: str, uri: str, body: bytes, *,
    nonce: str, qop: str, nc: str, cnonce: str,
) -> str:  # fmt: skip
    """request-digest of RFC 2617 §3.2.2.1 (RFC 2069 form when ``qop`` is empty)."""
    h = _HASH[algorithm]
    a2 = f"{method}:{uri}"
    if qop.lower() == "auth-int":  # RFC 2617 §3.2.2.3
        a2 = f"{a2}:{h(body)}"
    ha2 = h(a2.encode())
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{ha2}".encode())


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
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")


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


def _quote(value: str) -> str:
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
    if nc and _NC_RE.fullmatch(nc) is None:  # nonce-count = "nc" EQUAL 8LHEX
        raise RemoteProtocolError("Malformed digest nonce-count")
    get = params.get
    return Credentials(
        scheme="Digest", username=params["username"], realm=params["realm"],
        nonce=params["nonce"], uri=params["uri"], response=params["response"],
        algorithm=get("algorithm", ""), cnonce=get("cnonce", ""), qop=get("qop", ""), nc=nc,
        opaque=get("opaque", ""), params=params,
    )  # fmt: skip


def uri_matches(digest_uri: str, request_uri: str) -> bool:
    """Whether the credentials' ``uri`` names the Request-URI (RFC 3261 §22.4 item 4).

    Scheme and host part (host, port, parameters) compare case-insensitively; the user part and
    headers compare exactly.  Anything without a scheme compares exactly.
    """
    return _uri_key(digest_uri) == _uri_key(request_uri)


def uri_host(uri: str) -> str:
    """The host of a SIP URI's text, lower case ("" when there is none): ``sip:u@[::1]:5060;x``
    gives ``::1``."""
    _, colon, rest = uri.partition(":")
    if not colon:
        return ""
    hostport = rest.partition("?")[0].rpartition("@")[2].partition(";")[0]
    if hostport.startswith("["):
        return hostport[1:].partition("]")[0].lower()
    return hostport.partition(":")[0].lower()


def _uri_key(uri: str) -> tuple[str, str, str, str]:
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return ("", "", uri, "")
    head, _, headers = rest.partition("?")
    user, _, hostpart = head.rpartition("@")
    return (scheme.lower(), user, hostpart.lower(), headers)


# Server side


class AuthOutcome(Enum):
    """What ``DigestAuthenticator.verify`` concluded."""

    OK = "ok"
    STALE = "stale"
    """Right password, but the nonce is no longer usable: re-challenge with ``stale=true``."""
    FAILED = "failed"
    MISSING = "missing"
    """No Digest credentials for our realm: challenge."""


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The verdict on one set of credentials."""

    outcome: AuthOutcome
    username: str
    reason: str
    """Why; identical for an unknown user and a wrong password (no user enumeration)."""
    unknown_user: bool = False
    """With ``REASON_INVALID``: the username has no credentials here.  For the operator's log
    only (``auth failed ... reason="unknown user"``); never put on the wire."""
    nonce_from_source: bool = True
    """With ``REASON_INVALID``: the nonce was issued to the address the credentials came from
    (:meth:`DigestAuthenticator.source_tag`).  A forged UDP source cannot have received one, so
    only such a failure counts against that address (``auth/throttle.py``)."""


REASON_OK = "OK"
REASON_INVALID = "Invalid credentials"
REASON_NOT_DIGEST = "Not Digest credentials"
REASON_REALM = "Realm mismatch"
REASON_ALGORITHM = "Unsupported digest algorithm"
REASON_NONCE = "Invalid nonce"
REASON_OPAQUE = "Opaque mismatch"
REASON_QOP = "Unsupported qop"
REASON_QOP_REQUIRED = "qop required"
REASON_CNONCE = "Missing cnonce"
REASON_NC = "Missing or malformed nonce count"
REASON_EXPIRED = "Nonce expired"
REASON_REPLAY = "Replayed nonce count"
REASON_REUSED = "Nonce already used"
REASON_USE_LIMIT = "Nonce use limit reached"
REASON_STATE_LOST = "Nonce state forgotten"

_TIME = struct.Struct("!d")
_MAC_LEN = 16
_RANDOM_LEN = 12
_TAG_LEN = 4
"""Bytes of the source tag after a nonce's issue time (:meth:`DigestAuthenticator.source_tag`)."""
NO_SOURCE = bytes(_TAG_LEN)
_MAX_NONCE_CHARS = 256
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(slots=True)
class _NonceUse:
    issued: float
    highest_nc: int
    uses: int


class DigestAuthenticator:
    """Issues digest challenges and verifies credentials for one realm (RFC 3261 §22.4).

    ``secret`` keys the nonce HMAC: processes sharing it accept each other's nonces.  Nonce-count
    replay state is per process, bounded by ``max_tracked_nonces`` (least recently used evicted).
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[DigestAlgorithm] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
        max_nonce_uses: int = 1000,
        allow_no_qop: bool = True,
        id_source: Callable[[], str] | None = None,
        max_tracked_nonces: int = 65536,
        state_since: float | None = None,
    ) -> None:
        """``state_since``: when this authenticator's replay memory starts (a process start).
        Nonces issued before it are answered ``STALE``: their nonce-counts were not kept, so a
        request captured before a restart cannot be replayed after it."""
        if not secret:
            raise ConfigError("digest authentication needs a non-empty secret")
        if not algorithms:
            raise ConfigError("digest authentication needs at least one algorithm")
        if nonce_lifetime <= 0 or max_nonce_uses < 1 or max_tracked_nonces < 1:
            raise ConfigError("digest nonce lifetime and limits must be positive")
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self.max_nonce_uses = max_nonce_uses
        self.allow_no_qop = allow_no_qop
        self.algorithms = tuple(sorted(dict.fromkeys(algorithms), key=_strength))
        self._secret = secret
        self._mac_prefix = realm.encode() + b"\0"
        self._id_source = id_source
        self._max_tracked = max_tracked_nonces
        opaque = hmac.new(secret, b"opaque\0" + self._mac_prefix, hashlib.sha256)
        self.opaque = opaque.hexdigest()[:32]
        self._opaque_bytes = self.opaque.encode()
        # Compared against when the user is unknown, so both paths cost the same.
        self._dummy_ha1 = {alg: _HASH[alg](secret + b"\0dummy") for alg in DigestAlgorithm}
        self._uses: OrderedDict[bytes, _NonceUse] = OrderedDict()
        self._evicted_mark = float("-inf") if state_since is None else state_since
        self._challenge_tails = [
            f'", opaque="{self.opaque}", algorithm={alg.value}, qop="auth"'
            for alg in self.algorithms
        ]
        self._realm_part = f'Digest realm={_quote(realm)}, nonce="'

    def challenge(
        self, now: float, *, stale: bool = False, source_tag: bytes = NO_SOURCE
    ) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values, one per algorithm, strongest first;
        the nonce carries ``source_tag`` (the address the challenge goes to)."""
        nonce = self.make_nonce(now, source_tag)
        extra = ", stale=true" if stale else ""
        return [f"{self._realm_part}{nonce}{tail}{extra}" for tail in self._challenge_tails]

    def make_nonce(self, now: float, source_tag: bytes = NO_SOURCE) -> str:
        """base64url(issue time + source tag + random + HMAC-SHA256(secret, realm + time + tag
        + random)[:16])."""
        ids = self._id_source
        randomness = ids().encode() if ids else secrets.token_bytes(_RANDOM_LEN)
        payload = _TIME.pack(now) + source_tag[:_TAG_LEN].ljust(_TAG_LEN, b"\0") + randomness
        raw = payload + self._mac(payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def source_tag(self, host: str) -> bytes:
        """A short keyed tag of a client's address, put into the nonces sent to it: whoever
        answers with a nonce that carries another address's tag did not receive it there."""
        mac = hmac.new(self._secret, b"source:" + host.encode(), hashlib.sha256)
        return mac.digest()[:_TAG_LEN]

    def _mac(self, payload: bytes) -> bytes:
        mac = hmac.new(self._secret, self._mac_prefix + payload, hashlib.sha256)
        return mac.digest()[:_MAC_LEN]

    def _open_nonce(self, nonce: str) -> tuple[float, bytes, bytes] | None:
        """(issue time, key, source tag) of a nonce we made, or None if it is not ours or was
        altered."""
        if len(nonce) > _MAX_NONCE_CHARS or _NONCE_RE.fullmatch(nonce) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _TIME.size + _MAC_LEN:
            return None
        payload, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        (issued,) = _TIME.unpack_from(payload)
        return issued, mac, payload[_TIME.size : _TIME.size + _TAG_LEN]

    def verify(
        self,
        credentials: Credentials,
        method: str,
        ha1_lookup: Callable[[str, DigestAlgorithm], str | None],
        now: float,
        *,
        body: bytes = b"",
        source_tag: bytes | None = None,
    ) -> AuthResult:
        """Check ``credentials`` for a request with ``method`` (and ``body``, for auth-int).

        ``ha1_lookup(username, algorithm)`` returns the stored HA1 or None for an unknown user.
        ``source_tag``: the :meth:`source_tag` of the address the request came from, to say in
        a failure whether the nonce was issued there (None: not asked).
        """
        user = credentials.username
        if not credentials.is_digest:
            return AuthResult(AuthOutcome.MISSING, user, REASON_NOT_DIGEST)
        # RFC 3261 §22.3/§22.4: credentials for another realm are not for us -> challenge.
        if credentials.realm != self.realm:
            return AuthResult(AuthOutcome.MISSING, user, REASON_REALM)
        algorithm = DigestAlgorithm.from_token(credentials.algorithm)
        if algorithm is None or algorithm not in self.algorithms:
            return _failed(user, REASON_ALGORITHM)
        opened = self._open_nonce(credentials.nonce)
        if opened is None:
            return _failed(user, REASON_NONCE)
        # RFC 2617 §3.2.2: opaque is returned unaltered (tolerated when absent).
        opaque = credentials.opaque.encode()
        if opaque and not hmac.compare_digest(opaque, self._opaque_bytes):
            return _failed(user, REASON_OPAQUE)
        problem = self._qop_problem(credentials, algorithm)
        if problem:
            return _failed(user, problem)
        matched, known = self._response_ok(credentials, algorithm, method, ha1_lookup, body)
        if not matched:
            from_source = source_tag is None or hmac.compare_digest(opened[2], source_tag)
            return AuthResult(
                AuthOutcome.FAILED,
                user,
                REASON_INVALID,
                unknown_user=not known,
                nonce_from_source=from_source,
            )
        issued, key, _ = opened
        # RFC 2617 §3.2.1: stale only when the digest itself is valid.  A nonce "issued" ahead
        # of now came from a process whose clock ran ahead (its system clock was stepped back
        # while it ran, runtime/clock.py): its replay state is gone, so it is stale too.
        if now - issued > self.nonce_lifetime or issued > now + NONCE_CLOCK_SKEW:
            return AuthResult(AuthOutcome.STALE, user, REASON_EXPIRED)
        return self._record_use(key, issued, credentials, now)

    def _qop_problem(self, credentials: Credentials, algorithm: DigestAlgorithm) -> str:
        qop = credentials.qop.lower()
        if not qop:
            # The RFC 2069 form (no qop) is kept for old MD5 clients (RFC 3261 §22.4); it
            # never existed for SHA-256, whose RFCs (7616, 8760) always send qop.
            legacy = self.allow_no_qop and algorithm is DigestAlgorithm.MD5
            return "" if legacy else REASON_QOP_REQUIRED
        if qop not in ("auth", "auth-int"):
            return REASON_QOP
        # RFC 2617 §3.2.2: cnonce and nc MUST be present when qop is.
        if not credentials.cnonce:
            return REASON_CNONCE
        if _NC_RE.fullmatch(credentials.nc) is None:
            return REASON_NC
        return ""

    def _response_ok(
        self,
        credentials: Credentials,
        algorithm: DigestAlgorithm,
        method: str,
        ha1_lookup: Callable[[str, DigestAlgorithm], str | None],
        body: bytes,
    ) -> tuple[bool, bool]:
        """(the response is right, the user is known)."""
        c = credentials
        stored = ha1_lookup(c.username, algorithm.base)
        # No user enumeration: an unknown user costs the same and fails the same way.
        ha1 = self._dummy_ha1[algorithm.base] if stored is None else stored.lower()
        ha1 = _session_ha1(ha1, c.nonce, c.cnonce, algorithm)
        expected = _digest_response(
            ha1, algorithm, method, c.uri, body, nonce=c.nonce, qop=c.qop, nc=c.nc, cnonce=c.cnonce
        )
        same = hmac.compare_digest(expected.encode(), c.response.lower().encode())
        return same and bool(stored), stored is not None

    def _record_use(
        self, key: bytes, issued: float, credentials: Credentials, now: float
    ) -> AuthResult:
        """Nonce-count replay protection (RFC 2617 §3.2.2: nc MUST increase)."""
        user = credentials.username
        self._prune(now)
        entry = self._uses.get(key)
        if entry is None:
            if issued <= self._evicted_mark:  # its state may have been evicted: start afresh
                return AuthResult(AuthOutcome.STALE, user, REASON_STATE_LOST)
            entry = self._uses[key] = _NonceUse(issued, 0, 0)
            self._evict(now)
        else:
            self._uses.move_to_end(key)
        nc = int(credentials.nc, 16) if credentials.qop else 0
        if credentials.qop and nc <= entry.highest_nc:
            return _failed(user, REASON_REPLAY)
        if not credentials.qop and entry.uses:  # RFC 2069 style: a nonce is single-use
            return AuthResult(AuthOutcome.STALE, user, REASON_REUSED)
        if entry.uses >= self.max_nonce_uses:
            return AuthResult(AuthOutcome.STALE, user, REASON_USE_LIMIT)
        entry.uses += 1
        entry.highest_nc = nc
        return AuthResult(AuthOutcome.OK, user, REASON_OK)

    def _prune(self, now: float) -> None:
        """Drop expired entries from the least recently used end."""
        uses = self._uses
        while uses:
            entry = uses[next(iter(uses))]
            if now - entry.issued <= self.nonce_lifetime:
                return
            uses.popitem(last=False)

    def _evict(self, now: float) -> None:
        while len(self._uses) > self._max_tracked:
            _, entry = self._uses.popitem(last=False)
            if now - entry.issued <= self.nonce_lifetime:
                self._evicted_mark = max(self._evicted_mark, entry.issued)

    @property
    def tracked_nonces(self) -> int:
        """How many nonces have replay state (for metrics and tests)."""
        return len(self._uses)


def _failed(username: str, reason: str) -> AuthResult:
    return AuthResult(AuthOutcome.FAILED, username, reason)


# Client side


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


def _choose_qop(offered: tuple[str, ...]) -> str:
    if not offered:
        return ""
    for qop in ("auth", "auth-int"):
        if qop in offered:
            return qop
    raise RemoteProtocolError("Unsupported qop")


def build_authorization(
    challenge: str | Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge`` (RFC 3261 §22.2).

    Uses qop=auth when offered (else auth-int, else the RFC 2069 form).
    """
    ch = parse_challenge(challenge) if isinstance(challenge, str) else challenge
    if ch.scheme.lower() != "digest":
        raise RemoteProtocolError(f"Unsupported authentication scheme {ch.scheme}")
    algorithm = DigestAlgorithm.from_token(ch.algorithm)
    if algorithm is None:
        raise RemoteProtocolError(REASON_ALGORITHM)
    qop = _choose_qop(ch.qop)
    nc_text = f"{nc:08x}" if qop else ""
    ha1 = compute_ha1(username, ch.realm, password, algorithm.base)
    ha1 = _session_ha1(ha1, ch.nonce, cnonce, algorithm)
    response = _digest_response(
        ha1, algorithm, method, uri, body, nonce=ch.nonce, qop=qop, nc=nc_text, cnonce=cnonce
    )
    parts = [f"username={_quote(username)}", f"realm={_quote(ch.realm)}"]
    parts += [f"nonce={_quote(ch.nonce)}", f"uri={_quote(uri)}", f'response="{response}"']
    if ch.algorithm:
        parts.append(f"algorithm={algorithm.value}")
    if qop:
        parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    if ch.opaque is not None:
        parts.append(f"opaque={_quote(ch.opaque)}")
    return "Digest " + ", ".join(parts)
