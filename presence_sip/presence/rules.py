"""Presence authorization (RFC 5025 semantics, simplified to the HSS model).

The HSS keeps, per presentity, a mapping from watcher identity to an :class:`Action` (RFC 5025
section 3.2.1 ``<sub-handling>``) and a default. A rule key is a watcher AOR
(``sip:alice@net-a.test``, ``alice@net-a.test``, ``tel:+4477...``) or a whole domain
(``sip:*@net-a.test``, ``*@net-a.test``).
:func:`decide` picks the action for one watcher URI; :func:`subscription_state_for` says what that
action means for the subscription, the SUBSCRIBE response and watcherinfo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from presence_sip.sip.errors import ConfigError

__all__ = [
    "Action",
    "Aor",
    "SubscriptionOutcome",
    "decide",
    "most_permissive",
    "normalise_aor",
    "parse_action",
    "subscription_state_for",
]


class Action(Enum):
    """RFC 5025 section 3.2.1 ``<sub-handling>`` values."""

    ALLOW = "allow"
    BLOCK = "block"
    POLITE_BLOCK = "polite-block"
    CONFIRM = "confirm"


# RFC 5025 section 3.2.1: block(0) < confirm(10) < polite-block(20) < allow(30); RFC 4745
# section 10.2 combines matching rules by taking the largest value.
_RANK = {Action.BLOCK: 0, Action.CONFIRM: 10, Action.POLITE_BLOCK: 20, Action.ALLOW: 30}


def parse_action(text: str) -> Action:
    """An :class:`Action` from configuration text (``allow``, ``polite-block``, ``POLITE_BLOCK``).

    Unknown text raises ``ConfigError``.
    """
    try:
        return Action(text.strip().lower().replace("_", "-"))
    except ValueError:
        choices = ", ".join(action.value for action in Action)
        raise ConfigError(f"unknown presence rule action {text!r} (expected {choices})") from None


@dataclass(frozen=True, slots=True)
class Aor:
    """A normalised address of record: ``scheme`` is ``sip`` (for sip/sips/pres) or ``tel``."""

    scheme: str
    user: str
    host: str

    @property
    def uri(self) -> str:
        """The normalised AOR as text (``sip:alice@net-a.test``, ``tel:+4477...``)."""
        if self.scheme == "tel":
            return f"tel:{self.user}"
        return f"sip:{self.user}@{self.host}" if self.user else f"sip:{self.host}"


_SCHEME_RE = re.compile(r"(sips?|pres|tel):", re.IGNORECASE)


def normalise_aor(uri: str) -> Aor | None:
    """Reduce a URI (or name-addr) to its AOR; ``None`` when it is not a usable address.

    sip, sips and pres are one scheme; user and host are lowercased; password, user parameters
    (``;npdi``), port, URI parameters and headers are dropped (RFC 3261 section 10.3 AOR
    comparison, loosened as the HSS keys are).
    """
    text = uri.strip()
    if "<" in text:
        start = text.index("<") + 1
        end = text.find(">", start)
        if end < 0:
            return None
        text = text[start:end].strip()
    scheme_match = _SCHEME_RE.match(text)
    scheme = scheme_match.group(1).lower() if scheme_match else "sip"
    rest = text[scheme_match.end() :] if scheme_match else text
    if scheme == "tel":
        number = rest.split(";", 1)[0].strip().lower()
        return Aor("tel", number, "") if number else None
    userinfo, at, hostport = rest.partition("@")
    if not at:
        userinfo, hostport = "", rest
    user = userinfo.split(":", 1)[0].split(";", 1)[0].lower()
    hostport = re.split(r"[;?]", hostport, maxsplit=1)[0]
    if hostport.startswith("["):
        host = hostport[: hostport.find("]") + 1]
    else:
        host = hostport.split(":", 1)[0]
    if not host or any(c.isspace() for c in host):
        return None
    return Aor("sip", user, host.lower())


@lru_cache(maxsize=4096)
def _rule(key: str) -> tuple[str, str] | None:
    """``("exact", aor)``, ``("domain", host)`` or ``None`` for an unusable rule key."""
    aor = normalise_aor(key)
    if aor is None:
        return None
    if aor.user == "*":
        return ("domain", aor.host)
    return ("exact", aor.uri)


def decide(rules: Mapping[str, Action], watcher_uri: str, default: Action) -> Action:
    """The action for ``watcher_uri`` under ``rules``.

    An exact AOR rule beats a domain rule (``*@host``); when several rules of the same kind match
    (keys that normalise alike), the most permissive wins (RFC 4745 section 10.2). No match, or
    a watcher URI that is no address: ``default``.
    """
    watcher = normalise_aor(watcher_uri)
    if watcher is None:
        return default
    exact: list[Action] = []
    domain: list[Action] = []
    for key, action in rules.items():
        rule = _rule(key)
        if rule == ("exact", watcher.uri):
            exact.append(action)
        elif rule == ("domain", watcher.host) and watcher.user:  # a user of that domain
            domain.append(action)
    matched = exact or domain
    return most_permissive(matched) if matched else default


def most_permissive(actions: Iterable[Action]) -> Action:
    """RFC 4745 §10.2: the matching rules combine to the largest RFC 5025 value (at least one)."""
    return max(actions, key=_RANK.__getitem__)


@dataclass(frozen=True, slots=True)
class SubscriptionOutcome:
    """What an :class:`Action` means for one subscription."""

    state: str
    """RFC 6665 section 4.1.3 ``Subscription-State`` value: active, pending or terminated."""
    reason: str | None
    """``reason`` parameter when terminated (``rejected``)."""
    response_status: int
    """Final response to the SUBSCRIBE: 200, or 403 when blocked (RFC 3856 section 6.6)."""
    polite_block: bool
    """Send the neutral document (RFC 5025 section 3.2.1 polite-block), not the real one."""
    winfo_status: str
    """``<watcher status>`` for watcherinfo (RFC 3857 section 3.2)."""
    winfo_event: str
    """``<watcher event>`` for watcherinfo."""


_OUTCOMES = {
    Action.ALLOW: SubscriptionOutcome("active", None, 200, False, "active", "approved"),
    Action.POLITE_BLOCK: SubscriptionOutcome("active", None, 200, True, "active", "approved"),
    # RFC 5025 section 3.2.1 confirm: pending until the presentity decides (RFC 6665: 200 OK).
    Action.CONFIRM: SubscriptionOutcome("pending", None, 200, False, "pending", "subscribe"),
    Action.BLOCK: SubscriptionOutcome(
        "terminated", "rejected", 403, False, "terminated", "rejected"
    ),
}


def subscription_state_for(action: Action) -> SubscriptionOutcome:
    """The subscription state, SUBSCRIBE response and watcherinfo status for ``action``."""
    return _OUTCOMES[action]
