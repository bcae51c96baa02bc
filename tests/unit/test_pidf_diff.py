"""Partial PIDF (RFC 5262): make_diff / apply_diff, selectors and patch operations (RFC 5261)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from presence_sip.presence.pidf import (
    PIDF_DIFF_CONTENT_TYPE,
    PIDF_DIFF_NS,
    PIDF_NS,
    documents_equivalent,
    parse_pidf,
)
from presence_sip.presence.pidf_diff import apply_diff, diff_version, make_diff
from presence_sip.sip.errors import LocalProtocolError, PidfError

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "pidf"
BOB = "sip:bob@net-b.test"
NSDECL = (
    'xmlns="urn:ietf:params:xml:ns:pidf" '
    'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
    'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"'
)


def doc(*children: str, entity: str = BOB, extra: str = "") -> bytes:
    return f'<presence {NSDECL} {extra} entity="{entity}">{"".join(children)}</presence>'.encode()


def tup(tuple_id: str, basic: str = "open", contact: str | None = None) -> str:
    contact_xml = f"<contact>{contact}</contact>" if contact else ""
    return f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status>{contact_xml}</tuple>'


def person(person_id: str, activity: str) -> str:
    return (
        f'<dm:person id="{person_id}"><rpid:activities><rpid:{activity}/></rpid:activities>'
        "</dm:person>"
    )


def device(device_id: str, urn: str = "urn:device:1") -> str:
    return f'<dm:device id="{device_id}"><dm:deviceID>{urn}</dm:deviceID></dm:device>'


def diff_doc(*operations: str, entity: str = BOB, version: int = 2, extra: str = "") -> bytes:
    return (
        f'<p:pidf-diff xmlns="{PIDF_NS}" xmlns:p="{PIDF_DIFF_NS}" '
        f'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" {extra} '
        f'entity="{entity}" version="{version}">{"".join(operations)}</p:pidf-diff>'
    ).encode()


def roundtrip(old: bytes | None, new: bytes, version: int = 7) -> bytes:
    diff = make_diff(old, new, version=version, entity=BOB)
    assert diff_version(diff) == version
    assert documents_equivalent(apply_diff(old, diff), new)
    return diff


def root_name(diff: bytes) -> str:
    return etree.QName(etree.fromstring(diff)).localname


def operations(diff: bytes) -> list[tuple[str, str | None, str | None]]:
    return [
        (etree.QName(op).localname, op.get("sel"), op.get("pos")) for op in etree.fromstring(diff)
    ]


def test_content_type():
    assert PIDF_DIFF_CONTENT_TYPE == "application/pidf-diff+xml"


# --- make_diff / apply_diff round trips --------------------------------------------------------


def test_first_document_is_pidf_full():
    new = doc(tup("t1"), person("p1", "busy"))
    diff = roundtrip(None, new, version=0)
    assert root_name(diff) == "pidf-full"
    root = etree.fromstring(diff)
    assert root.nsmap["p"] == PIDF_DIFF_NS
    assert root.get("entity") == BOB
    assert root.get("version") == "0"


def test_basic_change_is_a_replace():
    diff = roundtrip(doc(tup("t1", "open")), doc(tup("t1", "closed")))
    assert root_name(diff) == "pidf-diff"
    assert operations(diff) == [("replace", "*/tuple[@id='t1']", None)]


def test_unchanged_document_is_an_empty_diff():
    diff = roundtrip(doc(tup("t1")), doc(tup("t1")))
    assert root_name(diff) == "pidf-diff"
    assert operations(diff) == []


def test_add_remove_replace_across_tuples_persons_devices():
    old = doc(tup("t1"), tup("t2"), "<note>n</note>", person("p1", "busy"), device("d1"))
    new = doc(
        tup("t0"),
        tup("t1", "closed"),
        tup("t3"),
        tup("t4"),
        "<note>n</note>",
        person("p1", "away"),
        device("d2"),
    )
    diff = roundtrip(old, new)
    assert operations(diff) == [
        ("remove", "*/tuple[@id='t2']", None),
        ("remove", "*/dm:device[@id='d1']", None),
        ("replace", "*/tuple[@id='t1']", None),
        ("replace", "*/dm:person[@id='p1']", None),
        ("add", "*", "prepend"),
        ("add", "*/tuple[@id='t1']", "after"),
        ("add", "*/dm:person[@id='p1']", "after"),
    ]
    grouped = etree.fromstring(diff)[5]
    assert [child.get("id") for child in grouped] == ["t3", "t4"]


def test_add_after_an_element_without_id_counts_same_name_siblings():
    old = doc(tup("t1"), "<note>a</note>", "<note>b</note>")
    new = doc(tup("t1"), "<note>a</note>", "<note>b</note>", device("d1"))
    diff = roundtrip(old, new)
    assert operations(diff) == [("add", "*/note[2]", "after")]


def test_id_with_an_apostrophe_is_quoted_with_double_quotes():
    ext_old = '<x:e xmlns:x="urn:x" id="it\'s">1</x:e>'
    ext_new = '<x:e xmlns:x="urn:x" id="it\'s">2</x:e>'
    diff = roundtrip(doc(tup("t1"), ext_old), doc(tup("t1"), ext_new))
    ((kind, sel, _),) = operations(diff)
    assert kind == "replace"
    assert sel is not None
    assert sel.endswith(':e[@id="it\'s"]')


def test_namespace_declared_below_the_root_gets_a_prefix():
    # nsN numbering starts at the number of bindings (5 here) and skips a taken ns5
    old = doc(tup("t1"), '<x:e xmlns:x="urn:x" id="e1">1</x:e>', extra='xmlns:ns5="urn:y"')
    new = doc(tup("t1"), '<x:e xmlns:x="urn:x" id="e1">2</x:e>', extra='xmlns:ns5="urn:y"')
    diff = roundtrip(old, new)
    root = etree.fromstring(diff)
    ((_, sel, _),) = operations(diff)
    assert sel == "*/ns6:e[@id='e1']"
    assert root.nsmap["ns6"] == "urn:x"
    assert root.nsmap["ns5"] == "urn:y"


def test_pidf_in_a_prefix_and_another_default_namespace():
    old = (
        b'<f:presence xmlns:f="urn:ietf:params:xml:ns:pidf" xmlns="urn:z" '
        b'entity="sip:bob@net-b.test"><f:tuple id="t1"><f:status><f:basic>open</f:basic>'
        b'</f:status></f:tuple><z id="z1">1</z></f:presence>'
    )
    new = old.replace(b">1</z>", b">2</z>").replace(b">open<", b">closed<")
    diff = roundtrip(old, new)
    assert [sel for _, sel, _ in operations(diff)] == ["*/tuple[@id='t1']", "*/ns3:z[@id='z1']"]
    assert etree.fromstring(diff).nsmap["ns3"] == "urn:z"


def test_diff_prefix_avoids_a_taken_p():
    old = doc(tup("t1"), extra='xmlns:p="urn:other"')
    new = doc(tup("t1", "closed"), extra='xmlns:p="urn:other"')
    diff = roundtrip(old, new)
    root = etree.fromstring(diff)
    assert root.prefix == "p0"
    assert root.nsmap["p"] == "urn:other"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (doc(tup("t1")), doc(tup("t1"), entity="sip:other@net-b.test")),  # entity changed
        (doc(tup("t1")), doc(tup("t1"), extra='xml:lang="en"')),  # root attribute changed
        (doc(tup("t1"), tup("t2")), doc(tup("t2"), tup("t1"))),  # reordered
        (doc(tup("t1"), "<note>a</note>"), doc(tup("t1"), "<note>b</note>")),  # id-less change
        (  # an id repeated among extension elements
            doc('<x:e xmlns:x="urn:x" id="e"/>', '<x:e xmlns:x="urn:x" id="e"/>'),
            doc('<x:e xmlns:x="urn:x" id="e"/>'),
        ),
        (
            doc('<x:e xmlns:x="urn:x" id="e"/>'),
            doc('<x:e xmlns:x="urn:x" id="e"/>', '<x:e xmlns:x="urn:x" id="e"/>'),
        ),
        (  # an id-less element shares its name with elements that have ids
            doc('<x:e xmlns:x="urn:x">1</x:e>', '<x:e xmlns:x="urn:x" id="e">1</x:e>'),
            doc('<x:e xmlns:x="urn:x">1</x:e>', '<x:e xmlns:x="urn:x" id="e">2</x:e>'),
        ),
        (  # an id no selector literal can quote
            doc(tup("t1")),
            doc(tup("t1"), '<x:e xmlns:x="urn:x" id="a\'&quot;b"/>'),
        ),
    ],
)
def test_falls_back_to_pidf_full(old, new):
    entity = parse_pidf(old).entity
    diff = make_diff(old, new, version=3, entity=entity)
    assert root_name(diff) == "pidf-full"
    assert documents_equivalent(apply_diff(old, diff), new) == (parse_pidf(new).entity == entity)


def test_entity_argument_names_the_watchers_copy():
    """A watcher subscribed to another URI of the presentity (`;user=phone`, an alias) holds a
    copy with that entity (from its pidf-full); diffs between the presentity's documents apply
    to that copy."""
    old, new = doc(tup("t1")), doc(tup("t1", "closed"))
    alias = "sip:alias@net-b.test"
    held = apply_diff(None, make_diff(None, old, version=0, entity=alias))
    assert parse_pidf(held).entity == alias
    diff = make_diff(old, new, version=1, entity=alias)
    assert root_name(diff) == "pidf-diff"
    now = parse_pidf(apply_diff(held, diff))
    assert now.entity == alias
    assert now.basic == "closed"


@pytest.mark.parametrize("version", [-1, 2**32])
def test_version_out_of_range(version):
    with pytest.raises(LocalProtocolError):
        make_diff(None, doc(tup("t1")), version=version, entity=BOB)


_TUPLES = st.sampled_from(
    [tup("t1"), tup("t1", "closed"), tup("t2"), tup("t2", "closed", "sip:b@h"), tup("t3")]
)
_OTHERS = st.sampled_from(
    [
        person("p1", "busy"),
        person("p1", "away"),
        device("d1"),
        device("d1", "urn:device:2"),
        device("d2"),
        '<x:e xmlns:x="urn:x" id="e1">1</x:e>',
        '<x:e xmlns:x="urn:x" id="e1">2</x:e>',
    ]
)


def _unique(children: list[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for child in children:
        key = child.split('"')[1]
        if key not in seen:
            seen.add(key)
            kept.append(child)
    return kept


_DOCS = st.builds(
    lambda tuples, notes, others: doc(*_unique(tuples), *notes, *_unique(others)),
    st.lists(_TUPLES, max_size=4),
    st.lists(st.sampled_from(["<note>a</note>", "<note>b</note>"]), max_size=2),
    st.lists(_OTHERS, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(_DOCS, _DOCS)
def test_apply_of_make_diff_gives_the_new_document(old, new):
    roundtrip(old, new)


# --- RFC 5262 vectors ---------------------------------------------------------------------------


def test_rfc5262_full_then_diff():
    full = (VECTORS / "rfc5262-pidf-full.xml").read_bytes()
    assert diff_version(full) == 567
    base = apply_diff(None, full)
    document = parse_pidf(base)
    assert document.entity == "pres:someone@example.com"
    assert document.tuple_ids == ("sg89ae", "cg231jcr", "r1230d")
    assert document.basic == "open"
    assert b"pidf-diff" not in base
    patch = (VECTORS / "rfc5262-pidf-diff.xml").read_bytes()
    assert diff_version(patch) == 568
    result = apply_diff(base, patch)
    patched = parse_pidf(result)
    assert patched.tuple_ids == ("sg89ae", "cg231jcr", "r1230d", "ert4773")
    root = etree.fromstring(result)
    assert [etree.QName(child).localname for child in root][3:5] == ["tuple", "note"]
    r1230d = root[2]
    assert r1230d.findtext(f"{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic") == "open"
    assert root[1].xpath("string(*[local-name()='contact']/@priority)") == "0.7"
    assert b"busy" not in result
    assert b"on-the-phone" in result


# --- apply_diff: operations and selectors -------------------------------------------------------

BASE = doc(
    tup("t1", "open", "sip:bob@h"),
    tup("t2", "closed"),
    '<note xml:lang="en">hi</note>',
    person("p1", "busy"),
    device("d1"),
)


def apply(*ops: str, base: bytes = BASE, extra: str = "") -> etree._Element:
    return etree.fromstring(apply_diff(base, diff_doc(*ops, extra=extra)))


def ids(root: etree._Element) -> list[str | None]:
    return [child.get("id") for child in root]


def test_add_append_prepend_before_after():
    new = '<tuple id="n"><status/></tuple>'
    assert ids(apply(f'<p:add sel="*/tuple[1]" pos="before">{new}</p:add>'))[:2] == ["n", "t1"]
    assert ids(apply(f'<p:add sel="/presence" pos="prepend">{new}</p:add>'))[0] == "n"
    assert ids(apply(f'<p:add sel="*/tuple[2]" pos="after">{new}</p:add>'))[2] == "n"
    assert ids(apply(f'<p:add sel="*">{device("d9")}</p:add>'))[-1] == "d9"


def test_add_attribute():
    root = apply('<p:add sel="*/tuple[@id=\'t2\']/status/basic" type="@note">x</p:add>')
    assert root[1][0][0].get("note") == "x"
    root = apply('<p:add sel="*/tuple[2]/status/basic" type="@xml:lang"/>')
    assert root[1][0][0].get("{http://www.w3.org/XML/1998/namespace}lang") == ""


def test_replace_attribute_text_and_element():
    root = apply('<p:replace sel="*/note/@xml:lang">fr</p:replace>')
    assert root[2].get("{http://www.w3.org/XML/1998/namespace}lang") == "fr"
    root = apply(
        "<p:replace sel=\"*/tuple[contact='sip:bob@h']/status/basic/text()\">closed</p:replace>"
    )
    assert parse_pidf(etree.tostring(root)).basic == "closed"
    root = apply('<p:replace sel="*/note/text()"/>')
    assert root[2].text is None or root[2].text == ""
    root = apply(
        f'<p:replace sel="*/dm:person[@id=&quot;p1&quot;]">{person("p1", "away")}</p:replace>'
    )
    assert b"rpid:away" in etree.tostring(root)


def test_remove_attribute_text_element():
    root = apply('<p:remove sel="*/note/@xml:lang"/>')
    assert len(root[2].attrib) == 0
    root = apply('<p:remove sel="*/note/text()" ws="both"/>')
    assert root[2].text is None
    root = apply(
        '<p:remove sel="*/tuple[@id=\'t2\']" ws="before"/>',
        '<p:remove sel="*/dm:device" ws="after"/>',
    )
    assert ids(root) == ["t1", None, "p1"]


def test_remove_keeps_mixed_content_text():
    base = doc(tup("t1"), '<x:m xmlns:x="urn:x">a<x:b/>b<x:c/>c</x:m>')
    root = apply(
        '<p:remove sel="*/x:m/x:c"/>',
        '<p:remove sel="*/x:m/x:b"/>',
        base=base,
        extra='xmlns:x="urn:x"',
    )
    assert (len(root[1]), root[1].text) == (0, "abc")
    base = doc(tup("t1"), '<x:m xmlns:x="urn:x"><x:b/>b</x:m>')
    root = apply('<p:remove sel="*/x:m/x:b"/>', base=base, extra='xmlns:x="urn:x"')
    assert root[1].text == "b"


def test_predicates_positions_and_wildcards():
    root = apply('<p:remove sel="*/*[1]"/>')
    assert ids(root)[0] == "t2"
    root = apply("<p:remove sel=\"*/tuple[@id='t1'][1]\"/>")
    assert ids(root)[0] == "t2"
    root = apply('<p:remove sel="*/tuple[ status ]"/>'.replace("[ status ]", "[2]"))
    assert ids(root)[:2] == ["t1", None]


@pytest.mark.parametrize(
    ("operation", "reason"),
    [
        ("<p:add/>", "<add> without sel"),
        ('<p:add sel="*/tuple[0]"><tuple/></p:add>', "matched 0 nodes"),
        ('<p:add sel="*/tuple"><tuple/></p:add>', "matched 2 nodes"),
        ('<p:add sel="*/tuple[5]"><tuple/></p:add>', "matched 0 nodes"),
        ('<p:add sel="*/q:tuple"><tuple/></p:add>', "undeclared prefix 'q'"),
        ('<p:add sel="@id"/>', "unsupported selector"),
        ('<p:add sel="*/tuple(1)"/>', "unsupported selector"),
        ('<p:add sel="*/text()x"/>', "unsupported selector"),
        ('<p:add sel="*//tuple"/>', "unsupported selector"),
        ('<p:add sel="*/note/text()">x</p:add>', "add needs an element selector"),
        ('<p:add sel="*" type="namespace::x">urn:x</p:add>', "unsupported add type"),
        ('<p:add sel="*/note" type="@xml:lang">en</p:add>', "already exists"),
        ('<p:add sel="*" pos="after"><note/></p:add>', "cannot add after the root"),
        ('<p:add sel="*" pos="before"><note/></p:add>', "cannot add before the root"),
        ('<p:add sel="*" pos="middle"><note/></p:add>', "unsupported pos"),
        ('<p:add sel="*">text</p:add>', "text node content is not supported"),
        ('<p:add sel="*"><note/>tail</p:add>', "text node content is not supported"),
        ('<p:add sel="*"></p:add>', "<add> without content"),
        ('<p:replace sel="*/note"><note/><note/></p:replace>', "exactly one element"),
        ('<p:replace sel="*"><presence/></p:replace>', "exactly one element"),
        ('<p:replace sel="*/note/@id">x</p:replace>', "matched 0 nodes"),
        ('<p:remove sel="*"/>', "cannot remove the root element"),
        ('<p:remove sel="*/note" ws="around"/>', "ws must be before, after or both"),
        ('<p:remove sel="*/tuple[1]/status"/>', "Invalid PIDF: tuple 't1' without <status>"),
        ('<p:insert sel="*"/>', "unknown operation"),
        ("<extra/>", "unknown operation"),
    ],
)
def test_invalid_operations(operation, reason):
    with pytest.raises(PidfError) as caught:
        apply_diff(BASE, diff_doc(operation))
    assert caught.value.status == 400
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (BASE, "root element must be <pidf-full> or <pidf-diff>"),
        (diff_doc().replace(b'version="2"', b'version="x"'), "version 'x' is not"),
        (diff_doc().replace(b'version="2"', b'version="4294967296"'), "is not an unsigned"),
        (diff_doc().replace(b'version="2"', b""), "version '' is not"),
        (diff_doc(entity="sip:eve@net-b.test"), "does not match the base document"),
        (b"<p:pidf-diff", "Invalid PIDF diff: not well-formed XML"),
        (b"x" * 70000, "PIDF diff too large"),
    ],
)
def test_invalid_diff_documents(body, reason):
    with pytest.raises(PidfError) as caught:
        apply_diff(BASE, body)
    assert reason in caught.value.reason


def test_pidf_diff_without_base():
    with pytest.raises(PidfError, match="needs the previous full document"):
        apply_diff(None, diff_doc())


def test_pidf_diff_without_entity_applies():
    body = diff_doc('<p:remove sel="*/dm:device"/>').replace(f'entity="{BOB}"'.encode(), b"")
    assert b"dm:device" not in apply_diff(BASE, body)


def test_pidf_full_validates_its_content():
    body = (
        f'<p:pidf-full xmlns="{PIDF_NS}" xmlns:p="{PIDF_DIFF_NS}" version="1" '
        f'entity="{BOB}"><tuple id="a"/></p:pidf-full>'
    ).encode()
    with pytest.raises(PidfError, match="without <status>"):
        apply_diff(None, body)


def test_pidf_full_with_prefixed_diff_namespace_only():
    body = (
        f'<d:pidf-full xmlns:d="{PIDF_DIFF_NS}" xmlns:f="{PIDF_NS}" version="1" '
        f'entity="{BOB}"><f:tuple id="a"><f:status/></f:tuple></d:pidf-full>'
    ).encode()
    xml = apply_diff(None, body)
    assert parse_pidf(xml).tuple_ids == ("a",)
    assert PIDF_DIFF_NS.encode() not in xml
