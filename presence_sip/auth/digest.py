"""SIP digest authentication, sans-IO (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Server side: ``DigestAuthenticator`` issues challenges and verifies credentials.  Its nonces are
stateless-verifiable (issue time + random bytes + an HMAC-SHA256 over both with a shared secret), so
any worker sharing the secret can check them; the only state is a bounded per-nonce record of the
highest nonce-count seen, for replay protection.  Time comes in as ``now``; the clock is never read.

Client side: ``build_authorization`` answers a 401/407 challenge.

The algorithms and their hashes are in ``algorithms.py``; the header values (``Credentials``,
``Challenge``, their parsers) in ``headers.py``.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from presence_sip.sip.errors import ConfigError, RemoteProtocolError

from .algorithms import (
    DigestAlgorithm,
    compute_ha1,
    hash_hex,
    request_digest,
    session_ha1,
    strength,
)
from .headers import NONCE_COUNT, Challenge, Credentials, parse_challenge, quote

NONCE_CLOCK_SKEW = 5.0
"""Seconds a nonce's time may lie ahead of now (nodes of a network sharing the nonce key)."""

# The credentials' uri and the Request-URI


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
        self.algorithms = tuple(sorted(dict.fromkeys(algorithms), key=strength))
        self._secret = secret
        self._mac_prefix = realm.encode() + b"\0"
        self._id_source = id_source
        self._max_tracked = max_tracked_nonces
        opaque = hmac.new(secret, b"opaque\0" + self._mac_prefix, hashlib.sha256)
        self.opaque = opaque.hexdigest()[:32]
        self._opaque_bytes = self.opaque.encode()
        # Compared against when the user is unknown, so both paths cost the same.
        self._dummy_ha1 = {alg: hash_hex(alg, secret + b"\0dummy") for alg in DigestAlgorithm}
        self._uses: OrderedDict[bytes, _NonceUse] = OrderedDict()
        self._evicted_mark = float("-inf") if state_since is None else state_since
        self._challenge_tails = [
            f'", opaque="{self.opaque}", algorithm={alg.value}, qop="auth"'
            for alg in self.algorithms
        ]
        self._realm_part = f'Digest realm={quote(realm)}, nonce="'

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
        if NONCE_COUNT.fullmatch(credentials.nc) is None:
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
        ha1 = session_ha1(ha1, c.nonce, c.cnonce, algorithm)
        expected = request_digest(
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
    ha1 = session_ha1(ha1, ch.nonce, cnonce, algorithm)
    response = request_digest(
        ha1, algorithm, method, uri, body, nonce=ch.nonce, qop=qop, nc=nc_text, cnonce=cnonce
    )
    parts = [f"username={quote(username)}", f"realm={quote(ch.realm)}"]
    parts += [f"nonce={quote(ch.nonce)}", f"uri={quote(uri)}", f'response="{response}"']
    if ch.algorithm:
        parts.append(f"algorithm={algorithm.value}")
    if qop:
        parts += [f"cnonce={quote(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    if ch.opaque is not None:
        parts.append(f"opaque={quote(ch.opaque)}")
    return "Digest " + ", ".join(parts)
