"""The registrar role (RFC 3261 §10.3, RFC 3327 Path), sans-IO.

Bindings live in an in-memory index written through to a :class:`BindingStore`; expiry is a heap of
deadlines purged incrementally from ``handle_timer``.  Every change of an AOR between "has bindings"
and "has none" is reported to the listeners, which is how the presence server derives "registered =
open" without a PUBLISH (issue 4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from presence_sip.deadlines import DeadlineHeap
from presence_sip.hss.msisdn import msisdn_from_uri
from presence_sip.registrar.bindings import Binding, BindingStore
from presence_sip.registrar.outbound import OUTBOUND, FlowId, binding_flow, registered_flow
from presence_sip.sharded import ShardedDict
from presence_sip.sip import Request, Response, make_response
from presence_sip.sip.errors import RemoteProtocolError, SipParseError
from presence_sip.sip.message import parse_delta_seconds
from presence_sip.sip.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    TelUri,
    Uri,
    format_params,
    parse_uri,
)
from presence_sip.sip.uri_compare import uris_equal

log = logging.getLogger(__name__)

RegistrationListener = Callable[[str, bool, float], None]
"""``(aor, registered, now)``: called when an AOR gains its first or loses its last binding."""


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    """Registrar limits (the knobs Kamailio's registrar module exposes too)."""

    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 86400
    max_contacts: int = 10
    flow_timer: int = 0
    """Seconds given in ``Flow-Timer`` in the 2xx to a REGISTER of an RFC 5626 flow: its user
    agent then sends a keep-alive every 80-100 % of them (§4.4.1), for a NAT that forgets a UDP
    binding sooner than the defaults (24-29 s over UDP, 95-120 s over TCP/TLS).  0: not sent."""


_NUMBER_START = frozenset("+0123456789-.()%")
"""First characters of a SIP user part that msisdn_from_uri may read as a number (digits,
``+``, RFC 3966 visual separators, a %-escape)."""


def aor_key(uri: Uri, domains: frozenset[str] | None = None) -> str | None:
    """The key bindings are stored under: the E.164 MSISDN when the AOR is a number, else
    ``sip:user@host``.  ``sip:+MSISDN@d;user=phone``, ``sip:MSISDN@d`` and ``tel:+MSISDN`` agree.
    """
    if isinstance(uri, AbsoluteUri):
        return None
    if isinstance(uri, SipUri) and (uri.user or "")[:1] not in _NUMBER_START:
        # A user part starting with a letter (or none) never reads as an MSISDN: skip
        # re-serialising the URI for msisdn_from_uri (issue 8: once per new presentity/watcher).
        return uri.aor.replace("sips:", "sip:", 1)
    msisdn = msisdn_from_uri(str(uri))
    if msisdn is not None:
        return msisdn
    if isinstance(uri, TelUri):
        return None
    return uri.aor.replace("sips:", "sip:", 1)


class Registrar:
    """Answers REGISTER; see the module docstring."""

    def __init__(
        self,
        store: BindingStore,
        *,
        policy: RegistrarPolicy | None = None,
        listeners: list[RegistrationListener] | None = None,
        now: float = 0.0,
    ) -> None:
        self.store = store
        self.policy = policy or RegistrarPolicy()
        self.listeners = listeners if listeners is not None else []
        self._bindings: ShardedDict[str, dict[str, Binding]] = ShardedDict()
        """AOR -> its bindings by contact (sharded: one entry per registered user)."""
        self._expiry: DeadlineHeap[tuple[str, str]] = DeadlineHeap()
        """(AOR, contact) -> the expiry of that binding."""
        for binding in store.load_bindings():
            self._index(binding)
        # Bindings that expired while the node was down are purged by the first timer call,
        # once the listeners are in place: presence tells their watchers (audit 2026-11-27).

    # --- queries ----------------------------------------------------------------------------

    def bindings(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``, highest q first."""
        found = [b for b in (self._bindings.get(aor) or {}).values() if b.expires_at > now]
        found.sort(key=lambda b: -b.q)
        return found

    def is_registered(self, aor: str, now: float) -> bool:
        return any(b.expires_at > now for b in (self._bindings.get(aor) or {}).values())

    @property
    def aor_count(self) -> int:
        return len(self._bindings)

    def binding_count(self) -> int:
        """Bindings held (expired ones not yet purged included); one pass over every AOR."""
        return sum(len(self._bindings[aor]) for aor in self._bindings)

    def aors(self) -> list[str]:
        """Every AOR with bindings (expired ones not yet purged included)."""
        return list(self._bindings)

    def remove_aor(self, aor: str, now: float) -> int:
        """Remove every binding of ``aor`` (its subscriber left the HSS); how many there were."""
        contacts = list(self._bindings.get(aor) or {})
        self._apply(aor, [], contacts, now)
        return len(contacts)

    # --- timers -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._expiry.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Purge bindings whose expiry has passed (a bounded amount per call is not needed:
        the heap pops only what is due)."""
        expired: dict[str, list[str]] = {}
        while (due := self._expiry.pop_due(now)) is not None:
            aor, contact = due
            del self._bindings[aor][contact]
            expired.setdefault(aor, []).append(contact)
        for aor, contacts in expired.items():
            self.store.delete_expired(aor, contacts)
            if not self._bindings.get(aor):
                self._bindings.pop(aor)
                log.info("registration of %s expired", aor)
                self._notify(aor, False, now)

    # --- REGISTER ---------------------------------------------------------------------------

    def register(self, request: Request, aor: str, source: str, now: float) -> Response:
        """Apply a REGISTER whose AOR (``aor``) is already authenticated and authorised."""
        try:
            return self._register(request, aor, source, now)
        except RemoteProtocolError as exc:
            return make_response(request, exc.status, exc.reason)

    def _register(self, request: Request, aor: str, source: str, now: float) -> Response:
        policy = self.policy
        header_expires = request.expires
        call_id = request.call_id
        cseq = request.cseq.seq
        current = self._bindings.get(aor) or {}
        if request.contact_star:
            # RFC 3261 §10.3 step 6: "*" only with Expires: 0 and alone
            if header_expires != 0 or len(request.headers.values("Contact")) != 1:
                return make_response(request, 400, "Invalid wildcard Contact")
            for binding in current.values():
                if binding.call_id == call_id and cseq <= binding.cseq:
                    return make_response(request, 500, "Out of order request")
            self._apply(aor, [], list(current), now)
            return self._ok(request, aor, now)
        upserts: list[Binding] = []
        removed: list[str] = []
        path = tuple(request.headers.values("Path"))
        contacts = request.contacts
        flow = registered_flow(request, contacts)
        for contact in contacts:
            expires = self._expires_of(contact, header_expires)
            if 0 < expires < policy.min_expires:
                return make_response(
                    request, 423, headers=[("Min-Expires", str(policy.min_expires))]
                )
            uri_text = str(contact.uri)
            keys = _same_binding(current, contact.uri, uri_text, flow)
            for key in keys:
                existing = current[key]
                if existing.call_id == call_id and cseq <= existing.cseq:
                    return make_response(request, 500, "Out of order request")
            if expires == 0:
                removed.extend(keys or [uri_text])
                continue
            # The same binding, now written as this Contact writes it (or, RFC 5626, the
            # binding of this flow's instance and reg-id, registered with another Contact).
            removed.extend(key for key in keys if key != uri_text)
            upserts.append(
                Binding(
                    aor=aor,
                    contact=uri_text,
                    params=format_params(
                        tuple(p for p in contact.params if p[0].lower() != "expires")
                    ),
                    expires_at=now + min(expires, policy.max_expires),
                    q=_q_value(contact),
                    call_id=call_id,
                    cseq=cseq,
                    path=path,
                    source=source,
                    user_agent=request.headers.get("User-Agent") or "",
                )
            )
        kept = {c for c in current if c not in removed}
        if len(kept | {b.contact for b in upserts}) > policy.max_contacts:
            return make_response(request, 503, "Too many registered contacts")
        self._apply(aor, upserts, removed, now)
        return self._ok(request, aor, now, outbound=flow is not None)

    def _expires_of(self, contact: NameAddr, header_expires: int | None) -> int:
        value = contact.param("expires")
        if value is not None:
            return parse_delta_seconds(value, "Contact expires")
        if header_expires is not None:
            return header_expires
        return self.policy.default_expires

    def _apply(self, aor: str, upserts: list[Binding], removed: list[str], now: float) -> None:
        if not upserts and not removed:
            return
        was_registered = self.is_registered(aor, now)
        self.store.save_bindings(aor, upserts, removed)
        index = self._bindings.setdefault(aor, {})
        for contact in removed:
            index.pop(contact, None)
            self._expiry.discard((aor, contact))
        for binding in upserts:
            self._index(binding)
        if not index:
            self._bindings.pop(aor)
        registered = self.is_registered(aor, now)
        if registered != was_registered:
            self._notify(aor, registered, now)

    def _index(self, binding: Binding) -> None:
        self._bindings.setdefault(binding.aor, {})[binding.contact] = binding
        self._expiry.set((binding.aor, binding.contact), binding.expires_at)

    def _ok(self, request: Request, aor: str, now: float, *, outbound: bool = False) -> Response:
        headers = [
            ("Contact", f"<{b.contact}>{b.params};expires={b.remaining(now)}")
            for b in self.bindings(aor, now)
        ]
        # RFC 3327 §5.3: the stored Path goes back only to a UA that said it supports Path.
        if request.headers.get("Path") is not None and _supports(request, "path"):
            headers.extend(("Path", value) for value in request.headers.get_all("Path"))
        if outbound:
            headers.append(("Require", OUTBOUND))  # RFC 5626 §6: the flow is registered
            if self.policy.flow_timer:
                headers.append(("Flow-Timer", str(self.policy.flow_timer)))  # §5.4
        headers.append(("Date", _http_date(now)))  # RFC 3261 §10.3 step 8 (clockless UAs)
        return make_response(request, 200, headers=headers)

    def _notify(self, aor: str, registered: bool, now: float) -> None:
        for listener in self.listeners:
            listener(aor, registered, now)


def _same_binding(
    current: dict[str, Binding], uri: Uri, uri_text: str, flow: FlowId | None
) -> list[str]:
    """Keys of the bindings in ``current`` that a Contact updates: the one with its URI, and
    (RFC 5626 §6) the one registered with the same instance ID and reg-id as ``flow``."""
    keys = []
    same_contact = _same_contact(current, uri, uri_text)
    if same_contact is not None:
        keys.append(same_contact)
    if flow is not None:
        keys.extend(
            key
            for key, binding in current.items()
            if key != same_contact and binding_flow(binding) == flow
        )
    return keys


def _same_contact(current: dict[str, Binding], uri: Uri, uri_text: str) -> str | None:
    """The key of the binding in ``current`` whose contact is ``uri`` (RFC 3261 §10.3 step 7
    compares with §19.1.4, not as text), or None.  The usual refresh repeats the text exactly,
    and the few other bindings of one AOR are parsed only when it does not."""
    if uri_text in current:
        return uri_text
    for key in current:
        try:
            if uris_equal(parse_uri(key), uri):
                return key
        except SipParseError:
            continue  # (stored before a stricter parser: compared as text only)
    return None


def _supports(request: Request, option: str) -> bool:
    return any(token.lower() == option for token in request.token_list("Supported"))


_DATE: list[tuple[int, str]] = [(-1, "")]
"""The last Date value made, by whole second (REGISTERs of one second share it)."""


def _http_date(now: float) -> str:
    """``now`` as an RFC 1123 date in GMT (RFC 3261 §20.17)."""
    second = int(now)
    last_second, text = _DATE[0]
    if second != last_second:
        text = formatdate(second, usegmt=True)
        _DATE[0] = (second, text)
    return text


def _q_value(contact: NameAddr) -> float:
    value = contact.param("q")
    if value is None:
        return 1.0
    try:
        q = float(value)
    except ValueError:
        raise SipParseError("Malformed q-value") from None
    if not 0.0 <= q <= 1.0:
        raise SipParseError("Malformed q-value")
    return q
