"""HSS records: subscribers, presence rules, number plan, porting, presence servers.

Records are frozen and validated on construction, so an invalid one cannot exist.  The helpers
below build them from operator input and are shared by every ``SubscriberStore`` implementation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from presence_sip.hss.msisdn import InvalidMsisdn, canonical_identity, is_msisdn, normalize_msisdn

__all__ = [
    "DEFAULT_DOMAIN",
    "MAX_CREDIT",
    "InvalidRecord",
    "PlanEntry",
    "PortEntry",
    "PresenceServerRecord",
    "Rule",
    "RuleAction",
    "Subscriber",
    "SubscriberField",
    "check_credit",
    "default_identities",
    "digest_ha1",
    "extra_identities",
    "make_subscriber",
    "normalize_algorithm",
    "normalize_domain",
    "with_password",
]

DEFAULT_DOMAIN = "example.test"
"""Network domain (and digest realm) of a store created without one."""

MAX_CREDIT = 2**63 - 1
"""Largest credit a store holds (SQLite INTEGER)."""

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_SERVER_URI = re.compile(r"sips?:[^\s<>\"]+", re.IGNORECASE)
_HASHES = {"MD5": "md5", "SHA-256": "sha256"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""A C0 control character, DEL or a C1 control character (U+0080-U+009F): no softphone's password
field takes one, and a NUL cuts the password short in the tools that handle it as a C string.  A
C1 character is what a Windows-1252 byte became after a wrong decoding (a euro sign read as
Latin-1 is U+0080): the password stored would not be the one the user types."""


class InvalidRecord(ValueError):
    """Operator input that cannot become an HSS record (bad domain, action, credit, ...)."""


class RuleAction(StrEnum):
    """What a presence rule does with a watcher's subscription.

    RFC 5025 section 3.2.1 (sub-handling): block, confirm, polite-block, allow.
    """

    ALLOW = "allow"
    BLOCK = "block"
    POLITE_BLOCK = "polite-block"
    CONFIRM = "confirm"

    @classmethod
    def parse(cls, text: str) -> RuleAction:
        """The action named *text*; :class:`InvalidRecord` for any other word."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = "|".join(action.value for action in cls)
            raise InvalidRecord(f"bad action {text!r} (expected {names})") from None


class SubscriberField(StrEnum):
    """A subscriber's field a bulk import may replace besides the password (the optional
    columns of ``hss subscriber import``)."""

    CREDIT = "credit"
    PRESENCE_SERVER = "presence_server"
    IDENTITIES = "identities"


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One subscriber of the network, keyed by MSISDN.

    ``ha1_md5``/``ha1_sha256`` are the digest HA1 values for the username ``+MSISDN``;
    ``ha1_md5_digits``/``ha1_sha256_digits`` the ones for the same number written without ``+``
    (HA1 hashes the username as the client sends it, RFC 3261 section 22.4), empty if unknown.
    """

    msisdn: str
    """Canonical E.164 number, ``+447700900123``."""
    identities: tuple[str, ...]
    """SIP/tel URIs (public identities) that designate this subscriber."""
    ha1_md5: str
    """Hex ``MD5(+MSISDN:realm:password)``."""
    ha1_sha256: str
    """Hex ``SHA-256(+MSISDN:realm:password)`` (RFC 8760)."""
    presence_server: str | None
    """Name of the presence server that serves this subscriber, if assigned."""
    credit: int
    """Prepaid credit in charging units, never negative."""
    ha1_md5_digits: str = ""
    """Hex ``MD5(MSISDN-without-plus:realm:password)``."""
    ha1_sha256_digits: str = ""
    """Hex ``SHA-256(MSISDN-without-plus:realm:password)``."""

    def __post_init__(self) -> None:
        if not is_msisdn(self.msisdn):
            raise InvalidRecord(f"not a canonical MSISDN: {self.msisdn!r}")
        check_credit(self.credit)


