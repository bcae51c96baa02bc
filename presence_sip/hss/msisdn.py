"""MSISDNs in E.164 and the SIP/tel identities that carry them.

The canonical form of an MSISDN is ``+`` followed by 3 to 15 digits, the first one 1-9
(ITU-T E.164 section 6.1: at most 15 digits; no country code starts with 0).

Which inputs are accepted where (one decision, documented once):

- :func:`normalize_msisdn` is for operator input (CLI, configuration).  It insists on the global
  ``+`` form, so a national number typed by mistake (``07700900123``) is never read as a country
  code.  Accepted: ``+447700900123``, ``+44 7700 900123``, ``+44-7700-900123``,
  ``tel:+44-7700-900123`` and ``sip:+447700900123@net-a.test;user=phone``.
  Rejected: ``447700900123`` (no ``+``), local tel numbers, non-numeric SIP users.
- :func:`msisdn_from_uri` is for AORs received on the wire and is lenient where SIP is:
  ``sip:+MSISDN@domain;user=phone``, ``sip:+MSISDN@domain``, ``sip:MSISDN@domain`` (a digits-only
  user is read as a global number) and ``tel:+MSISDN``.  It returns ``None`` instead of raising.
- :func:`msisdn_from_username` reads a digest username: the MSISDN with or without ``+``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import unquote

__all__ = [
    "InvalidMsisdn",
    "canonical_identity",
    "identity_in_domain",
    "is_msisdn",
    "msisdn_from_identity",
    "msisdn_from_uri",
    "msisdn_from_username",
    "normalize_msisdn",
    "normalize_prefix",
]

# ITU-T E.164 section 6.1: country code 1-9..., 15 digits at most.
_E164 = re.compile(r"\+[1-9][0-9]{2,14}")
_BARE_E164 = re.compile(r"[1-9][0-9]{2,14}")
_PREFIX = re.compile(r"\+[1-9][0-9]{0,14}")
_USERNAME = re.compile(r"\+?[1-9][0-9]{2,14}")
# RFC 3966 section 3: visual-separator = "-" / "." / "(" / ")".
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")
_SPACES = str.maketrans("", "", " \t")
_SIP_SCHEMES = frozenset({"sip", "sips"})
_IDENTITY_SCHEMES = frozenset({"sip", "sips", "tel", "pres", "im"})
_IDENTITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"]+")


class InvalidMsisdn(ValueError):
    """Text that is not an E.164 number in any form accepted here."""


def is_msisdn(text: str) -> bool:
    """True if *text* is already a canonical MSISDN (``+447700900123``)."""
    return _E164.fullmatch(text) is not None


def normalize_msisdn(text: str) -> str:
    """Return the canonical ``+digits`` form of an operator-typed MSISDN.

    Raises :class:`InvalidMsisdn` for anything that is not a global E.164 number.
    """
    split = _split(text)
    if split is not None:
        scheme, number = split
        cleaned = number.translate(_VISUAL_SEPARATORS)
        if not scheme:
            cleaned = cleaned.translate(_SPACES)
        if _E164.fullmatch(cleaned):
            return cleaned
    raise InvalidMsisdn(f"not an E.164 number: {text!r} (expected e.g. +447700900123)")


def normalize_prefix(text: str) -> str:
    """Return the canonical form of a number-plan prefix (``+44``, ``+4477``).

    Raises :class:`InvalidMsisdn` unless it is ``+`` followed by 1-15 digits, the first 1-9.
    """
    cleaned = text.strip().translate(_VISUAL_SEPARATORS).translate(_SPACES)
    if _PREFIX.fullmatch(cleaned):
        return cleaned
    raise InvalidMsisdn(f"not an E.164 prefix: {text!r} (expected e.g. +4477)")


def msisdn_from_uri(uri_text: str) -> str | None:
    """The MSISDN an AOR designates, or ``None`` when it designates none.

    Accepts ``sip:``/``sips:`` URIs whose user part is a number, with or without ``+``
    (RFC 3261 section 19.1.6: the user part of a ``user=phone`` URI is an RFC 3966
    telephone-subscriber, visual separators allowed), global ``tel:`` URIs (RFC 3966 section 5.1.4)
    and either inside ``<...>`` (a name-addr).
    """
    split = _split(uri_text)
    if split is None or not split[0]:
        return None
    scheme, number = split
    cleaned = number.translate(_VISUAL_SEPARATORS)
    if _E164.fullmatch(cleaned):
        return cleaned
    if scheme in _SIP_SCHEMES and _BARE_E164.fullmatch(cleaned):
        return "+" + cleaned
    return None


def msisdn_from_username(username: str) -> str | None:
    """The MSISDN named by a digest username (``+447700900123`` or ``447700900123``)."""
    if _USERNAME.fullmatch(username) is None:
        return None
    return username if username.startswith("+") else "+" + username


def msisdn_from_identity(text: str) -> str | None:
    """The MSISDN behind an AOR (any form of :func:`msisdn_from_uri`) or a digest username."""
    stripped = text.strip()
    if ":" in stripped or "<" in stripped:
        return msisdn_from_uri(stripped)
    return msisdn_from_username(stripped)


def canonical_identity(uri_text: str) -> str:
    """The form under which a watcher identity is stored in presence rules and looked up.

    A URI designating a number becomes ``tel:+MSISDN`` (an E.164 number is the identity, whatever
    network's domain it was written with); other URIs keep scheme, user and host, the scheme and
    host lowercased (RFC 3261 section 19.1.4: they compare case-insensitively), URI parameters and
    headers dropped.  Raises :class:`ValueError` for text that is not a sip/sips/tel/pres/im URI.
    """
    msisdn = msisdn_from_uri(uri_text)
    if msisdn is not None:
        return "tel:" + msisdn
    text = _strip_name_addr(uri_text.strip())
    if _IDENTITY.fullmatch(text) is None:
        raise ValueError(f"not a URI: {uri_text!r} (expected e.g. sip:alice@net-a.test)")
    scheme, _, rest = text.partition(":")
    scheme = scheme.lower()
    if scheme not in _IDENTITY_SCHEMES:
        raise ValueError(f"unsupported URI scheme {scheme!r} in {uri_text!r}")
    rest = re.split(r"[;?]", rest, maxsplit=1)[0]
    user, at, host = rest.rpartition("@")
    if not host or (at and not user):
        raise ValueError(f"not a URI: {uri_text!r} (expected e.g. sip:alice@net-a.test)")
    return f"{scheme}:{user}{at}{host.lower()}"


def identity_in_domain(identity: str, hosts: Collection[str], domain: str) -> str | None:
    """``sip:dave@HOST`` -> ``sip:dave@DOMAIN`` when HOST is another of the hosts a node serves
    as its own (its listen address, a configured alias; RFC 3261 §10.3 step 1): the identity the
    HSS knows under the network domain, as a number at such a host is the number already.
    ``None`` when HOST is ``domain`` or not one of ``hosts``.  ``identity`` is in the form
    :func:`canonical_identity` gives (host lowercased, no parameters)."""
    scheme, _, rest = identity.partition(":")
    user, at, host = rest.rpartition("@")
    if not at or host == domain or host not in hosts:
        return None
    return f"{scheme}:{user}@{domain}"


def _strip_name_addr(text: str) -> str:
    """``"Bob" <sip:bob@x>`` -> ``sip:bob@x`` (RFC 3261 section 20.10 name-addr)."""
    if text.endswith(">") and "<" in text:
        return text[text.index("<") + 1 : -1].strip()
    return text


def _split(text: str) -> tuple[str, str] | None:
    """Split *text* into (lowercase scheme, text that should hold the number).

    The scheme is ``""`` for bare text.  ``None`` when the text cannot hold a number at all.
    """
    text = _strip_name_addr(text.strip())
    scheme, colon, rest = text.partition(":")
    if not colon:
        return "", text
    scheme = scheme.lower()
    if scheme == "tel":
        # RFC 3966 section 3: telephone-subscriber, then ";"-separated parameters.
        return scheme, rest.split(";", 1)[0]
    if scheme in _SIP_SCHEMES:
        userinfo, at, _host = rest.partition("@")
        if not at:
            return None
        # RFC 3261 section 25.1: userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
        user = userinfo.split(":", 1)[0].split(";", 1)[0]
        return scheme, unquote(user)
    return None
