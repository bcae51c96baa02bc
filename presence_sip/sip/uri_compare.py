"""URI equivalence: RFC 3261 §19.1.4 for SIP and SIPS URIs, RFC 3966 §4 for tel URIs.

Not an equality of texts (``sip:Bob@HOST;Transport=UDP`` is ``sip:Bob@host;transport=udp``) and
not an equivalence relation either: a parameter present in only one URI is ignored unless it is
one of ``user``, ``ttl``, ``method``, ``maddr``, ``transport``, so ``a ~ b`` and ``b ~ c`` do not
give ``a ~ c``.  That is why it is a comparison and not a canonical key.  Used where RFC 3261
names it: the registrar's "same URI" for a binding (§10.3 step 7).
"""

from __future__ import annotations

import ipaddress
from typing import Final

from .uri import AbsoluteUri, Params, SipUri, TelUri, Uri, unescape

_ALWAYS_COMPARED: Final = frozenset({"user", "ttl", "method", "maddr", "transport"})
"""§19.1.4: present in one URI, these must be present and equal in the other."""


def uris_equal(a: Uri, b: Uri) -> bool:
    """Whether ``a`` and ``b`` are equivalent URIs (see the module docstring)."""
    if isinstance(a, SipUri) and isinstance(b, SipUri):
        return _sip_uris_equal(a, b)
    if isinstance(a, TelUri) and isinstance(b, TelUri):
        return a.aor == b.aor and _params(a.params) == _params(b.params)
    if isinstance(a, AbsoluteUri) and isinstance(b, AbsoluteUri):
        return a.scheme.lower() == b.scheme.lower() and a.opaque == b.opaque
    return False


def _sip_uris_equal(a: SipUri, b: SipUri) -> bool:
    # A SIP and a SIPS URI are never equivalent; the user part and password are compared
    # case-sensitively, everything else case-insensitively, all after unescaping.
    if a.scheme.lower() != b.scheme.lower() or a.port != b.port:  # no default port filled in
        return False
    if _unescaped(a.user) != _unescaped(b.user) or _unescaped(a.password) != _unescaped(b.password):
        return False
    if _host(a.host) != _host(b.host):
        return False
    if _uri_headers(a.headers) != _uri_headers(b.headers):
        return False
    params_a, params_b = _params(a.params), _params(b.params)
    for name in params_a.keys() | params_b.keys():
        value_a, value_b = params_a.get(name), params_b.get(name)  # None: absent
        if value_a == value_b:
            continue
        if name in _ALWAYS_COMPARED or (value_a is not None and value_b is not None):
            return False
    return True


def _unescaped(text: str | None) -> str | None:
    return None if text is None else unescape(text)


def _host(host: str) -> str:
    """Lower-case; an IP address in its one canonical form (``[::1]`` = ``[0:0::1]``)."""
    text = host[1:-1] if host.startswith("[") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return host.lower()


def _params(params: Params) -> dict[str, str]:
    """Names and values lower-cased and unescaped (a flag's value is ``""``; the first
    of a repeated name counts)."""
    found: dict[str, str] = {}
    for name, value in params:
        found.setdefault(unescape(name).lower(), "" if value is None else unescape(value).lower())
    return found


def _uri_headers(headers: str | None) -> frozenset[tuple[str, str]]:
    """§19.1.4: header components are never ignored; compared as a set, names without case."""
    if not headers:
        return frozenset()
    pairs = set()
    for item in headers.split("&"):
        name, _, value = item.partition("=")
        pairs.add((unescape(name).lower(), unescape(value)))
    return frozenset(pairs)


__all__ = ["uris_equal"]
