"""Partial PIDF: ``application/pidf-diff+xml`` (RFC 5262) for partial notification (RFC 5263).

A notifier sends ``<pidf-full>`` first and whenever the change is not simply expressible,
then ``<pidf-diff>`` documents whose ``add``/``replace``/``remove`` operations (RFC 5261 XML patch)
address top-level elements by ``id`` (tuples, persons, devices) or, for elements without one, by
position. :func:`make_diff` builds either; :func:`apply_diff` applies either to the previous full
document.

Selectors are a small RFC 5261 section 4.2 subset, evaluated by walking the tree, never as XPath:
``[/]step(/step)*[/@attr | /text()]`` where a step is ``*`` or ``[prefix:]name`` with predicates
``[n]``, ``[@attr='v']`` or ``[child='v']``. Whitespace between elements is not significant here
(documents are parsed without blank text), so the ``ws`` attribute of ``remove`` is accepted and
has nothing to remove.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from presence_sip.presence.pidf import (
    PIDF_DIFF_CONTENT_TYPE,
    PIDF_DIFF_NS,
    PIDF_NS,
    XML_NS,
    document_from_element,
    make_element,
    parse_pidf_tree,
    parse_xml,
    serialise,
)
from presence_sip.sip.errors import LocalProtocolError, PidfError

__all__ = [
    "PIDF_DIFF_CONTENT_TYPE",
    "PIDF_DIFF_NS",
    "apply_diff",
    "diff_version",
    "make_diff",
]

_DIFF_PREFIX = f"{{{PIDF_DIFF_NS}}}"
_PIDF_FULL = f"{_DIFF_PREFIX}pidf-full"
_PIDF_DIFF = f"{_DIFF_PREFIX}pidf-diff"
_ADD = f"{_DIFF_PREFIX}add"
_REPLACE = f"{_DIFF_PREFIX}replace"
_REMOVE = f"{_DIFF_PREFIX}remove"
_MAX_VERSION = 0xFFFFFFFF  # RFC 5262 section 3.1: version is an xs:unsignedInt

_NAME = r"(?:[A-Za-z_][\w.\-]*:)?[A-Za-z_][\w.\-]*"
_LITERAL = r"(?:'([^']*)'|\"([^\"]*)\")"
_STEP_RE = re.compile(rf"\*|{_NAME}")
_PREDICATE_RE = re.compile(rf"\[\s*(?:(\d+)|(@?{_NAME})\s*=\s*{_LITERAL})\s*\]")
_ATTRIBUTE_RE = re.compile(rf"@({_NAME})\Z")


def _invalid(reason: str) -> PidfError:
    return PidfError(f"Invalid PIDF diff: {reason}", 400)


# --- selectors (RFC 5261 section 4.2 subset) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    """``*`` or a Clark-notation tag."""
    predicates: tuple[tuple[str, str | int, str], ...]
    """``("pos", n, "")``, ``("attr", name, value)`` or ``("child", tag, value)``."""


@dataclass(frozen=True, slots=True)
class _Target:
    element: etree._Element
    kind: str
    """``"element"``, ``"attribute"`` or ``"text"``."""
    attribute: str = ""


def _qualify(qname: str, scope: etree._Element, *, attribute: bool) -> str:
    """Clark notation for a selector name; RFC 5261 section 4.2.1: an unprefixed *element* name
    is in the default namespace in scope of the operation element."""
    prefix, colon, local = qname.rpartition(":")
    if colon:
        namespace = XML_NS if prefix == "xml" else scope.nsmap.get(prefix)
        if namespace is None:
            raise _invalid(f"undeclared prefix {prefix!r} in selector")
        return f"{{{namespace}}}{local}"
    default = None if attribute else scope.nsmap.get(None)
    return f"{{{default}}}{qname}" if default else qname


def _parse_selector(sel: str, scope: etree._Element) -> tuple[list[_Step], str | None]:
    """Split ``sel`` into element steps and an optional final ``@attr``/``text()``."""
    steps: list[_Step] = []
    position = 1 if sel.startswith("/") else 0
    while True:
        if steps and (match := _ATTRIBUTE_RE.match(sel, position)):
            return steps, _qualify(match.group(1), scope, attribute=True)
        if steps and sel.startswith("text()", position) and position + 6 == len(sel):
            return steps, ""
        step = _STEP_RE.match(sel, position)
        if step is None:
            raise _invalid(f"unsupported selector {sel[:80]!r}")
        position = step.end()
        predicates: list[tuple[str, str | int, str]] = []
        while predicate := _PREDICATE_RE.match(sel, position):
            predicates.append(_predicate(predicate, scope))
            position = predicate.end()
        name = step.group(0)
        steps.append(
            _Step(
                name if name == "*" else _qualify(name, scope, attribute=False), tuple(predicates)
            )
        )
        if position == len(sel):
            return steps, None
        if sel[position] != "/":
            raise _invalid(f"unsupported selector {sel[:80]!r}")
        position += 1


def _predicate(match: re.Match[str], scope: etree._Element) -> tuple[str, str | int, str]:
    number, name, single, double = match.groups()
    if number is not None:
        return ("pos", int(number), "")
    value = single if single is not None else double
    if name.startswith("@"):
        return ("attr", _qualify(name[1:], scope, attribute=True), value)
    return ("child", _qualify(name, scope, attribute=False), value)


def _matches(element: etree._Element, predicate: tuple[str, str | int, str]) -> bool:
    kind, name, value = predicate
    if kind == "attr":
        return element.get(str(name)) == value
    children = element.iterchildren(str(name))
    return any("".join(map(str, child.itertext())) == value for child in children)


def _filter(candidates: list[etree._Element], step: _Step) -> list[etree._Element]:
    """Apply one step's name test, then its predicates in order, to one context's children."""
    found = [c for c in candidates if step.name in ("*", c.tag)]
    for predicate in step.predicates:
        if predicate[0] == "pos":
            index = int(predicate[1]) - 1
            found = found[index : index + 1] if index >= 0 else []
        else:
            found = [c for c in found if _matches(c, predicate)]
    return found


def _select(root: etree._Element, operation: etree._Element) -> _Target:
    """The one node ``sel`` of ``operation`` selects in the document rooted at ``root``."""
    sel = operation.get("sel")
    if not sel:
        raise _invalid(f"<{etree.QName(operation).localname}> without sel")
    steps, final = _parse_selector(sel, operation)
    # The first step is taken from the document node, whose only element child is the root.
    nodes = _filter([root], steps[0])
    for step in steps[1:]:
        nodes = [found for node in nodes for found in _filter(list(node), step)]
    if final:
        nodes = [node for node in nodes if node.get(final) is not None]
    elif final == "":
        nodes = [node for node in nodes if node.text is not None]
    if len(nodes) != 1:
        # RFC 5261 section 4.1: a selector MUST select exactly one node.
        raise _invalid(f"selector {sel[:80]!r} matched {len(nodes)} nodes")
    if final is None:
        return _Target(nodes[0], "element")
    return _Target(nodes[0], "text" if final == "" else "attribute", final)


# --- patch operations (RFC 5261 sections 4.3-4.5) ---------------------------------------------


def _content(operation: etree._Element) -> list[etree._Element]:
    """Copies of the element content of an ``add``/``replace``; text content is not supported."""
    texts = [operation.text, *(child.tail for child in operation)]
    if any(text and text.strip() for text in texts):
        raise _invalid("text node content is not supported")
    elements = []
    for child in operation:
        element = copy.deepcopy(child)
        element.tail = None
        elements.append(element)
    if not elements:
        raise _invalid(f"<{etree.QName(operation).localname}> without content")
    return elements


def _add(root: etree._Element, operation: etree._Element) -> None:
    target = _select(root, operation)
    if target.kind != "element":
        raise _invalid("add needs an element selector")
    element = target.element
    new_type = operation.get("type")
    if new_type is not None:
        # RFC 5261 section 4.3: type="@name" adds an attribute; namespace additions unsupported.
        if not new_type.startswith("@"):
            raise _invalid(f"unsupported add type {new_type[:40]!r}")
        name = _qualify(new_type[1:], operation, attribute=True)
        if element.get(name) is not None:
            raise _invalid(f"attribute {new_type[:40]!r} already exists")
        element.set(name, operation.text or "")
        return
    _insert(element, operation.get("pos"), _content(operation))


def _insert(element: etree._Element, pos: str | None, new: list[etree._Element]) -> None:
    if pos is None:
        element.extend(new)
        return
    if pos == "prepend":
        index, parent = 0, element
    elif pos in ("before", "after"):
        found = element.getparent()
        if found is None:
            raise _invalid(f"cannot add {pos} the root element")
        parent = found
        index = parent.index(element) + (pos == "after")
    else:
        raise _invalid(f"unsupported pos {pos[:20]!r}")
    for offset, child in enumerate(new):
        parent.insert(index + offset, child)


def _replace(root: etree._Element, operation: etree._Element) -> None:
    target = _select(root, operation)
    element = target.element
    if target.kind == "attribute":
        element.set(target.attribute, operation.text or "")
        return
    if target.kind == "text":
        element.text = operation.text or ""
        return
    new = _content(operation)
    parent = element.getparent()
    if len(new) != 1 or parent is None:
        raise _invalid("replace needs exactly one element and a non-root target")
    new[0].tail = element.tail
    parent.replace(element, new[0])


def _remove(root: etree._Element, operation: etree._Element) -> None:
    if operation.get("ws") not in (None, "before", "after", "both"):
        raise _invalid("ws must be before, after or both")
    target = _select(root, operation)
    element = target.element
    if target.kind == "attribute":
        del element.attrib[target.attribute]
        return
    if target.kind == "text":
        element.text = None
        return
    parent = element.getparent()
    if parent is None:
        raise _invalid("cannot remove the root element")
    if element.tail:  # mixed content: keep the text that followed the removed element
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


_OPERATIONS: dict[str, Callable[[etree._Element, etree._Element], None]] = {
    _ADD: _add,
    _REPLACE: _replace,
    _REMOVE: _remove,
}


# --- applying ---------------------------------------------------------------------------------


def _version_of(root: etree._Element) -> int:
    version = root.get("version", "")
    if not version.isdigit() or not version.isascii() or int(version) > _MAX_VERSION:
        raise _invalid(f"version {version[:20]!r} is not an unsigned 32-bit integer")
    return int(version)


def _diff_root(diff: bytes) -> etree._Element:
    root = parse_xml(diff, what="PIDF diff")
    if root.tag not in (_PIDF_FULL, _PIDF_DIFF):
        raise _invalid(f"root element must be <pidf-full> or <pidf-diff> in {PIDF_DIFF_NS}")
    _version_of(root)
    return root


def diff_version(diff: bytes) -> int:
    """The ``version`` of a pidf-full/pidf-diff body (RFC 5262 section 3.1)."""
    return _version_of(_diff_root(diff))


def apply_diff(base: bytes | None, diff: bytes) -> bytes:
    """Apply a partial PIDF body to the previous full PIDF document; return the new full one.

    A ``<pidf-full>`` needs no base (RFC 5262 section 4). Version sequencing (RFC 5263 section
    4.2) is the subscriber's business: see :func:`diff_version`.
    """
    root = _diff_root(diff)
    if root.tag == _PIDF_FULL:
        return _full_to_presence(root)
    if base is None:
        raise _invalid("a <pidf-diff> needs the previous full document")
    base_document, target = parse_pidf_tree(base)
    entity = root.get("entity")
    if entity is not None and entity != base_document.entity:
        raise _invalid(f"entity {entity[:64]!r} does not match the base document")
    for operation in root:
        handler = _OPERATIONS.get(operation.tag)
        if handler is None:
            raise _invalid(f"unknown operation {str(operation.tag)[:80]!r}")
        handler(target, operation)
    return document_from_element(target).xml


def _full_to_presence(full: etree._Element) -> bytes:
    nsmap: dict[str | None, str] = {
        prefix: uri for prefix, uri in full.nsmap.items() if prefix and uri != PIDF_DIFF_NS
    }
    nsmap[None] = PIDF_NS
    presence = make_element(f"{{{PIDF_NS}}}presence", nsmap)
    for name, value in full.attrib.items():
        if name != "version":
            presence.set(name, value)
    presence.extend(list(full))
    return document_from_element(presence).xml


# --- making -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Operation:
    kind: str
    """``"add"``, ``"replace"`` or ``"remove"``."""
    target: etree._Element | None
    """The element the selector addresses (in the old or new tree); ``None``: the root."""
    pos: str | None = None
    content: tuple[etree._Element, ...] = ()


_Key = tuple[str, str, str]
"""("k", tag, id) for an element with an id, ("u", tag, serialisation) for one without."""


def _key(element: etree._Element) -> _Key:
    identifier = element.get("id")
    if identifier is None:
        return ("u", element.tag, etree.tostring(element, with_tail=False).decode())
    return ("k", element.tag, identifier)


def make_diff(old: bytes | None, new: bytes, *, version: int, entity: str) -> bytes:
    """A partial PIDF body taking a watcher from ``old`` to ``new`` (both full PIDF documents).

    ``<pidf-full>`` when there is no ``old``, when the entity or root attributes change, or when
    the change needs more than id-addressed add/replace/remove (a reordering, or a change to an
    element without an id); ``<pidf-diff>`` otherwise (RFC 5262 section 4, RFC 5263 section 3).

    ``entity`` is the entity of the watcher's copy (the URI it subscribed to, set by the
    ``<pidf-full>`` it got first), which may differ from the documents' own: the operations
    address tuples, not the root, so they apply to that copy all the same.
    """
    if not 0 <= version <= _MAX_VERSION:
        raise LocalProtocolError(f"version {version} is not an unsigned 32-bit integer")
    new_document, new_root = parse_pidf_tree(new, own=True)
    operations = None
    if old is not None:
        old_document, old_root = parse_pidf_tree(old, own=True)
        if old_document.entity == new_document.entity:
            operations = _plan(old_root, new_root)
    namespaces = _Namespaces(new_root)
    if operations is None:
        root = namespaces.root(_PIDF_FULL, entity, version)
        for name, value in new_root.items():  # e.g. xml:lang of <presence>
            if name not in ("entity", "version"):
                root.set(name, value)
        root.extend(list(new_root))
        return serialise(root)
    # Selectors first: rendering moves content out of the trees the selectors are read from.
    selectors = [namespaces.selector(operation.target) for operation in operations]
    root = namespaces.root(_PIDF_DIFF, entity, version)
    for operation, sel in zip(operations, selectors, strict=True):
        element = etree.SubElement(root, f"{_DIFF_PREFIX}{operation.kind}", sel=sel)
        if operation.pos is not None:
            element.set("pos", operation.pos)
        element.extend(operation.content)
    return serialise(root)


def _plan(old_root: etree._Element, new_root: etree._Element) -> list[_Operation] | None:
    """The operations from ``old_root`` to ``new_root``; ``None`` when a full document is due."""
    old_keys = [_key(child) for child in old_root]
    new_keys = [_key(child) for child in new_root]
    old_keyed = {key for key in old_keys if key[0] == "k"}
    new_keyed = {key for key in new_keys if key[0] == "k"}
    removed, added = old_keyed - new_keyed, new_keyed - old_keyed
    keyed_tags = {key[1] for key in old_keyed | new_keyed}
    if (
        sorted(old_root.items()) != sorted(new_root.items())
        # reordered, or an element without id changed:
        or [key for key in old_keys if key not in removed]
        != [key for key in new_keys if key not in added]
        # an id repeated, an id-less element sharing a name with ids, or an unquotable id:
        or _count_keyed(old_keys) != len(old_keyed)
        or _count_keyed(new_keys) != len(new_keyed)
        or any(key[0] == "u" and key[1] in keyed_tags for key in old_keys)
        or any("'" in key[2] and '"' in key[2] for key in new_keyed)
    ):
        return None
    old_children = dict(zip(old_keys, old_root, strict=True))
    new_children = list(zip(new_keys, new_root, strict=True))
    operations = [_Operation("remove", old_children[key]) for key in old_keys if key in removed]
    for key, element in new_children:
        if key in old_keyed and _bytes(old_children[key]) != _bytes(element):
            operations.append(_Operation("replace", element, None, (element,)))
    return operations + _additions(new_children, added)


def _count_keyed(keys: list[_Key]) -> int:
    return sum(1 for key in keys if key[0] == "k")


def _bytes(element: etree._Element) -> bytes:
    return etree.tostring(element, with_tail=False)


def _additions(children: list[tuple[_Key, etree._Element]], added: set[_Key]) -> list[_Operation]:
    """``add`` operations for new elements, each run of them after the element preceding it."""
    operations: list[_Operation] = []
    start: int | None = None
    for index, (key, _) in enumerate([*children, (("", "", ""), None)]):
        if key in added:
            start = index if start is None else start
        elif start is not None:
            anchor = children[start - 1][1] if start else None
            run = tuple(element for _, element in children[start:index])
            operations.append(_Operation("add", anchor, "after" if start else "prepend", run))
            start = None
    return operations


class _Namespaces:
    """Prefix bindings of a diff document: PIDF as default, the new document's prefixes, the
    pidf-diff prefix, and ``nsN`` for namespaces only declared below the root."""

    __slots__ = ("nsmap", "prefix_of")

    def __init__(self, new_root: etree._Element) -> None:
        diff_prefix, number = "p", 0
        while diff_prefix in new_root.nsmap:
            diff_prefix, number = f"p{number}", number + 1
        self.nsmap: dict[str | None, str] = {None: PIDF_NS, diff_prefix: PIDF_DIFF_NS}
        for prefix, uri in new_root.nsmap.items():
            if prefix is not None:
                self.nsmap[prefix] = uri
        self.prefix_of: dict[str, str] = {
            uri: prefix for prefix, uri in self.nsmap.items() if prefix
        }

    def root(self, tag: str, entity: str, version: int) -> etree._Element:
        return make_element(tag, self.nsmap, entity=entity, version=str(version))

    def _prefixed(self, element: etree._Element) -> str:
        qname = etree.QName(element)
        namespace = str(qname.namespace)
        if namespace == PIDF_NS:
            return qname.localname
        prefix = self.prefix_of.get(namespace)
        if prefix is None:
            number = len(self.nsmap)
            while f"ns{number}" in self.nsmap:
                number += 1
            prefix = f"ns{number}"
            self.nsmap[prefix] = namespace
            self.prefix_of[namespace] = prefix
        return f"{prefix}:{qname.localname}"

    def selector(self, element: etree._Element | None) -> str:
        """``*``, ``*/name[@id='x']`` or, without an id, ``*/name[n]`` (n-th of that name)."""
        if element is None:
            return "*"
        name = self._prefixed(element)
        identifier = element.get("id")
        if identifier is not None:
            quote = '"' if "'" in identifier else "'"
            return f"*/{name}[@id={quote}{identifier}{quote}]"
        position = 1 + sum(1 for _ in element.itersiblings(element.tag, preceding=True))
        return f"*/{name}[{position}]"