@dataclass(frozen=True, slots=True)
class Rule:
    """A presence rule of *owner* about one watcher (also the owner's buddy list entry)."""

    owner: str
    """MSISDN of the presentity whose presence the rule guards."""
    watcher_uri: str
    """Watcher identity in ``canonical_identity`` form (``tel:+...`` for numbers)."""
    action: RuleAction
    """What to do with this watcher's subscriptions."""

    def __post_init__(self) -> None:
        if not is_msisdn(self.owner):
            raise InvalidRecord(f"not a canonical MSISDN: {self.owner!r}")
        if not isinstance(self.action, RuleAction):
            raise InvalidRecord(f"bad action {self.action!r}")


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """Number plan entry: numbers starting with *prefix* belong to *network*."""

    prefix: str
    """``+`` and 1-15 digits."""
    network: str
    """Network domain, ``net-b.test``."""


@dataclass(frozen=True, slots=True)
class PortEntry:
    """Ported-number override: *msisdn* belongs to *network* whatever its prefix says."""

    msisdn: str
    """Canonical E.164 number."""
    network: str
    """Network domain the number was ported to."""


@dataclass(frozen=True, slots=True)
class PresenceServerRecord:
    """One of the network's presence servers."""

    name: str
    """Short name used in subscriber records (``ps2``)."""
    uri: str
    """SIP URI requests for its subscribers go to (``sip:ps2.net-b.test``)."""

    def __post_init__(self) -> None:
        if _SERVER_NAME.fullmatch(self.name) is None:
            raise InvalidRecord(f"bad presence server name {self.name!r} (letters, digits, ._-)")
        if _SERVER_URI.fullmatch(self.uri) is None:
            raise InvalidRecord(f"bad presence server URI {self.uri!r} (expected sip:HOST[:PORT])")


def normalize_domain(text: str) -> str:
    """Lowercase DNS name (RFC 1035 section 2.3.1 labels); :class:`InvalidRecord` otherwise."""
    domain = text.strip().lower().removesuffix(".")
    labels = domain.split(".")
    if len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidRecord(f"bad network domain {text!r} (expected e.g. net-b.test)")
    return domain


def check_credit(credit: int) -> int:
    """*credit* if it is a whole number of units in ``0..MAX_CREDIT``."""
    if isinstance(credit, bool) or not isinstance(credit, int) or not 0 <= credit <= MAX_CREDIT:
        raise InvalidRecord(f"bad credit {credit!r} (expected a whole number >= 0)")
    return credit


def normalize_algorithm(name: str) -> str | None:
    """``"MD5"`` or ``"SHA-256"`` for a digest algorithm name (``-sess`` variants included:
    their HA1 is derived from the plain one, RFC 7616 section 3.4.2), ``None`` if unsupported."""
    base = name.strip().upper().removesuffix("-SESS")
    return base if base in _HASHES else None


def digest_ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """Hex ``H(username ":" realm ":" password)``.

    RFC 3261 section 22.4 (via RFC 2617 section 3.2.2.2) for MD5, RFC 8760 section 2 for SHA-256.
    """
    canonical = normalize_algorithm(algorithm)
    if canonical is None:
        raise InvalidRecord(f"unsupported digest algorithm {algorithm!r}")
    data = f"{username}:{realm}:{password}".encode()
    return hashlib.new(_HASHES[canonical], data).hexdigest()


def default_identities(msisdn: str, domain: str) -> tuple[str, ...]:
    """The public identities every subscriber gets: its SIP ``user=phone`` URI and tel URI."""
    return (f"sip:{msisdn}@{domain};user=phone", f"tel:{msisdn}")


def extra_identities(msisdn: str, identities: Iterable[str]) -> tuple[str, ...]:
    """Aliases beyond the defaults (``sip:alice@net-a.test``), in ``canonical_identity`` form.

    A URI designating *msisdn* itself is already covered and dropped; one designating another
    number is refused.
    """
    extras: dict[str, None] = {}
    for text in identities:
        try:
            identity = canonical_identity(text)
        except ValueError as exc:
            raise InvalidRecord(str(exc)) from None
        if identity == "tel:" + msisdn:
            continue
        if identity.startswith("tel:"):
            raise InvalidRecord(f"identity {text!r} designates another number than {msisdn}")
        extras[identity] = None
    return tuple(extras)


