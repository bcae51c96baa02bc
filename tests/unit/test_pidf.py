"""PIDF parsing, hardening, composition and server-made documents (RFC 3863/4479/4480)."""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from presence_sip.presence import pidf as pidf_module
from presence_sip.presence.pidf import (
    DM_NS,
    MAX_PIDF_SIZE,
    PIDF_CONTENT_TYPE,
    PIDF_DIFF_CONTENT_TYPE,
    PIDF_NS,
    RPID_NS,
    WATCHERINFO_CONTENT_TYPE,
    PresenceDocument,
    document_basic,
    documents_equivalent,
    parse_pidf,
    parse_pidf_tree,
    parse_xml,
    validate_pidf,
)
from presence_sip.presence.pidf_compose import compose_documents, status_document, with_entity
from presence_sip.sip.errors import LocalProtocolError, PidfError

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "pidf"
BOB = "sip:bob@net-b.test"
HEAD = (
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
    'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
    'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:bob@net-b.test">'
)


def load(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def pidf(body: str) -> bytes:
    return f"<?xml version='1.0' encoding='UTF-8'?>\n{HEAD}{body}</presence>".encode()


def tuple_xml(tuple_id: str, basic: str | None = "open", extra: str = "") -> str:
    basic_xml = f"<basic>{basic}</basic>" if basic is not None else ""
    return f'<tuple id="{tuple_id}"><status>{basic_xml}</status>{extra}</tuple>'


def person(person_id: str, stamp: str | None, activity: str = "busy") -> str:
    stamp_xml = f"<dm:timestamp>{stamp}</dm:timestamp>" if stamp is not None else ""
    return (
        f'<dm:person id="{person_id}"><rpid:activities><rpid:{activity}/></rpid:activities>'
        f"{stamp_xml}</dm:person>"
    )


def test_content_types_and_limits():
    assert PIDF_CONTENT_TYPE == "application/pidf+xml"
    assert PIDF_DIFF_CONTENT_TYPE == "application/pidf-diff+xml"
    assert WATCHERINFO_CONTENT_TYPE == "application/watcherinfo+xml"
    assert MAX_PIDF_SIZE == 65536


# --- valid documents ---------------------------------------------------------------------------


def test_rfc3863_example():
    document = parse_pidf(load("rfc3863-example.xml"))
    assert document.entity == "pres:someone@example.com"
    assert document.tuple_ids == ("bs35r9", "eg92n8")
    assert document.basic == "open"
    assert document.notes == ("I'll be in Tokyo next week",)
    assert document.person_ids == ()
    assert document.person_timestamp is None
    assert document.xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<presence")
    assert b"<!--" not in document.xml  # comments dropped
    assert b"<im:im>busy</im:im>" in document.xml  # extensions kept verbatim
    assert b'xmlns:myex="http://id.example.com/presence/"' in document.xml


def test_rfc4480_example():
    document = parse_pidf(load("rfc4480-example.xml"))
    assert document.tuple_ids == ("bs35r9", "ty4658", "eg92n8")
    assert document.person_ids == ("p1",)
    assert document.device_ids == ("pc147",)
    assert document.person_timestamp == "2005-05-30T16:09:44+05:00"
    assert document.basic == "open"
    assert b"<rpid:place-type><lt:residence/></rpid:place-type>" in document.xml


def test_rfc4480_on_the_phone():
    document = parse_pidf(load("rfc4480-on-the-phone.xml"))
    assert document.entity == "sip:+447700900123@net-b.test"
    assert document.person_ids == ("p-bob",)
    assert b"<rpid:on-the-phone/>" in document.xml


@pytest.mark.parametrize(
    "name", ["rfc3863-example.xml", "rfc4480-example.xml", "rfc4480-on-the-phone.xml"]
)
def test_canonical_form_is_a_fixed_point(name):
    document = parse_pidf(load(name))
    again = parse_pidf(document.xml)
    assert again == document
    assert b"\n  " not in document.xml  # blank text between elements is not kept


def test_parse_pidf_tree_returns_the_tree():
    document, root = parse_pidf_tree(load("rfc3863-example.xml"))
    assert root.tag == f"{{{PIDF_NS}}}presence"
    assert document == parse_pidf(load("rfc3863-example.xml"))


@pytest.mark.parametrize(
    ("tuples", "expected"),
    [
        ([tuple_xml("a", "closed"), tuple_xml("b", "open")], "open"),
        ([tuple_xml("a", "closed"), tuple_xml("b", None)], "closed"),
        ([tuple_xml("a", None)], None),
        ([], None),
        ([tuple_xml("a", " open\n")], "open"),
    ],
)
def test_basic_aggregate(tuples, expected):
    assert parse_pidf(pidf("".join(tuples))).basic == expected
    assert document_basic(pidf("".join(tuples))) == expected


def test_empty_note_and_person_without_timestamp():
    document = parse_pidf(pidf(tuple_xml("a") + "<note/>" + person("p", None)))
    assert document.notes == ("",)
    assert document.person_timestamp is None


@pytest.mark.parametrize("entity", ["sip:a@b", "SIPS:a@b", "pres:a@b", "tel:+4477009001"])
def test_entity_schemes(entity):
    body = f'<presence xmlns="{PIDF_NS}" entity="{entity}"/>'.encode()
    assert parse_pidf(body).entity == entity


def test_non_utf8_declaration_is_read_as_utf8():
    body = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>'
        f'<presence xmlns="{PIDF_NS}" entity="{BOB}"><note>caf\u00e9</note></presence>'
    ).encode()
    assert parse_pidf(body).notes == ("caf\u00e9",)


