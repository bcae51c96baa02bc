"""REGISTER handling on an endpoint: domain check, digest, AOR ownership, then the registrar."""

from __future__ import annotations

import logging

from presence_sip.auth.guard import RequestGuard, quoted_for_log
from presence_sip.endpoint import Incoming
from presence_sip.hss.msisdn import canonical_identity, identity_in_domain
from presence_sip.hss.store import SubscriberStore
from presence_sip.registrar.registrar import Registrar, aor_key
from presence_sip.sip import Response, make_response
from presence_sip.sip.errors import SipError
from presence_sip.sip.uri import AbsoluteUri, SipUri

log = logging.getLogger(__name__)


HSS_POLL_INTERVAL = 1.0
"""Seconds between two reads of the HSS write counter (as the presence server's rules poll)."""

REMOVAL_BATCH = 1000
"""AORs whose bindings are removed per timer call (the loop stays responsive)."""


class RegistrarRole:
    """The REGISTER handler (RFC 3261 §10.3 steps 1-3; steps 4+ are :class:`Registrar`).

    With authentication it also watches the HSS (a timed role): when a subscriber is removed,
    its bindings go at once (they could not be refreshed, but would route and show as
    registered until they expired); also those of a subscriber removed while the node was down,
    at its first poll.
    """

    def __init__(
        self,
        registrar: Registrar,
        guard: RequestGuard,
        hss: SubscriberStore | None,
        domains: frozenset[str],
        *,
        now: float = 0.0,
    ) -> None:
        self.registrar = registrar
        self.guard = guard
        self.hss = hss
        self.domains = domains
        self._watching = hss is not None and guard.enabled
        self._data_version: int | None = None
        """The HSS write counter at the last check; None: not checked yet, so the first poll
        checks the bindings restored at start (a subscriber may have been removed while the
        node was down)."""
        self._next_poll = now + HSS_POLL_INTERVAL
        self._gone: list[str] = []
        """AORs whose subscriber left the HSS, bindings still to remove."""

    # --- the timed role: drop the bindings of removed subscribers ----------------------------

    def get_timer(self) -> float | None:
        return self._next_poll if self._watching else None

    def handle_timer(self, now: float) -> None:
        if not self._watching or now < self._next_poll:
            return
        self._next_poll = now + HSS_POLL_INTERVAL
        if not self._gone:
            self._poll()
        self._remove_gone(now)

    def _poll(self) -> None:
        assert self.hss is not None
        try:
            version = self.hss.data_version()
            if version == self._data_version:
                return
            numbers = [aor for aor in self.registrar.aors() if aor.startswith("+")]
            # One query (the numbers of every subscriber) instead of one per AOR: a rule or a
            # credit changes as often as a subscriber is removed; not read when no number is
            # bound.
            known = self.hss.msisdns() if numbers else frozenset()
        except SipError:
            log.warning("cannot read the HSS: bindings checked again later", exc_info=True)
            return
        self._data_version = version
        self._gone = [aor for aor in numbers if aor not in known]

    def _remove_gone(self, now: float) -> None:
        batch, self._gone = self._gone[:REMOVAL_BATCH], self._gone[REMOVAL_BATCH:]
        for aor in batch:
            count = self.registrar.remove_aor(aor, now)
            if count:
                log.info("%s left the HSS: %d binding(s) removed", aor, count)
        if self._gone:
            self._next_poll = now  # the rest on the next timer call

    def handle(self, incoming: Incoming, now: float) -> Response:
        request = incoming.request
        ruri = request.request_uri
        # Step 1: the registrar serves its own domains only (never an open relay).
        if isinstance(ruri, SipUri) and ruri.host.lower() not in self.domains:
            return make_response(request, 403, "Domain not served here")
        verdict = self.guard.check(request, now, incoming.source)
        if verdict.status:
            reason = None if verdict.status in (401, 407) else verdict.reason  # 401: no hints
            return make_response(request, verdict.status, reason, headers=verdict.challenge_headers)
        to_uri = request.to.uri
        if isinstance(to_uri, AbsoluteUri):
            return make_response(request, 400, "Invalid AOR")  # RFC 4475 unksm2
        if isinstance(to_uri, SipUri) and to_uri.host.lower() not in self.domains:
            return make_response(request, 403, "AOR not in this domain")
        aor = self._subscriber_aor(aor_key(to_uri))
        if aor is None:
            return make_response(request, 400, "Invalid AOR")
        refusal = self._authorise(verdict.username, aor)
        if refusal:
            # An authenticated user registering someone else's number: the operator's log
            # names who and from where, as a failed authentication's line does (fail2ban).
            log.warning(
                "register forbidden: src=%s port=%d transport=%s user=%s aor=%s",
                incoming.source.host,
                incoming.source.port,
                incoming.source.transport,
                quoted_for_log(verdict.username or ""),
                quoted_for_log(aor),
            )
            return make_response(request, refusal[0], refusal[1])
        return self.registrar.register(request, aor, str(incoming.source), now)

    def _subscriber_aor(self, aor: str | None) -> str | None:
        """An extra identity of a subscriber (``sip:dave@domain``) registers for the subscriber:
        its bindings are the number's, where presence and routing look for them."""
        if aor is None or aor.startswith("+") or self.hss is None or not self.guard.enabled:
            return aor  # lab mode (no authentication): no store read per REGISTER
        owner = self.hss.find_by_identity(aor)
        if owner is None:
            # Written with another host of ours (Twinkle with the node's address as its
            # domain): the identity the HSS knows under the network domain.
            try:
                moved = identity_in_domain(
                    canonical_identity(aor), self.domains, self.hss.domain.lower()
                )
            except ValueError:
                moved = None
            if moved is not None:
                owner = self.hss.find_by_identity(moved)
        return aor if owner is None else owner.msisdn

    def _authorise(self, username: str | None, aor: str) -> tuple[int, str] | None:
        """RFC 3261 §10.3 step 3: the authenticated user may register this AOR."""
        if username is None:
            if self.hss is not None and self.guard.enabled:
                return 403, "Forbidden"
            return None  # --auth none: lab mode, any AOR of our domain
        if self.hss is None:
            return None
        owner = self.hss.find_by_identity(username)
        if owner is None or owner.msisdn != aor:
            return 403, "Not allowed to register this AOR"
        return None