def make_subscriber(
    msisdn: str,
    password: str,
    realm: str,
    *,
    credit: int = 0,
    presence_server: str | None = None,
    identities: Iterable[str] = (),
) -> Subscriber:
    """A new subscriber with HA1s computed for *realm*; *msisdn* must already be canonical."""
    base = Subscriber(
        msisdn=msisdn,
        identities=default_identities(msisdn, realm) + extra_identities(msisdn, identities),
        ha1_md5="",
        ha1_sha256="",
        presence_server=presence_server,
        credit=check_credit(credit),
    )
    return with_password(base, password, realm)


def canonical_watcher(text: str) -> str:
    """The watcher a rule is about, as stored: one identity (``canonical_identity``; a bare
    ``+MSISDN`` is ``tel:+MSISDN``), or every watcher of a domain, ``sip:*@host`` (also written
    ``*@host``).  A URI without a user part
    names no watcher (``sip:host`` would never match one): refused, with the domain form."""
    stripped = text.strip()
    if stripped.startswith("*@"):
        stripped = "sip:" + stripped
    elif stripped.startswith("+") and ":" not in stripped and "@" not in stripped:
        try:  # a number as the operator types it: +447700900123 (as `subscriber add` takes)
            return "tel:" + normalize_msisdn(stripped)
        except InvalidMsisdn as exc:
            raise InvalidRecord(f"bad watcher URI: {exc}") from None
    try:
        watcher = canonical_identity(stripped)
    except ValueError as exc:
        raise InvalidRecord(f"bad watcher URI: {exc}") from None
    scheme, _, rest = watcher.partition(":")
    if scheme != "tel" and "@" not in rest:
        raise InvalidRecord(
            f"bad watcher URI: {text!r} names no watcher (every watcher of a domain: *@{rest})"
        )
    return watcher


def with_identities(
    subscriber: Subscriber, add: Iterable[str] = (), remove: Iterable[str] = ()
) -> Subscriber:
    """*subscriber* with extra identities added and removed (``canonical_identity`` forms).

    The number's own identities (``default_identities``) cannot be removed; removing one it
    does not have, or adding one naming another number, is an :class:`InvalidRecord`.  Whether
    an added identity belongs to another subscriber is the store's check.
    """
    msisdn = subscriber.msisdn
    kept = list(subscriber.identities)
    for text in remove:
        try:
            identity = canonical_identity(text)
        except ValueError as exc:
            raise InvalidRecord(str(exc)) from None
        if identity == "tel:" + msisdn:  # (every URI naming the number has this form)
            raise InvalidRecord(f"{text!r} is the number's own identity: it cannot be removed")
        if identity not in kept:
            raise InvalidRecord(f"{text!r} is not an identity of {msisdn}")
        kept.remove(identity)
    for identity in extra_identities(msisdn, add):
        if identity not in kept:
            kept.append(identity)
    return dataclasses.replace(subscriber, identities=tuple(kept))


def with_password(subscriber: Subscriber, password: str, realm: str) -> Subscriber:
    """*subscriber* with every HA1 recomputed for *password* in *realm*; an empty password, or
    one with a control character in it (C0, DEL or C1), is an :class:`InvalidRecord` (naming the
    character, not the password)."""
    if not password:
        raise InvalidRecord("empty password")
    control = _CONTROL.search(password)
    if control is not None:
        raise InvalidRecord(f"password contains a control character (U+{ord(control.group()):04X})")
    plus, digits = subscriber.msisdn, subscriber.msisdn[1:]
    return dataclasses.replace(
        subscriber,
        ha1_md5=digest_ha1(plus, realm, password, "MD5"),
        ha1_sha256=digest_ha1(plus, realm, password, "SHA-256"),
        ha1_md5_digits=digest_ha1(digits, realm, password, "MD5"),
        ha1_sha256_digits=digest_ha1(digits, realm, password, "SHA-256"),
    )