@pytest.mark.parametrize(
    "body",
    [
        f'<?xml version="1.0" encoding="ISO-8859-1"?><presence xmlns="{PIDF_NS}" entity="{BOB}">'
        "<note>caf\u00e9</note></presence>".encode("latin-1"),
        (
            f'<?xml version="1.0" encoding="UTF-16"?><presence xmlns="{PIDF_NS}" entity="{BOB}"/>'
        ).encode("utf-16"),
        f'<presence xmlns="{PIDF_NS}" entity="{BOB}"/>'.encode("utf-16-be"),
    ],
)
def test_another_encoding_is_refused_as_such(body):
    with pytest.raises(PidfError, match="only UTF-8 is accepted"):
        parse_pidf(body)


def test_two_basic_values_in_one_status_are_refused():
    body = pidf(tuple_xml("t1", extra="").replace("</status>", "<basic>closed</basic></status>"))
    with pytest.raises(PidfError, match="tuple 't1' has more than one <basic>"):
        validate_pidf(body)


# --- hardening and invalid documents -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad-external-entity.xml", "Invalid PIDF: DOCTYPE and entity declarations"),
        ("bad-billion-laughs.xml", "Invalid PIDF: DOCTYPE and entity declarations"),
        ("bad-not-well-formed.xml", "Invalid PIDF: not well-formed XML"),
        ("bad-wrong-namespace.xml", "expected <presence> in urn:ietf:params:xml:ns:pidf"),
        ("bad-missing-entity.xml", "Invalid PIDF: missing entity attribute"),
        ("bad-entity-not-uri.xml", "is not a sip, sips, pres or tel URI"),
        ("bad-tuple-without-status.xml", "Invalid PIDF: tuple 't1' without <status>"),
        ("bad-duplicate-tuple-id.xml", "Invalid PIDF: duplicate tuple id 't1'"),
        ("bad-basic-value.xml", "<basic> of tuple 't1' must be open or closed, not 'away'"),
        ("bad-two-status.xml", "tuple 't1' has more than one <status>"),
        ("bad-tuple-without-id.xml", "Invalid PIDF: <tuple> without id"),
        ("bad-unexpected-pidf-element.xml", "unexpected <status> in urn:ietf:params:xml:ns:pidf"),
        ("bad-element-without-namespace.xml", "unexpected <extra> without namespace"),
        ("bad-duplicate-person-id.xml", "Invalid PIDF: duplicate person id 'x1'"),
        ("bad-device-without-id.xml", "Invalid PIDF: <device> without id"),
    ],
)
def test_invalid_vectors(name, reason):
    with pytest.raises(PidfError) as caught:
        parse_pidf(load(name))
    assert caught.value.status == 400
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason
    with pytest.raises(PidfError) as again:
        validate_pidf(load(name))  # the compositor's check refuses it the same way
    assert again.value.reason == caught.value.reason


