"""Watcher information documents: ``application/watcherinfo+xml`` (RFC 3857, RFC 3858).

A presentity subscribed to ``presence.winfo`` learns who watches it and in what state; the
presence server composes these (:func:`compose_watcherinfo`) and tests read them back
(:func:`parse_watcherinfo`, parsed with the same hardened parser as PIDF).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from presence_sip.presence.pidf import (
    WATCHERINFO_CONTENT_TYPE,
    WATCHERINFO_NS,
    make_element,
    parse_xml,
    serialise,
)
from presence_sip.sip.errors import LocalProtocolError, PidfError

__all__ = [
    "WATCHERINFO_CONTENT_TYPE",
    "WATCHERINFO_NS",
    "WATCHER_EVENTS",
    "WATCHER_STATUSES",
    "WatcherEntry",
    "WatcherInfoDocument",
    "WatcherList",
    "compose_watcherinfo",
    "parse_watcherinfo",
    "parse_watcherinfo_document",
]

_WATCHERINFO = f"{{{WATCHERINFO_NS}}}watcherinfo"
_WATCHER_LIST = f"{{{WATCHERINFO_NS}}}watcher-list"
_WATCHER = f"{{{WATCHERINFO_NS}}}watcher"

# RFC 3858 section 4 schema: <watcher status=...> and <watcher event=...>.
WATCHER_STATUSES = frozenset({"pending", "active", "waiting", "terminated"})
WATCHER_EVENTS = frozenset(
    {
        "subscribe",
        "approved",
        "deactivated",
        "probation",
        "rejected",
        "timeout",
        "giveup",
        "noresource",
    }
)
_STATES = frozenset({"full", "partial"})  # RFC 3858 section 4: <watcherinfo state=...>
_MAX_VERSION = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class WatcherEntry:
    """One ``<watcher>`` (RFC 3858 section 4): a subscription to the presentity's presence."""

    id: str
    """Stable identifier of this subscription (``id``)."""
    uri: str
    """The watcher's URI (element content)."""
    status: str
    """``pending``, ``active``, ``waiting`` or ``terminated`` (RFC 3857 section 3.2)."""
    event: str
    """What moved it into ``status``: ``subscribe``, ``approved``, ``deactivated``, ..."""
    display_name: str | None = None
    """``display-name``, when the watcher gave one."""
    duration_subscribed: int | None = None
    """Seconds the subscription has existed (``duration-subscribed``)."""
    expiration: int | None = None
    """Seconds until the subscription expires (``expiration``)."""

    def __post_init__(self) -> None:
        if not self.id or not self.uri:
            raise LocalProtocolError("a watcher needs an id and a URI")
        if self.status not in WATCHER_STATUSES:
            raise LocalProtocolError(f"unknown watcher status {self.status!r}")
        if self.event not in WATCHER_EVENTS:
            raise LocalProtocolError(f"unknown watcher event {self.event!r}")


@dataclass(frozen=True, slots=True)
class WatcherList:
    """One ``<watcher-list>``: the watchers of one resource for one event package."""

    resource: str
    package: str
    watchers: tuple[WatcherEntry, ...]


@dataclass(frozen=True, slots=True)
class WatcherInfoDocument:
    """A parsed ``<watcherinfo>`` document."""

    version: int
    """RFC 3857 section 5.4: incremented by one for each document sent in a subscription."""
    state: str
    """``full`` or ``partial``."""
    watcher_lists: tuple[WatcherList, ...]


def compose_watcherinfo(
    resource: str,
    watchers: Sequence[WatcherEntry],
    *,
    version: int,
    state: str = "full",
    package: str = "presence",
) -> bytes:
    """A watcherinfo document for one resource (RFC 3858 section 4, RFC 3857 section 5.4)."""
    if state not in _STATES:
        raise LocalProtocolError(f"watcherinfo state must be full or partial, not {state!r}")
    if not 0 <= version <= _MAX_VERSION:
        raise LocalProtocolError(f"watcherinfo version {version} out of range")
    root = make_element(_WATCHERINFO, {None: WATCHERINFO_NS}, version=str(version), state=state)
    watcher_list = etree.SubElement(root, _WATCHER_LIST, resource=resource, package=package)
    for entry in watchers:
        element = etree.SubElement(
            watcher_list, _WATCHER, id=entry.id, status=entry.status, event=entry.event
        )
        for name, value in (
            ("display-name", entry.display_name),
            ("duration-subscribed", entry.duration_subscribed),
            ("expiration", entry.expiration),
        ):
            if value is not None:
                element.set(name, str(value))
        element.text = entry.uri
    return serialise(root)


def _invalid(reason: str) -> PidfError:
    return PidfError(f"Invalid watcherinfo: {reason}", 400)


def _required(element: etree._Element, name: str, allowed: frozenset[str] | None = None) -> str:
    value = element.get(name)
    if not value:
        raise _invalid(f"<{etree.QName(element).localname}> without {name}")
    if allowed is not None and value not in allowed:
        raise _invalid(f"{name} {value[:32]!r} is not one of {', '.join(sorted(allowed))}")
    return value


def _number(element: etree._Element, name: str) -> int | None:
    value = element.get(name)
    if value is None:
        return None
    if not value.isdigit() or not value.isascii() or int(value) > _MAX_VERSION:
        raise _invalid(f"{name} {value[:32]!r} is not an unsigned integer")
    return int(value)


def _watcher(element: etree._Element) -> WatcherEntry:
    uri = (element.text or "").strip()
    if not uri:
        raise _invalid("<watcher> without a URI")
    return WatcherEntry(
        id=_required(element, "id"),
        uri=uri,
        status=_required(element, "status", WATCHER_STATUSES),
        event=_required(element, "event", WATCHER_EVENTS),
        display_name=element.get("display-name"),
        duration_subscribed=_number(element, "duration-subscribed"),
        expiration=_number(element, "expiration"),
    )


def parse_watcherinfo_document(body: bytes) -> WatcherInfoDocument:
    """Validate and read a watcherinfo body; defects raise ``PidfError`` (400)."""
    root = parse_xml(body, what="watcherinfo")
    if root.tag != _WATCHERINFO:
        raise _invalid(f"root element must be <watcherinfo> in {WATCHERINFO_NS}")
    version = _number(root, "version")
    if version is None:
        raise _invalid("<watcherinfo> without version")
    lists = tuple(
        WatcherList(
            resource=_required(watcher_list, "resource"),
            package=_required(watcher_list, "package"),
            watchers=tuple(_watcher(w) for w in watcher_list.iterchildren(_WATCHER)),
        )
        for watcher_list in root.iterchildren(_WATCHER_LIST)
    )
    return WatcherInfoDocument(version, _required(root, "state", _STATES), lists)


def parse_watcherinfo(body: bytes) -> list[WatcherEntry]:
    """Every ``<watcher>`` of a watcherinfo body, in document order."""
    document = parse_watcherinfo_document(body)
    return [watcher for lst in document.watcher_lists for watcher in lst.watchers]
