"""Per-method digest policy for a UAS role: challenge, verify, or let through."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from presence_sip.auth.algorithms import DigestAlgorithm
from presence_sip.auth.digest import (
    NO_SOURCE,
    REASON_INVALID,
    AuthOutcome,
    AuthResult,
    DigestAuthenticator,
    uri_host,
    uri_matches,
)
from presence_sip.auth.headers import parse_credentials
from presence_sip.auth.throttle import AuthThrottle
from presence_sip.log_limit import LogLimit
from presence_sip.sip.errors import RemoteProtocolError
from presence_sip.sip.message import Request
from presence_sip.sip.peer import Peer

log = logging.getLogger(__name__)

FAILED_LINE = "auth failed: src=%s port=%d transport=%s method=%s user=%s realm=%s reason=%s"
"""The one WARNING line per request whose credentials fail (wrong password, unknown user, a
nonce not ours, a replayed nonce-count, malformed credentials): fail2ban-style filters match
``auth failed: src=<HOST> ``.  Values the client wrote are JSON-quoted (no CR/LF, no quote can
end them early) and cut to :data:`LOGGED_CHARS`; the password and the response never appear."""

STALE_LINE = "auth stale: src=%s port=%d transport=%s method=%s user=%s realm=%s reason=%s"
"""INFO: the right password with a nonce no longer usable (answered ``stale=true``), which a
phone meets in normal operation: not a failure, and kept apart from :data:`FAILED_LINE`."""

LOGGED_CHARS = 64
"""Characters of a client-written value (user, realm) that are logged."""

_UNKNOWN_SOURCE = Peer("udp", "-", 0)


def quoted_for_log(value: str) -> str:
    """A client-written value as the auth log lines write it: JSON-quoted (no CR/LF, no quote
    ends it early), cut to :data:`LOGGED_CHARS`."""
    text = value if len(value) <= LOGGED_CHARS else value[:LOGGED_CHARS] + "..."
    return json.dumps(text)


DEFAULT_CHALLENGED = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH"})
"""Methods challenged by default (issue 4): everything that creates state."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer: ``username`` when let through, else a challenge to send."""

    username: str | None
    """Authenticated digest username; None when authentication is off for this method."""
    status: int = 0
    """0 when let through; 401 (UAS) or 407 (proxy) to challenge; 403 for a failure."""
    challenge_headers: tuple[tuple[str, str], ...] = ()
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 0


_LET_THROUGH = Verdict(None)
"""The verdict when authentication does not apply (immutable: one for all requests)."""

BLOCKED_REASON = "Too many failed authentications"
"""The reason phrase of the 503 (with Retry-After) to a source blocked by :mod:`throttle`."""


