"""RFC 5626 (outbound) at the registrar: which REGISTER registers a flow, and what it replaces.

A user agent that supports outbound puts ``+sip.instance`` (its instance ID, a URN that outlives
restarts) and ``reg-id`` (which of its flows this is) in the Contact of its REGISTER, and
``outbound`` in Supported (§4.2).  The registrar then keys the binding by AOR, instance ID and
reg-id rather than by the Contact URI (§6): a REGISTER over a new flow (a new connection, a new
NAT binding, a new ephemeral port in the Contact) replaces the binding of the flow before it,
instead of leaving it to expire beside the new one, and the 2xx says so with
``Require: outbound``.

Refused, as §6 says: a REGISTER that carries ``reg-id`` in one Contact and has other Contacts
(400), and a ``reg-id`` that is not 1 to 2**31-1 (400).  A ``reg-id`` without ``+sip.instance``,
or from a user agent that did not say it supports outbound, is ignored: the binding is an RFC 3261
one.  So is an outbound REGISTER whose first hop does not support outbound (it came through a
proxy whose first Path URI has no ``ob``, or without Path), where §6 asks for a 439 (First Hop
Lacks Outbound Support): pjsua, which asks for outbound by default over TCP and TLS, never
recovers from a 439 (pjproject sends the same REGISTER again and again, and the account stays
unregistered), while a 2xx without ``Require: outbound`` is its documented way of learning that
outbound is not available (§4.2.1), and the registrar behind a plain edge proxy (Kamailio's
default) answers so too.

This node is the first hop when the user agent sends it the REGISTER directly; the flow is then
the connection (TCP/TLS) or the source address (UDP) the REGISTER came from, which the binding
keeps as its ``source``.
"""

from __future__ import annotations

from dataclasses import dataclass

from presence_sip.registrar.bindings import Binding
from presence_sip.sip.errors import RemoteProtocolError
from presence_sip.sip.message import Request
from presence_sip.sip.uri import NameAddr, SipUri, parse_name_addr

__all__ = ["OUTBOUND", "FlowId", "binding_flow", "registered_flow"]

OUTBOUND = "outbound"
"""The option tag (RFC 5626 §11)."""

REG_ID_MAX = 2**31 - 1
"""RFC 5626 §12: ``reg-id = "reg-id" EQUAL 1*DIGIT ; 1 to (2^31 - 1)``."""


@dataclass(frozen=True, slots=True)
class FlowId:
    """One flow of one user agent instance (RFC 5626 §6): what an outbound binding is keyed by,
    within its AOR."""

    instance: str
    """The ``+sip.instance`` value without its quotes (``<urn:uuid:...>``), lower-case: UUIDs
    compare without regard to case (RFC 4122 §3)."""
    reg_id: int


def registered_flow(request: Request, contacts: list[NameAddr]) -> FlowId | None:
    """The flow ``request`` (a REGISTER with these ``contacts``) registers, or None for an RFC 3261
    registration; a refusal raises :class:`RemoteProtocolError` with its status (400)."""
    if not any(_flow_params(contact) is not None for contact in contacts):
        return None
    if not _supports_outbound(request):
        return None  # §6: a user agent that did not ask for outbound gets RFC 3261 bindings
    if len(contacts) != 1:
        raise RemoteProtocolError("More than one Contact with reg-id", 400)
    instance, reg_id = _flow_params(contacts[0]) or ("", "")
    flow = FlowId(_instance_id(instance), _reg_id(reg_id))
    if not _first_hop_supports_outbound(request):
        return None  # (not 439: see the module docstring)
    return flow


def binding_flow(binding: Binding) -> FlowId | None:
    """The flow a stored binding was registered with (its Contact parameters), if any."""
    if "reg-id" not in binding.params.lower():
        return None  # the usual binding: no parse
    try:
        params = _flow_params(parse_name_addr(f"<{binding.contact}>{binding.params}", "Contact"))
        if params is None:
            return None
        return FlowId(_instance_id(params[0]), _reg_id(params[1]))
    except RemoteProtocolError:
        return None


def _flow_params(contact: NameAddr) -> tuple[str, str] | None:
    instance = contact.param("+sip.instance")
    reg_id = contact.param("reg-id")
    if instance is None or reg_id is None:
        return None
    return instance, reg_id


def _instance_id(value: str) -> str:
    if len(value) < 3 or not (value.startswith('"') and value.endswith('"')):
        # §12: +sip.instance is a quoted "<" instance-val ">"
        raise RemoteProtocolError("Invalid +sip.instance", 400)
    inner = value[1:-1]
    if not (inner.startswith("<") and inner.endswith(">")) or len(inner) < 3:
        raise RemoteProtocolError("Invalid +sip.instance", 400)
    return inner.lower()


def _reg_id(value: str) -> int:
    if not value.isascii() or not value.isdigit() or not 0 < int(value) <= REG_ID_MAX:
        raise RemoteProtocolError("Invalid reg-id", 400)
    return int(value)


def _supports_outbound(request: Request) -> bool:
    tags = request.token_list("Supported") + request.token_list("Require")
    return any(tag.lower() == OUTBOUND for tag in tags)


def _first_hop_supports_outbound(request: Request) -> bool:
    """§6: the REGISTER came straight from the user agent (one Via, no Path), or the proxy that
    did receive it put ``ob`` in its Path URI (it keeps the flow, RFC 5626 §5.1)."""
    paths = request.headers.values("Path")
    if not paths:
        return len(request.headers.values("Via")) == 1
    uri = parse_name_addr(paths[0], "Path").uri
    return isinstance(uri, SipUri) and uri.param("ob") is not None
