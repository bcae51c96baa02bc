"""Reaching a user agent over the connection its registration came on.

A TCP/TLS user agent may put its connection's own (ephemeral) port in its Contact (pjsua's
``contactUseSrcPort``, its default).  Once that connection closes (the node restarted, a NAT
rebinding), the Contact names a port nothing listens on, so a NOTIFY to it is refused, and the
subscription would end although the user agent has registered again over a new connection.

RFC 5626 (outbound) solves this with instance IDs and flow tokens, which such a Contact does not
carry.  What this module does instead, only when a request to the dialog's remote target has
already failed: find the one registration of the watcher's address of record that came over a
connection from the same host, of the same transport, that is still up, without a proxy in
between (no Path), and whose Contact names the same user and host as the remote target; the
request goes over that registration's connection (reused by address, RFC 3261 §18.2.2).  A
binding whose connection has closed is left out: pjsua removes its old Contact only when its first
REGISTER after the loss succeeds, so one from before a second restart may remain until it expires.
Two or more such registrations on connections up (two user agents of one user on one host) are
ambiguous, and nothing is chosen (a NOTIFY to the wrong one would be answered 481 and end the
subscription all the same), unless exactly one of them has the remote target itself as its
Contact: a user agent that keeps its Contact across reconnections (pjsua does, outbound or not).

Such a request is tried this way after the remote target failed; for a watcher that asked for
its flow (RFC 5626 ``ob`` in its Contact, :attr:`presence_sip.dialog.Dialog.flow`) at once when
its connection is found gone, since its Contact names that connection's own port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from presence_sip.registrar.bindings import Binding
from presence_sip.sip.errors import SipError
from presence_sip.sip.peer import Peer, peer_from_text
from presence_sip.sip.uri import SipUri, parse_uri

__all__ = ["registration_flow"]


def registration_flow(
    bindings: Iterable[Binding],
    target: str,
    came_from: Peer,
    failed: Peer,
    connected: Callable[[Peer], bool],
) -> Peer | None:
    """The address of the one registration connection, ``connected`` now, that reaches the user
    agent of ``target`` (a dialog's remote target), whose requests came from ``came_from``, now
    that a request to ``failed`` got no answer; None when there is none or more than one, or
    over UDP."""
    if not failed.reliable:
        return None
    wanted = _user_and_host(target)
    if wanted is None:
        return None
    found: set[Peer] = set()
    exact: set[Peer] = set()
    for binding in bindings:
        if binding.path or not binding.source:
            continue  # registered through a proxy: its connection is the proxy's
        peer = peer_from_text(binding.source)
        if peer.transport != failed.transport or peer.host != came_from.host:
            continue
        if _user_and_host(binding.contact) == wanted and connected(peer):
            found.add(peer)
            if binding.contact == target:
                exact.add(peer)
    if len(exact) == 1:
        found = exact  # its Contact is the dialog's (pjsua keeps it across reconnections)
    if len(found) != 1:
        return None
    (peer,) = found
    # The one that just failed is no other way (nor a reason to take another: two connections
    # up that both failed in turn would take the NOTIFYs from one to the other for ever).
    return None if (peer.host, peer.port) == (failed.host, failed.port) else peer


def _user_and_host(uri_text: str) -> tuple[str | None, str] | None:
    """A SIP URI's user part and lower-case host; None for anything else."""
    try:
        uri = parse_uri(uri_text)
    except SipError:
        return None
    if not isinstance(uri, SipUri):
        return None
    return uri.user, uri.host.lower()