class RequestGuard:
    """Applies digest authentication (RFC 3261 §22) to the methods in ``challenged``.

    An unknown user is challenged exactly like a known one with a wrong password: nothing tells
    them apart (no subscriber enumeration).
    """

    def __init__(
        self,
        authenticator: DigestAuthenticator | None,
        ha1_lookup: Callable[[str, DigestAlgorithm], str | None],
        *,
        challenged: frozenset[str] = DEFAULT_CHALLENGED,
        proxy: bool = False,
        hosts: frozenset[str] = frozenset(),
        throttle: AuthThrottle | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.throttle = throttle
        """Failed authentications per source address and the blocks they start (None: off)."""
        self.failures = 0
        """Requests whose credentials failed, since start (for the status line)."""
        self._quiet: dict[str, LogLimit] = {}
        """Failures that are no password guess, by reason (a fixed set of ours): logged once a
        minute each."""
        self.ha1_lookup = ha1_lookup
        self.challenged = challenged
        self.proxy = proxy
        self.hosts = hosts
        """This node's domains and addresses: a digest ``uri`` naming one of them was made for
        this server (SIPp, for one, puts ``sip:SERVER-IP:PORT`` there, not the Request-URI)."""

    @property
    def enabled(self) -> bool:
        return self.authenticator is not None

    def check(self, request: Request, now: float, source: Peer | None = None) -> Verdict:
        """The verdict on ``request`` from ``source`` (the address the operator's log names
        when its credentials fail: one line per request, :data:`FAILED_LINE`)."""
        authenticator = self.authenticator
        if authenticator is None or request.method not in self.challenged:
            return _LET_THROUGH
        throttle = self.throttle
        if throttle is not None and source is not None:
            wait = throttle.retry_after(source.host, now)
            if wait:  # its credentials are not even checked: no guess gets an answer
                return Verdict(None, 503, (("Retry-After", str(wait)),), BLOCKED_REASON)
        # A tag of the client's address in our nonces: over UDP a source can be forged, and a
        # wrong password with a nonce issued elsewhere is counted and logged as no guess.
        tag = NO_SOURCE if source is None else authenticator.source_tag(source.host)
        header = "Proxy-Authorization" if self.proxy else "Authorization"
        stale = False
        reason = "Credentials required"
        failed: tuple[str, str, str, bool] | None = None  # (user, realm, why, guess): the log
        for value in request.headers.get_all(header):
            try:
                credentials = parse_credentials(value)
            except RemoteProtocolError:
                self._log_failure(
                    request, source, now, "", "", "Malformed Authorization", guess=False
                )
                return self._refuse(request, "Malformed Authorization")
            if credentials.realm == authenticator.realm and not self._names_us(
                credentials.uri, request
            ):
                # RFC 7616 §3.4.6: the server MUST make sure the digest names the resource of
                # the Request-Line (a response computed for another URI is not replayed here).
                why = "Digest uri does not match the Request-URI"
                self._log_failure(
                    request, source, now, credentials.username, credentials.realm, why, False
                )
                return self._refuse(request, why)
            result = authenticator.verify(
                credentials, request.method, self.ha1_lookup, now, body=request.body,
                source_tag=tag,
            )  # fmt: skip
            if result.outcome is AuthOutcome.OK:
                return Verdict(result.username)
            if result.outcome is AuthOutcome.STALE:
                stale = True
                self._log(STALE_LINE, logging.INFO, request, source, result.username,
                          credentials.realm, result.reason)  # fmt: skip
            if result.outcome is not AuthOutcome.MISSING:
                reason = result.reason
            if result.outcome is AuthOutcome.FAILED:
                # Only a digest compared with the password's is a guess, and only a guess
                # counts towards a block: a replayed nonce-count comes with the right digest
                # (a phone whose requests arrive out of order sends them too), and a nonce not
                # ours (or another check failing first) was never compared, so a forged UDP
                # source needs at least a nonce of ours to get an address blocked; and that
                # nonce must have been sent to that address, unless the source cannot be
                # forged (TCP, TLS).
                why = _why(result)
                guess = result.reason == REASON_INVALID
                if guess and not result.nonce_from_source and not _unforgeable(source):
                    guess = False
                    why += " (nonce issued to another address)"
                failed = (result.username, credentials.realm, why, guess)
        if failed is not None:
            self._log_failure(request, source, now, *failed)
        else:
            log.debug("%s %s challenged: %s", request.method, request.uri, reason)
        return self._challenge(now, stale, reason, tag)

    def _log_failure(
        self,
        request: Request,
        source: Peer | None,
        now: float,
        user: str,
        realm: str,
        why: str,
        guess: bool = True,
    ) -> None:
        self.failures += 1
        if guess:
            if self.throttle is not None and source is not None:
                self.throttle.failed(source.host, now)
        else:
            # Not a password guess (a nonce not ours, malformed credentials, a replayed
            # nonce-count): anyone can forge these from any address over UDP, without a
            # challenge, so a line each would be a log flood; one line a minute per reason.
            limit = self._quiet.get(why)
            if limit is None:
                limit = self._quiet[why] = LogLimit()
            if not limit.due(now):
                return
            if limit.count > 1:
                why = f"{why} ({limit.count} so far, one line a minute)"
        self._log(FAILED_LINE, logging.WARNING, request, source, user, realm, why)

    @staticmethod
    def _log(
        line: str, level: int, request: Request, source: Peer | None, user: str, realm: str,
        why: str,
    ) -> None:  # fmt: skip
        if not log.isEnabledFor(level):
            return
        peer = source or _UNKNOWN_SOURCE
        log.log(level, line, peer.host, peer.port, peer.transport, request.method,
                quoted_for_log(user), quoted_for_log(realm), json.dumps(why))  # fmt: skip

    def _names_us(self, digest_uri: str, request: Request) -> bool:
        """The credentials' ``uri`` is the Request-URI, or names this node itself."""
        return uri_matches(digest_uri, request.uri) or uri_host(digest_uri) in self.hosts

    @staticmethod
    def _refuse(request: Request, reason: str) -> Verdict:
        return Verdict(None, 400, (), reason)

    def _challenge(self, now: float, stale: bool, reason: str, tag: bytes) -> Verdict:
        assert self.authenticator is not None
        name = "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"
        values = self.authenticator.challenge(now, stale=stale, source_tag=tag)
        return Verdict(None, 407 if self.proxy else 401, tuple((name, v) for v in values), reason)


def _unforgeable(source: Peer | None) -> bool:
    """A stream's source address cannot be forged (its handshake went both ways)."""
    return source is not None and source.reliable


def _why(result: AuthResult) -> str:
    """The log's reason: an unknown user and a wrong password told apart (the log is the
    operator's; the client gets the same answer for both)."""
    if result.reason == REASON_INVALID:
        return "unknown user" if result.unknown_user else "wrong password"
    return result.reason