@pytest.mark.parametrize("name", ["rfc3863-example.xml", "rfc4480-example.xml"])
def test_validate_pidf_keeps_entity_and_canonical_xml(name):
    body = load(name)
    document = parse_pidf(body)
    assert validate_pidf(body) == (document.entity, document.xml)


def test_billion_laughs_is_refused_quickly_and_expands_nothing():
    started = time.perf_counter()
    with pytest.raises(PidfError):
        parse_pidf(load("bad-billion-laughs.xml"))
    assert time.perf_counter() - started < 0.5


def test_external_entity_content_never_appears():
    with pytest.raises(PidfError) as caught:
        parse_pidf(load("bad-external-entity.xml"))
    assert "root:" not in caught.value.reason


def test_doctype_hidden_in_utf16_is_refused_without_opening_files():
    body = (
        '<?xml version="1.0" encoding="UTF-16"?>'
        '<!DOCTYPE presence SYSTEM "/dev/zero">'
        f'<presence xmlns="{PIDF_NS}" entity="{BOB}"/>'
    ).encode("utf-16")
    with pytest.raises(PidfError) as caught:
        parse_pidf(body)  # read as UTF-8: not well-formed, so never a DOCTYPE to follow
    assert caught.value.reason == "Invalid PIDF: only UTF-8 is accepted"


def test_undeclared_entity_reference_is_not_well_formed():
    body = f'<presence xmlns="{PIDF_NS}" entity="{BOB}"><note>&foo;</note></presence>'.encode()
    with pytest.raises(PidfError, match="not well-formed"):
        parse_pidf(body)


def test_too_large():
    body = pidf("<note>" + "x" * MAX_PIDF_SIZE + "</note>")
    with pytest.raises(PidfError) as caught:
        parse_pidf(body)
    assert (caught.value.reason, caught.value.status) == ("PIDF too large", 400)


@pytest.mark.parametrize("body", [b"", b"  \r\n"])
def test_empty_body(body):
    with pytest.raises(PidfError, match="Invalid PIDF: empty body"):
        parse_pidf(body)


def test_parse_xml_names_the_document_kind():
    with pytest.raises(PidfError, match="Invalid watcherinfo: not well-formed"):
        parse_xml(b"<a>", what="watcherinfo")


def test_syntax_error_without_message():
    # lxml always gives a message; the reason must still be well-formed without one.
    with pytest.raises(PidfError, match=r"not well-formed XML \("):
        parse_pidf(b"\x00")


def _outcome(body: bytes) -> PresenceDocument | PidfError:
    try:
        document = parse_pidf(body)
    except PidfError as exc:
        with pytest.raises(PidfError):
            validate_pidf(body)
        return exc
    assert validate_pidf(body) == (document.entity, document.xml)
    return document


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_document_or_pidf_error(body):
    outcome = _outcome(body)
    if isinstance(outcome, PidfError):
        assert outcome.status == 400
    else:
        assert isinstance(outcome, PresenceDocument)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="<>/=\"' &;:abcdeinopstuy!-[]?", max_size=120))
def test_any_markup_like_text_gives_a_document_or_pidf_error(text):
    outcome = _outcome(pidf(text))
    if isinstance(outcome, PidfError):
        assert outcome.reason.startswith(("Invalid PIDF:", "PIDF too large"))
    else:
        assert outcome.entity == BOB


