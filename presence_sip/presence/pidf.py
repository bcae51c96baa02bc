"""PIDF presence documents: RFC 3863 (PIDF), RFC 4480 (RPID), RFC 4479 (data model).

Bytes in, validated :class:`PresenceDocument` out (:func:`parse_pidf`), or only the entity and the
canonical bytes, as the compositor keeps them (:func:`validate_pidf`).  Composing publications
and the documents the server makes are :mod:`presence_sip.presence.pidf_compose`.

Hardening (STYLE.md section 4): one module-level lxml parser that never resolves entities, never
loads a DTD and never touches the network; any DOCTYPE (and so any entity declaration) is refused
before or after parsing, so "billion laughs" and external entities expand nothing; bodies over
:data:`MAX_PIDF_SIZE` are refused unparsed. Every lxml error becomes :class:`PidfError` here, at the
edge, with status 400 and a reason naming the defect.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, cast

from lxml import etree

from presence_sip.sip.errors import PidfError

__all__ = [
    "CAPS_NS",
    "CIPID_NS",
    "DM_NS",
    "MAX_PIDF_SIZE",
    "PIDF_CONTENT_TYPE",
    "PIDF_DIFF_CONTENT_TYPE",
    "PIDF_DIFF_NS",
    "PIDF_NS",
    "RPID_NS",
    "WATCHERINFO_CONTENT_TYPE",
    "WATCHERINFO_NS",
    "PresenceDocument",
    "document_basic",
    "document_from_element",
    "documents_equivalent",
    "make_element",
    "parse_pidf",
    "parse_pidf_tree",
    "parse_xml",
    "serialise",
    "validate_pidf",
]

PIDF_CONTENT_TYPE = "application/pidf+xml"
PIDF_DIFF_CONTENT_TYPE = "application/pidf-diff+xml"
WATCHERINFO_CONTENT_TYPE = "application/watcherinfo+xml"
MAX_PIDF_SIZE: Final = 64 * 1024

PIDF_NS = "urn:ietf:params:xml:ns:pidf"  # RFC 3863 section 4.4
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"  # RFC 4480 section 3
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"  # RFC 4479 section 4
CAPS_NS = "urn:ietf:params:xml:ns:pidf:caps"  # RFC 5196
CIPID_NS = "urn:ietf:params:xml:ns:pidf:cipid"  # RFC 4482
PIDF_DIFF_NS = "urn:ietf:params:xml:ns:pidf-diff"  # RFC 5262 section 5.1
WATCHERINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"  # RFC 3858 section 4
XML_NS = "http://www.w3.org/XML/1998/namespace"

_PIDF_PREFIX = f"{{{PIDF_NS}}}"
_PRESENCE: Final = f"{_PIDF_PREFIX}presence"
_TUPLE: Final = f"{_PIDF_PREFIX}tuple"
_STATUS: Final = f"{_PIDF_PREFIX}status"
_BASIC: Final = f"{_PIDF_PREFIX}basic"
_CONTACT: Final = f"{_PIDF_PREFIX}contact"
_NOTE: Final = f"{_PIDF_PREFIX}note"
_TIMESTAMP: Final = f"{_PIDF_PREFIX}timestamp"
_PERSON: Final = f"{{{DM_NS}}}person"
_DEVICE: Final = f"{{{DM_NS}}}device"
_DM_TIMESTAMP: Final = f"{{{DM_NS}}}timestamp"
_XML_LANG: Final = f"{{{XML_NS}}}lang"

_BASIC_VALUES: Final = frozenset({"open", "closed"})
# The presentity URI (RFC 3863 section 4.1.1; RFC 3859 "pres:"); SIP/tel as used by this stack.
_ENTITY_RE = re.compile(r"(?:sips?|pres|tel):[^\s<>\"']+\Z", re.IGNORECASE)
# xs:ID values are NCNames (RFC 3863 section 4.1.2 tuple id).
_NCNAME_RE = re.compile(r"[A-Za-z_][\w.\-]*\Z")

# One hardened parser for every XML body this package reads (STYLE.md section 4).
_PARSER: Final = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
    remove_blank_text=True,
    collect_ids=False,
    # Bytes are read as UTF-8 whatever the XML declaration says, so the DOCTYPE scan below sees
    # every declaration (a UTF-16 body cannot hide one, nor make libxml2 open an external subset).
    encoding="utf-8",
)


@dataclass(frozen=True, slots=True)
class PresenceDocument:
    """A validated PIDF document (RFC 3863) of one presentity.

    Only what the presence server decides on is lifted out of the XML; ``xml`` keeps everything
    (RPID, data model, capabilities, unknown extensions) verbatim.
    """

    entity: str
    """The presentity URI, from ``<presence entity=...>``."""
    tuple_ids: tuple[str, ...]
    """``id`` of every ``<tuple>``, in document order."""
    basic: str | None
    """``"open"`` if any tuple is open, else ``"closed"`` if any tuple is closed, else ``None``."""
    xml: bytes
    """Canonical serialisation: UTF-8, XML declaration, no comments or blank text."""
    person_ids: tuple[str, ...] = ()
    """``id`` of every RFC 4479 ``<dm:person>``."""
    device_ids: tuple[str, ...] = ()
    """``id`` of every RFC 4479 ``<dm:device>``."""
    person_timestamp: str | None = None
    """``<dm:timestamp>`` of the last ``<dm:person>`` that has one (RFC 4479 section 4.4)."""
    notes: tuple[str, ...] = ()
    """Text of the presence-level ``<note>`` elements (RFC 3863 section 4.1.6)."""


# --- the edge: bytes -> tree ------------------------------------------------------------------


def parse_xml(
    body: bytes, *, what: str = "PIDF", max_size: int | None = MAX_PIDF_SIZE
) -> etree._Element:
    """Parse ``body`` with the hardened parser; any defect raises ``PidfError`` (400).

    ``what`` names the document kind in the reason ("Invalid PIDF: ...", "PIDF too large");
    ``max_size`` None is for documents of our own (a composition of several publications may
    exceed what one may be).
    """
    if max_size is not None and len(body) > max_size:
        raise PidfError(f"{what} too large", 400)
    if not body.strip():
        raise PidfError(f"Invalid {what}: empty body", 400)
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise PidfError(f"Invalid {what}: DOCTYPE and entity declarations are not allowed", 400)
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.LxmlError as exc:
        if _OTHER_ENCODING.match(body):
            raise PidfError(f"Invalid {what}: only UTF-8 is accepted", 400) from None
        # An XMLSyntaxError's str() adds "(<string>, line N)" after its message (SyntaxError's
        # form): noise in a reason phrase, which UAs show (pjsua: "PUBLISH failed (400/...)").
        text = getattr(exc, "msg", None) or str(exc)
        detail = text.splitlines()[0][:80] if text else "parse error"
        raise PidfError(f"Invalid {what}: not well-formed XML ({detail})", 400) from None
    return root


_OTHER_ENCODING = re.compile(
    rb"\xff\xfe|\xfe\xff|\x00<|<\x00|\s*<\?xml[^>]*encoding=[\"'](?!utf-?8[\"'])", re.IGNORECASE
)
"""A body in another encoding than UTF-8: a UTF-16 byte order mark or zero byte, or an XML
declaration naming another (the parser reads UTF-8 only, see ``_PARSER``)."""


def make_element(tag: str, nsmap: Mapping[str | None, str], **attrib: str) -> etree._Element:
    """A new root element; ``None`` in ``nsmap`` is the default namespace."""
    # lxml-stubs type nsmap keys as str, but lxml takes None for the default namespace.
    return etree.Element(tag, attrib, cast("Mapping[str, str]", nsmap))


def serialise(root: etree._Element) -> bytes:
    """The canonical bytes of a document: UTF-8 with an XML declaration."""
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


# --- parsing ----------------------------------------------------------------------------------


def parse_pidf(body: bytes) -> PresenceDocument:
    """Validate a PIDF body (RFC 3863) and return its :class:`PresenceDocument`.

    Raises ``PidfError("Invalid PIDF: <why>", 400)`` or ``PidfError("PIDF too large", 400)``.
    """
    return document_from_element(parse_xml(body))


def parse_pidf_tree(body: bytes, *, own: bool = False) -> tuple[PresenceDocument, etree._Element]:
    """Like :func:`parse_pidf`, also returning the parsed tree (the caller owns it); ``own``:
    a document this server made, not held to :data:`MAX_PIDF_SIZE`."""
    root = parse_xml(body, max_size=None if own else MAX_PIDF_SIZE)
    return document_from_element(root), root


def _invalid(reason: str) -> PidfError:
    return PidfError(f"Invalid PIDF: {reason}", 400)


def document_from_element(root: etree._Element) -> PresenceDocument:
    """Validate a parsed ``<presence>`` element and summarise it (one pass over its children)."""
    entity, scan = _validate(root)
    basics = scan.basics
    return PresenceDocument(
        entity=entity,
        tuple_ids=tuple(scan.tuple_ids),
        basic="open" if "open" in basics else "closed" if "closed" in basics else None,
        xml=serialise(root),
        person_ids=tuple(scan.person_ids),
        device_ids=tuple(scan.device_ids),
        person_timestamp=scan.person_timestamp,
        notes=tuple(scan.notes),
    )


def validate_pidf(body: bytes) -> tuple[str, bytes]:
    """What the compositor keeps of a publication: ``(entity, canonical xml)``.

    The same checks as :func:`parse_pidf` (same ``PidfError``), without the summary."""
    if _c_simple_pidf is not None and len(body) <= MAX_PIDF_SIZE:
        simple = _c_simple_pidf(body)
    else:
        simple = _simple_pidf(body)
    if simple is not None:
        return simple
    root = parse_xml(body)
    entity, _ = _validate(root)
    return entity, serialise(root)


# The usual PUBLISH body (one presentity, tuples with a <basic> and notes, default namespace, no
# escapes) is proven valid by one regex and canonicalised without parsing XML (issue 8). Text and
# attribute values are printable ASCII without " & ' < > (nothing to escape or normalise), and
# blanks only come between tags, where the parser drops them too (remove_blank_text); anything
# else takes the lxml path. tests/unit/test_pidf.py checks both give the same bytes.
_PLAIN = rb"[!#-%(-;=?-~]"
_TEXT = _PLAIN + rb"++(?: ++" + _PLAIN + rb"++)*+"
_BLANKS = rb"[ \t\r\n]*+"
_SIMPLE_NOTE = rb"<note>" + _TEXT + rb"</note>" + _BLANKS
_SIMPLE_TUPLE = (
    rb'<tuple id="'
    + _PLAIN
    + rb'++">'
    + _BLANKS
    + rb"<status>"
    + _BLANKS
    + rb"<basic>(?:open|closed)</basic>"
    + _BLANKS
    + rb"</status>"
    + _BLANKS
    + rb"(?:"
    + _SIMPLE_NOTE
    + rb")*+</tuple>"
    + _BLANKS
)
_SIMPLE_PIDF = re.compile(
    rb'(?:<\?xml version="1\.0"(?: encoding="UTF-8")?\?>)?'
    + _BLANKS
    + rb'(<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="('
    + _PLAIN
    + rb'++)">'
    + _BLANKS
    + rb"(?:"
    + _SIMPLE_TUPLE
    + rb")++(?:"
    + _SIMPLE_NOTE
    + rb")*+</presence>)"
    + _BLANKS
)
_TUPLE_ID = re.compile(rb'<tuple id="([^"]++)">')
_BLANKS_BETWEEN_TAGS = re.compile(rb">[ \t\r\n]++<")
_DECLARATION: Final = b"<?xml version='1.0' encoding='UTF-8'?>\n"
"""What :func:`serialise` puts before the root element."""


def _simple_pidf(body: bytes) -> tuple[str, bytes] | None:
    """:func:`validate_pidf` of a body of the usual shape (see above); None for any other."""
    if len(body) > MAX_PIDF_SIZE:
        return None
    match = _SIMPLE_PIDF.fullmatch(body)
    if match is None:
        return None
    entity = match.group(2).decode("ascii")
    ids = _TUPLE_ID.findall(match.group(1))
    if not _ENTITY_RE.match(entity) or len(set(ids)) != len(ids):
        return None  # the general path names the defect
    return entity, _DECLARATION + _BLANKS_BETWEEN_TAGS.sub(b"><", match.group(1))


_c_simple_pidf: Callable[[bytes], tuple[str, bytes] | None] | None = None
"""The C extension's :func:`_simple_pidf` (``_speedups.c``: same result, one pass instead of the
regex engine); None when not compiled or with ``PRESENCE_SIP_PURE=1`` in the environment."""
if not os.environ.get("PRESENCE_SIP_PURE"):
    try:
        from presence_sip.presence import _speedups
    except ImportError:  # not compiled: the regex path
        pass
    else:
        _c_simple_pidf = _speedups.simple_pidf


def _validate(root: etree._Element) -> tuple[str, _Scan]:
    if root.tag != _PRESENCE:
        raise _invalid(f"root element is {_describe(root.tag)}, expected <presence> in {PIDF_NS}")
    entity = root.get("entity")
    if entity is None:
        raise _invalid("missing entity attribute")
    if not _ENTITY_RE.match(entity):
        raise _invalid(f"entity {entity[:64]!r} is not a sip, sips, pres or tel URI")
    scan = _Scan()
    for child in root:
        scan.visit(child)
    return entity, scan


def _describe(tag: str) -> str:
    namespace, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return f"<{local}> in {namespace}" if namespace else f"<{tag}> without namespace"


class _Scan:
    """Accumulates what one pass over the children of ``<presence>`` finds.

    Children are walked with plain iteration and ``tag`` comparisons: lxml's tag-filtered
    ``iterchildren`` costs several times more for the few children a PIDF element has."""

    __slots__ = (
        "basics",
        "device_ids",
        "ids",
        "notes",
        "person_ids",
        "person_timestamp",
        "tuple_ids",
    )

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.tuple_ids: list[str] = []
        self.person_ids: list[str] = []
        self.device_ids: list[str] = []
        self.basics: set[str] = set()
        self.notes: list[str] = []
        self.person_timestamp: str | None = None

    def visit(self, child: etree._Element) -> None:
        tag = child.tag
        if tag == _TUPLE:
            self.tuple_ids.append(self._id(child, "tuple"))
            basic = _tuple_basic(child)
            if basic is not None:
                self.basics.add(basic)
        elif tag == _NOTE:
            self.notes.append(child.text or "")
        elif tag == _PERSON:
            self.person_ids.append(self._id(child, "person"))
            stamp = _first_child(child, _DM_TIMESTAMP)
            if stamp is not None:
                self.person_timestamp = (stamp.text or "").strip()
        elif tag == _DEVICE:
            self.device_ids.append(self._id(child, "device"))
        elif not isinstance(tag, str) or tag.startswith(_PIDF_PREFIX) or tag[0] != "{":
            # RFC 3863 section 4.4 schema: tuple*, note*, then elements of *other* namespaces.
            raise _invalid(f"unexpected {_describe(str(tag))} inside <presence>")

    def _id(self, element: etree._Element, kind: str) -> str:
        value = element.get("id")
        if not value:
            raise _invalid(f"<{kind}> without id")
        if value in self.ids:
            # RFC 3863 section 4.1.2 / RFC 4479 section 4: ids are unique in the document.
            raise _invalid(f"duplicate {kind} id {value[:64]!r}")
        self.ids.add(value)
        return value


def _first_child(element: etree._Element, tag: str) -> etree._Element | None:
    for child in element:
        if child.tag == tag:
            return child
    return None


def _tuple_basic(tuple_element: etree._Element) -> str | None:
    """The ``<basic>`` of one tuple; RFC 3863 section 4.1.4: exactly one ``<status>``."""
    status = None
    for child in tuple_element:
        if child.tag == _STATUS:
            if status is not None:
                raise _invalid(f"tuple {_tuple_id(tuple_element)!r} has more than one <status>")
            status = child
    if status is None:
        raise _invalid(f"tuple {_tuple_id(tuple_element)!r} without <status>")
    basic = None
    for child in status:
        if child.tag == _BASIC:
            if basic is not None:  # RFC 3863 section 4.4 schema: at most one
                raise _invalid(f"tuple {_tuple_id(tuple_element)!r} has more than one <basic>")
            basic = child
    if basic is None:
        return None
    text = basic.text
    value = text if text in _BASIC_VALUES else (text or "").strip()
    # RFC 3863 section 4.1.4: <basic> is "open" or "closed".
    if value not in _BASIC_VALUES:
        raise _invalid(
            f"<basic> of tuple {_tuple_id(tuple_element)!r} must be open or closed,"
            f" not {value[:16]!r}"
        )
    return value


def _tuple_id(tuple_element: etree._Element) -> str:
    return tuple_element.get("id", "")[:64]


def document_basic(xml: bytes) -> str | None:
    """The aggregate ``<basic>`` of a PIDF body (see :attr:`PresenceDocument.basic`)."""
    return parse_pidf(xml).basic


def documents_equivalent(first: bytes, second: bytes) -> bool:
    """True when two PIDF bodies carry the same information.

    Both are validated, then compared in Canonical XML 2.0 with prefixes rewritten and blank text
    stripped, so prefix choice, attribute order and indentation do not matter.
    """
    return _canonical(first) == _canonical(second)


def _canonical(body: bytes) -> str:
    _, root = parse_pidf_tree(body)
    return str(etree.canonicalize(root, strip_text=True, rewrite_prefixes=True))
