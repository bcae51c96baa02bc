"""PIDF documents made here: several publications of one presentity composed into one
(:func:`compose_documents`, RFC 3863/4479), a canonical document renamed to the presentity's URI
(:func:`with_entity`), and the one-tuple documents the presence server makes itself
(:func:`status_document`: presence from registration, polite blocking).

The inputs are documents :mod:`presence_sip.presence.pidf` has validated, parsed again with its
hardened parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol
from xml.sax.saxutils import escape

from lxml import etree

from presence_sip.presence.pidf import (
    _BASIC,
    _BASIC_VALUES,
    _CONTACT,
    _DEVICE,
    _DM_TIMESTAMP,
    _ENTITY_RE,
    _NCNAME_RE,
    _NOTE,
    _PARSER,
    _PERSON,
    _PRESENCE,
    _STATUS,
    _TIMESTAMP,
    _TUPLE,
    PIDF_NS,
    make_element,
    serialise,
)
from presence_sip.sip.errors import LocalProtocolError

__all__ = ["PidfBody", "compose_documents", "status_document", "with_entity"]


class PidfBody(Protocol):
    """Anything holding a validated PIDF document (a :class:`PresenceDocument`, a publication)."""

    @property
    def xml(self) -> bytes: ...


def compose_documents(entity: str, documents: Sequence[PidfBody]) -> bytes:
    """Merge several publications (oldest first) of one presentity into one PIDF document.

    RFC 3863/4479 composition, simplified: every tuple is kept and a later tuple with the same id
    replaces an earlier one; one ``<dm:person>`` survives (RFC 4479 section 3.1: one person per
    presentity), the one with the newest ``<dm:timestamp>``, else the later publication's;
    devices are merged by id (later wins); presence-level notes and extension elements are kept,
    exact duplicates once. Namespace declarations of every publication are carried over.
    """
    _require_entity(entity)
    roots = [etree.fromstring(document.xml, _PARSER) for document in documents]
    merge = _Merge()
    for root in roots:
        for child in list(root):
            merge.add(child)
    out = make_element(_PRESENCE, _merged_nsmap(roots), entity=entity)
    out.extend(merge.ordered())
    return serialise(out)


def _merged_nsmap(roots: Iterable[etree._Element]) -> dict[str | None, str]:
    nsmap: dict[str | None, str] = {None: PIDF_NS}
    bound = {PIDF_NS}
    for root in roots:
        for prefix, uri in root.nsmap.items():
            if prefix is not None and prefix not in nsmap and uri not in bound:
                nsmap[prefix] = uri
                bound.add(uri)
    return nsmap


class _Merge:
    """The composition state of :func:`compose_documents`."""

    __slots__ = ("devices", "notes", "others", "person", "seen", "tuples")

    def __init__(self) -> None:
        self.tuples: dict[str, etree._Element] = {}
        self.devices: dict[str, etree._Element] = {}
        self.notes: list[etree._Element] = []
        self.others: list[etree._Element] = []
        self.seen: set[bytes] = set()
        self.person: tuple[datetime | None, etree._Element] | None = None

    def add(self, child: etree._Element) -> None:
        tag = child.tag
        if tag == _TUPLE:
            self.tuples[child.get("id", "")] = child
        elif tag == _DEVICE:
            self.devices[child.get("id", "")] = child
        elif tag == _PERSON:
            self._offer_person(child)
        else:
            self._keep_once(self.notes if tag == _NOTE else self.others, child)

    def _keep_once(self, bucket: list[etree._Element], child: etree._Element) -> None:
        # Exclusive C14N: the key ignores namespace declarations the element does not use.
        key = etree.tostring(child, method="c14n", exclusive=True)
        if key not in self.seen:
            self.seen.add(key)
            bucket.append(child)

    def _offer_person(self, person: etree._Element) -> None:
        element = next(person.iterchildren(_DM_TIMESTAMP), None)
        stamp = None if element is None else _parse_timestamp(element.text or "")
        current = self.person
        # Newest <timestamp> wins; without two timestamps to compare, the later publication wins.
        if current is None or current[0] is None or stamp is None or stamp >= current[0]:
            self.person = (stamp, person)

    def ordered(self) -> list[etree._Element]:
        # RFC 3863 section 4.4 schema order: tuples, notes, then extension elements.
        person = [] if self.person is None else [self.person[1]]
        _unique_ids([*self.tuples.values(), *person, *self.devices.values()])
        return [
            *self.tuples.values(),
            *self.notes,
            *person,
            *self.devices.values(),
            *self.others,
        ]


def _unique_ids(elements: list[etree._Element]) -> None:
    """Ids are unique in one document (xs:ID, RFC 3863 section 4.1.2, RFC 4479 section 4), but
    not across publications: one publisher's person may have another's tuple id.  Elements keep
    their id in order of ``elements``; a later one with an id already taken gets ``id-2``, ...
    (the same inputs give the same ids, so watchers' diffs stay small)."""
    taken: set[str] = set()
    for element in elements:
        identifier = element.get("id", "")
        if identifier in taken:
            n = 2
            while f"{identifier}-{n}" in taken:
                n += 1
            identifier = f"{identifier}-{n}"
            element.set("id", identifier)
        taken.add(identifier)


def _parse_timestamp(text: str) -> datetime | None:
    """An xs:dateTime (RFC 3339) as an aware datetime; ``None`` when unreadable."""
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


_ROOT_ENTITY = re.compile(rb'(<(?:[^\s>:]+:)?presence\b[^>]*?\sentity=)"[^"]*"')
"""The entity attribute of the root start tag of a canonical document (:func:`serialise`
quotes attributes with ``"``)."""


def with_entity(xml: bytes, entity: str) -> bytes:
    """A canonical PIDF document (``validate_pidf``'s) naming ``entity`` on its root.

    Watchers see a presentity under one URI, whichever way each publisher wrote it (RFC 3863
    section 4.1.1: the entity is the presentity's URI; it was checked to name the same one)."""
    _require_entity(entity)
    quoted = escape(entity, {'"': "&quot;"}).encode()
    rewritten, count = _ROOT_ENTITY.subn(lambda m: m.group(1) + b'"' + quoted + b'"', xml, 1)
    if count != 1:
        raise LocalProtocolError("not a canonical PIDF document")
    return rewritten


# --- documents made by the server -------------------------------------------------------------


def _require_entity(entity: str) -> None:
    if not _ENTITY_RE.match(entity):
        raise LocalProtocolError(f"entity {entity!r} is not a sip, sips, pres or tel URI")


def status_document(
    entity: str,
    basic: str,
    *,
    tuple_id: str,
    note: str | None = None,
    contact: str | None = None,
    timestamp: str | None = None,
) -> bytes:
    """A one-tuple PIDF document (RFC 3863 section 4.1).

    Used for presence derived from registration (open/closed) and for polite blocking (a neutral
    closed document, RFC 5025 section 3.2.1). Element order follows the RFC 3863 schema.
    """
    _require_entity(entity)
    if basic not in _BASIC_VALUES:
        raise LocalProtocolError(f"basic must be open or closed, not {basic!r}")
    if not _NCNAME_RE.match(tuple_id):
        raise LocalProtocolError(f"tuple id {tuple_id!r} is not an XML NCName")
    root = make_element(_PRESENCE, {None: PIDF_NS}, entity=entity)
    tuple_element = etree.SubElement(root, _TUPLE, id=tuple_id)
    etree.SubElement(etree.SubElement(tuple_element, _STATUS), _BASIC).text = basic
    for tag, text in ((_CONTACT, contact), (_NOTE, note), (_TIMESTAMP, timestamp)):
        if text is not None:
            etree.SubElement(tuple_element, tag).text = text
    return serialise(root)