# --- composition --------------------------------------------------------------------------------


def compose(*bodies: bytes) -> PresenceDocument:
    return parse_pidf(compose_documents(BOB, [parse_pidf(body) for body in bodies]))


def test_compose_nothing_is_an_empty_presence():
    document = parse_pidf(compose_documents(BOB, []))
    assert document.entity == BOB
    assert document.tuple_ids == ()


def test_compose_tuples_later_replaces_same_id():
    document = compose(
        pidf(tuple_xml("a", "open") + tuple_xml("b", "open")),
        pidf(tuple_xml("a", "closed") + tuple_xml("c", "closed")),
    )
    assert document.tuple_ids == ("a", "b", "c")
    root = etree.fromstring(document.xml)
    basics = [b.text for b in root.iter(f"{{{PIDF_NS}}}basic")]
    assert basics == ["closed", "open", "closed"]


def test_compose_gives_colliding_ids_of_other_publications_new_ones():
    """xs:ID is unique per document (RFC 3863 §4.1.2, RFC 4479 §4), not across publications."""
    document = compose(
        pidf(tuple_xml("x")),
        pidf(tuple_xml("y") + person("x", None)),
        pidf(f'<dm:device id="x"><dm:deviceID>urn:x</dm:deviceID></dm:device>{tuple_xml("x-2")}'),
    )
    assert document.tuple_ids == ("x", "y", "x-2")
    assert document.person_ids == ("x-3",)
    assert document.device_ids == ("x-4",)


def test_with_entity_rewrites_the_root_entity_only():
    _, xml = validate_pidf(pidf(tuple_xml("a", extra="<contact>sip:x@y</contact>")))
    rewritten = with_entity(xml, "sip:+447700900123@net-b.test;user=phone")
    assert parse_pidf(rewritten).entity == "sip:+447700900123@net-b.test;user=phone"
    assert rewritten.replace(b"+447700900123@net-b.test;user=phone", b"bob@net-b.test") == xml
    prefixed = (
        b"<?xml version='1.0' encoding='UTF-8'?>\n"
        b'<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"/>'
    )
    assert parse_pidf(with_entity(prefixed, "sip:c@d")).entity == "sip:c@d"
    with pytest.raises(LocalProtocolError):
        with_entity(xml, "not a uri")


def test_compose_uses_the_given_entity():
    body = pidf(tuple_xml("a")).replace(b"sip:bob@net-b.test", b"pres:bob@net-b.test")
    assert parse_pidf(compose_documents(BOB, [parse_pidf(body)])).entity == BOB


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        ("2024-01-01T10:00:00Z", "2024-01-01T09:00:00Z", "early"),  # newest timestamp wins
        ("2024-01-01T09:00:00Z", "2024-01-01T10:00:00Z", "late"),
        ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z", "late"),  # tie: later publication
        ("2024-01-01T12:00:00+02:00", "2024-01-01T10:30:00Z", "late"),  # offsets compared
        ("2024-01-01T10:00:00", "2024-01-01T09:00:00Z", "early"),  # naive read as UTC
        (None, "2024-01-01T09:00:00Z", "late"),  # no timestamp to compare: later wins
        ("2024-01-01T09:00:00Z", None, "late"),
        (None, None, "late"),
        ("yesterday", "2024-01-01T09:00:00Z", "late"),  # unreadable = no timestamp
    ],
)
def test_compose_person_newest_timestamp_wins(first, second, winner):
    document = compose(
        pidf(tuple_xml("a") + person("early", first, "away")),
        pidf(tuple_xml("b") + person("late", second, "busy")),
    )
    assert document.person_ids == (winner,)


