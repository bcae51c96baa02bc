"""Per-method digest policy for a UAS role: challenge, verify, or let through."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from presence_sip.auth.digest import (
    AuthOutcome,
    DigestAlgorithm,
    DigestAuthenticator,
    parse_credentials,
    uri_host,
    uri_matches,
)
from presence_sip.sip.errors import RemoteProtocolError
from presence_sip.sip.message import Request

log = logging.getLogger(__name__)

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
    ) -> None:
        self.authenticator = authenticator
        self.ha1_lookup = ha1_lookup
        self.challenged = challenged
        self.proxy = proxy
        self.hosts = hosts
        """This node's domains and addresses: a digest ``uri`` naming one of them was made for
        this server (SIPp, for one, puts ``sip:SERVER-IP:PORT`` there, not the Request-URI)."""

    @property
    def enabled(self) -> bool:
        return self.authenticator is not None

    def check(self, request: Request, now: float) -> Verdict:
        authenticator = self.authenticator
        if authenticator is None or request.method not in self.challenged:
            return _LET_THROUGH
        header = "Proxy-Authorization" if self.proxy else "Authorization"
        stale = False
        reason = "Credentials required"
        for value in request.headers.get_all(header):
            try:
                credentials = parse_credentials(value)
            except RemoteProtocolError:
                return self._refuse(request, "Malformed Authorization")
            if credentials.realm == authenticator.realm and not self._names_us(
                credentials.uri, request
            ):
                # RFC 7616 §3.4.6: the server MUST make sure the digest names the resource of
                # the Request-Line (a response computed for another URI is not replayed here).
                return self._refuse(request, "Digest uri does not match the Request-URI")
            result = authenticator.verify(
                credentials, request.method, self.ha1_lookup, now, body=request.body
            )
            if result.outcome is AuthOutcome.OK:
                return Verdict(result.username)
            if result.outcome is AuthOutcome.STALE:
                stale = True
            if result.outcome is not AuthOutcome.MISSING:
                reason = result.reason
        log.debug("%s %s challenged: %s", request.method, request.uri, reason)
        return self._challenge(now, stale, reason)

    def _names_us(self, digest_uri: str, request: Request) -> bool:
        """The credentials' ``uri`` is the Request-URI, or names this node itself."""
        return uri_matches(digest_uri, request.uri) or uri_host(digest_uri) in self.hosts

    @staticmethod
    def _refuse(request: Request, reason: str) -> Verdict:
        log.info("%s %s refused: 400 %s", request.method, request.uri, reason)
        return Verdict(None, 400, (), reason)

    def _challenge(self, now: float, stale: bool, reason: str) -> Verdict:
        assert self.authenticator is not None
        name = "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"
        values = self.authenticator.challenge(now, stale=stale)
        return Verdict(None, 407 if self.proxy else 401, tuple((name, v) for v in values), reason)