def test_compose_devices_notes_and_extensions():
    device_old = '<dm:device id="d1"><dm:deviceID>urn:device:old</dm:deviceID></dm:device>'
    device_new = '<dm:device id="d1"><dm:deviceID>urn:device:new</dm:deviceID></dm:device>'
    device_two = '<dm:device id="d2"><dm:deviceID>urn:device:two</dm:deviceID></dm:device>'
    extension = '<x:mood xmlns:x="urn:example:x">calm</x:mood>'
    document = compose(
        pidf(tuple_xml("a") + '<note xml:lang="en">hello</note>' + device_old + extension),
        pidf(
            tuple_xml("b")
            + '<note xml:lang="en">hello</note><note>second</note>'
            + device_new
            + device_two
            + extension
            + '<x:mood xmlns:x="urn:example:x">tired</x:mood>'
        ),
    )
    assert document.device_ids == ("d1", "d2")
    assert document.notes == ("hello", "second")
    assert b"urn:device:new" in document.xml
    assert b"urn:device:old" not in document.xml
    assert document.xml.count(b">calm</x:mood>") == 1
    assert b">tired</x:mood>" in document.xml


def test_compose_keeps_schema_order_and_namespaces():
    rfc3863 = parse_pidf(load("rfc3863-example.xml"))
    rfc4480 = parse_pidf(load("rfc4480-example.xml"))
    xml = compose_documents(BOB, [rfc3863, rfc4480])
    root = etree.fromstring(xml)
    assert root.nsmap[None] == PIDF_NS
    assert root.nsmap["dm"] == DM_NS
    assert root.nsmap["rpid"] == RPID_NS
    assert root.nsmap["myex"] == "http://id.example.com/presence/"
    kinds = [etree.QName(child).localname for child in root]
    assert kinds == ["tuple", "tuple", "tuple", "note", "person", "device"]
    document = parse_pidf(xml)
    assert document.tuple_ids == ("bs35r9", "eg92n8", "ty4658")
    # the later publication's bs35r9 (RFC 4480, 2005 timestamp) replaced the RFC 3863 one
    assert b"2005-10-27T16:49:29Z" in xml
    assert b"2001-10-27T16:49:29Z" not in xml


def test_compose_prefix_clash_keeps_both_namespaces():
    first = pidf(tuple_xml("a")).replace(b"<presence", b'<presence xmlns:e="urn:one"')
    first = first.replace(b"</presence>", b"<e:x>1</e:x></presence>")
    second = pidf(tuple_xml("b")).replace(b"<presence", b'<presence xmlns:e="urn:two"')
    second = second.replace(b"</presence>", b"<e:x>2</e:x></presence>")
    xml = compose_documents(BOB, [parse_pidf(first), parse_pidf(second)])
    root = etree.fromstring(xml)
    assert [child.tag for child in root][-2:] == ["{urn:one}x", "{urn:two}x"]


def test_compose_rejects_a_bad_entity():
    with pytest.raises(LocalProtocolError):
        compose_documents("bob", [])


# --- server-made documents ----------------------------------------------------------------------


def test_status_document_minimal():
    xml = status_document(BOB, "closed", tuple_id="reg")
    document = parse_pidf(xml)
    assert (document.entity, document.tuple_ids, document.basic) == (BOB, ("reg",), "closed")
    assert xml == (
        b"<?xml version='1.0' encoding='UTF-8'?>\n"
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@net-b.test">'
        b'<tuple id="reg"><status><basic>closed</basic></status></tuple></presence>'
    )


def test_status_document_full():
    xml = status_document(
        BOB,
        "open",
        tuple_id="t-1.x",
        note="attached & <ok>",
        contact="sip:bob@127.0.2.1:5060",
        timestamp="2024-01-01T00:00:00Z",
    )
    assert document_basic(xml) == "open"
    tuple_element = etree.fromstring(xml)[0]
    assert [etree.QName(c).localname for c in tuple_element] == [
        "status",
        "contact",
        "note",
        "timestamp",
    ]
    assert tuple_element[2].text == "attached & <ok>"


@pytest.mark.parametrize(
    ("entity", "basic", "tuple_id"),
    [("bob@net-b.test", "open", "t"), (BOB, "away", "t"), (BOB, "open", "1t"), (BOB, "open", "")],
)
def test_status_document_rejects_bad_arguments(entity, basic, tuple_id):
    with pytest.raises(LocalProtocolError):
        status_document(entity, basic, tuple_id=tuple_id)


# --- equivalence --------------------------------------------------------------------------------


def test_documents_equivalent_ignores_prefixes_and_layout():
    plain = status_document(BOB, "open", tuple_id="t")
    prefixed = (
        b'<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity="sip:bob@net-b.test">\n'
        b'  <p:tuple id="t">\n    <p:status><p:basic>open</p:basic></p:status>\n  </p:tuple>\n'
        b"</p:presence>"
    )
    assert documents_equivalent(plain, prefixed)
    assert not documents_equivalent(plain, status_document(BOB, "closed", tuple_id="t"))


# --- the regex path of validate_pidf (issue 8) -------------------------------------------------


def _mostly(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """Mostly values the regex path takes, sometimes one it must leave to lxml."""
    return st.sampled_from(good * 8 + bad)


_BLANK = st.sampled_from(["", " ", "\r\n", "\n\t", "  \n"])
_TEXT = _mostly(
    ["bench", "a b", "x  y", "!#%()*;=?~"],
    [" a", "a ", " ", "", "x&amp;y", "\u00e9", "a\tb", "<b>", "q'", '"'],
)
_ID = _mostly(["t1", "t2", "t3", "t4"], ["", "a b", "t&1"])
_BASIC = _mostly(["open", "closed"], [" open", "busy", ""])
_DECLARATION = _mostly(
    ["", '<?xml version="1.0" encoding="UTF-8"?>', '<?xml version="1.0"?>'],
    ["<?xml version='1.0' encoding='UTF-8'?>", '<?xml version="1.0" encoding="utf-8"?>'],
)
_ENTITY = _mostly(["sip:p@example.test", "pres:p@x", "tel:+1"], ["http://x", "sip:a&b", "a b"])


@st.composite
def _pidf_bodies(draw: st.DrawFn) -> bytes:
    def blank() -> str:
        return draw(_BLANK)  # one fresh draw per call

    parts = [
        draw(_DECLARATION),
        blank(),
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="',
        draw(_ENTITY),
        '">',
        blank(),
    ]
    for _ in range(draw(st.integers(0, 3))):
        parts += [f'<tuple id="{draw(_ID)}">', blank(), "<status>", blank()]
        parts += [f"<basic>{draw(_BASIC)}</basic>", blank(), "</status>", blank()]
        for _ in range(draw(st.integers(0, 2))):
            parts += [f"<note>{draw(_TEXT)}</note>", blank()]
        parts += ["</tuple>", blank()]
    for _ in range(draw(st.integers(0, 2))):
        parts += [f"<note>{draw(_TEXT)}</note>", blank()]
    parts += ["</presence>", blank()]
    return "".join(parts).encode()


def _general(body: bytes) -> object:
    """validate_pidf through lxml only."""
    try:
        root = pidf_module.parse_xml(body)
        entity, _ = pidf_module._validate(root)
    except PidfError as exc:
        return ("error", exc.reason)
    return entity, pidf_module.serialise(root)


@settings(max_examples=3000, derandomize=True)
@given(_pidf_bodies())
def test_simple_pidf_path_gives_what_lxml_gives(body: bytes) -> None:
    fast = pidf_module._simple_pidf(body)
    if fast is not None:
        assert fast == _general(body)
    assert validate_pidf_outcome(body) == _general(body)


def validate_pidf_outcome(body: bytes) -> object:
    try:
        return pidf_module.validate_pidf(body)
    except PidfError as exc:
        return ("error", exc.reason)


def test_simple_pidf_path_takes_the_usual_publish_body() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:p1@example.test">\r\n'
        b'<tuple id="t7"><status><basic>open</basic></status><note>bench</note></tuple>\r\n'
        b"</presence>\r\n"
    )
    assert pidf_module._simple_pidf(body) == _general(body)
    duplicate = body.replace(
        b"</presence>", b'<tuple id="t7"><status><basic>open</basic></status></tuple></presence>'
    )
    assert pidf_module._simple_pidf(duplicate) is None
    assert validate_pidf_outcome(duplicate) == ("error", "Invalid PIDF: duplicate tuple id 't7'")


# --- the C path of the same (presence/_speedups.c, issue 8) ------------------------------------
# Built by `make` (CI has gcc), so a missing extension fails here rather than skips.  Its
# contract: simple_pidf(body) is exactly _simple_pidf(body), or None for a body of more than
# MAX_TUPLES tuples.  PRESENCE_SIP_PURE=1 (make cov) leaves validate_pidf on the regex path.

C_PIDF = importlib.import_module("presence_sip.presence._speedups")
C_MAX_TUPLES = 32
_PIECES = [b" ", b"\t", b"\r\n", b"<", b">", b'"', b"'", b"&", b"/", b"=", b"\x80", b"a", b""]


@st.composite
def _mutated_bodies(draw: st.DrawFn) -> bytes:
    """A usual body with a few bytes inserted, replaced or deleted anywhere."""
    body = draw(_pidf_bodies())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(body)))
        cut = draw(st.integers(0, 2))
        body = body[:at] + draw(st.sampled_from(_PIECES)) + body[at + cut :]
    return body


@settings(max_examples=3000, derandomize=True)
@given(st.one_of(_pidf_bodies(), _mutated_bodies()))
def test_c_pidf_path_gives_what_the_regex_path_gives(body: bytes) -> None:
    assert C_PIDF.simple_pidf(body) == pidf_module._simple_pidf(body)


def test_c_pidf_path_takes_the_usual_publish_body_and_leaves_the_rest() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:p1@example.test">\r\n'
        b'<tuple id="t7"><status><basic>open</basic></status><note>bench  x</note></tuple>\r\n'
        b"<note>all</note></presence>\r\n"
    )
    assert C_PIDF.simple_pidf(body) == _general(body)
    for other in (
        body.replace(b"t7", b"t 7"),  # an id with a blank
        body.replace(b"sip:p1", b"http:p1"),  # not a sip, sips, pres or tel URI
        body.replace(
            b"</presence>",
            b'<tuple id="t7"><status><basic>open</basic></status></tuple></presence>',
        ),  # a duplicate id
        body.replace(b"<note>all</note>", b"<note>all </note>"),  # a blank before </note>
        body[:-3],  # cut short
        body + b"x",  # something after
    ):
        assert C_PIDF.simple_pidf(other) is None, other
    with pytest.raises(TypeError):
        C_PIDF.simple_pidf(body.decode())


def test_c_pidf_path_leaves_many_tuples_to_lxml() -> None:
    tuples = [f'<tuple id="t{i}"><status><basic>open</basic></status></tuple>' for i in range(40)]
    for count in (C_MAX_TUPLES, C_MAX_TUPLES + 1):
        head = '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:p@x">'
        body = f"{head}{''.join(tuples[:count])}</presence>".encode()
        assert pidf_module._simple_pidf(body) is not None
        if count <= C_MAX_TUPLES:
            assert C_PIDF.simple_pidf(body) == pidf_module._simple_pidf(body)
        else:
            assert C_PIDF.simple_pidf(body) is None
        assert validate_pidf(body) == _general(body)


def test_validate_pidf_runs_the_c_path_unless_pure() -> None:
    expected = None if os.environ.get("PRESENCE_SIP_PURE") else C_PIDF.simple_pidf
    assert pidf_module._c_simple_pidf is expected
