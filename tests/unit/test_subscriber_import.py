"""The table ``hss subscriber import`` reads: every bad line found in one pass, with its number
and reason, and the records of the good ones (HA1s for the realm) ready to write."""

from __future__ import annotations

import hashlib

import pytest

from presence_sip.hss.records import SubscriberField
from presence_sip.hss.subscriber_import import (
    BadLine,
    ImportHeaderError,
    check_against_store,
    describe_bad_lines,
    read_import_table,
    split_new_and_existing,
)

REALM = "net-b.test"
HEADER = "msisdn,password,credit,presence_server,identities\n"


def bad_lines(text: str) -> dict[int, str]:
    return {item.line: item.reason for item in read_import_table(text, REALM).bad}


def test_good_lines_become_records_with_the_realms_digests() -> None:
    table = read_import_table(
        HEADER + '+447700900601,"pw,601",5,ps1,sip:dora@net-b.test sip:d@x.test\n'
        "tel:+44-7700-900602,pw,,,\n",
        REALM,
    )
    assert table.bad == ()
    assert table.fields == frozenset(SubscriberField)
    assert [row.line for row in table.rows] == [2, 3]
    dora, other = (row.subscriber for row in table.rows)
    assert (dora.msisdn, dora.credit, dora.presence_server) == ("+447700900601", 5, "ps1")
    assert dora.identities[2:] == ("sip:dora@net-b.test", "sip:d@x.test")
    assert dora.ha1_md5 == hashlib.md5(b"+447700900601:net-b.test:pw,601").hexdigest()
    assert (other.msisdn, other.credit, other.presence_server) == ("+447700900602", 0, None)


def test_every_bad_line_is_found_with_its_reason() -> None:
    text = (
        HEADER
        + "+447700900601,pw,,,\n"  # 2 good
        + "not-a-number,pw,,,\n"  # 3
        + "+447700900603,,,,\n"  # 4
        + "+447700900604,pw,-3,,\n"  # 5
        + "+447700900605,pw,many,,\n"  # 6
        + "+447700900606,pw,,,\n"  # 7 good
        + "+447700900607,pw\n"  # 8
        + "+447700900608,pw,,,,extra\n"  # 9
        + "+44 7700 900601,pw,,,\n"  # 10: line 2's number, written otherwise
        + "+447700900611,pw,,,not a uri\n"  # 11
        + "+447700900612,pw,,,sip:dave@net-b.test\n"  # 12 good
        + "+447700900613,pw,,,sip:dave@NET-B.test\n"  # 13: line 12's identity
        + "+447700900614,pw,,,tel:+447700900601\n"  # 14: another number
    )
    found = bad_lines(text)
    assert sorted(found) == [3, 4, 5, 6, 8, 9, 10, 11, 13, 14]
    assert "not an E.164 number: 'not-a-number'" in found[3]
    assert found[4] == "empty password"
    assert "bad credit -3" in found[5]
    assert "bad credit 'many'" in found[6]
    assert found[8] == found[9] == "not as many fields as the header names"
    assert found[10] == "subscriber +447700900601 is on line 2 too"
    assert "not a URI" in found[11]
    assert found[13] == "identity sip:dave@net-b.test is on line 12 too"
    assert "designates another number" in found[14]
    assert [row.line for row in read_import_table(text, REALM).rows] == [2, 7, 12]


def test_a_line_the_csv_reader_refuses_is_reported_and_reading_goes_on() -> None:
    huge = "x" * 200_000  # over the csv module's field size limit
    found = bad_lines(f"msisdn,password\n+447700900601,{huge}\n+447700900602,\n")
    assert found == {
        2: "not readable as CSV: field larger than field limit (131072)",
        3: "empty password",
    }


@pytest.mark.parametrize(
    "header",
    ["number,password\n", "msisdn\n", "msisdn,password,colour\n", "msisdn,password,msisdn\n", ""],
)
def test_a_header_that_does_not_name_the_columns_is_refused(header: str) -> None:
    with pytest.raises(ImportHeaderError, match="the first line must name the columns"):
        read_import_table(header + "+447700900601,pw\n", REALM)


def test_a_byte_order_mark_and_crlf_line_ends_are_read() -> None:
    table = read_import_table("\ufeffmsisdn,password\r\n+447700900601,pw\r\n", REALM)
    assert [row.subscriber.msisdn for row in table.rows] == ["+447700900601"]
    assert table.fields == frozenset()


def test_the_store_refuses_existing_subscribers_unknown_servers_and_taken_identities() -> None:
    table = read_import_table(
        HEADER + "+447700900601,pw,,,\n"  # exists
        "+447700900602,pw,,ps9,\n"  # unknown server
        "+447700900603,pw,,ps1,sip:carol@net-b.test\n"  # identity of +447700900601
        "+447700900604,pw,,ps1,\n",  # good
        REALM,
    )
    existing = {"+447700900601"}
    owners = {"sip:carol@net-b.test": "+447700900601"}

    def refused(*, update: bool) -> dict[int, str]:
        bad = check_against_store(
            table, existing=existing, identity_owners=owners, servers={"ps1"}, update=update
        )
        return {item.line: item.reason for item in bad}

    found = refused(update=False)
    assert found == {
        2: "subscriber +447700900601 already exists (--update replaces existing ones)",
        3: "unknown presence server ps9 (add it with `hss server add`)",
        4: "identity sip:carol@net-b.test already belongs to +447700900601",
    }
    # --update: +447700900601 is replaced, identities included, so carol is free to move.
    found = refused(update=True)
    assert found == {3: "unknown presence server ps9 (add it with `hss server add`)"}
    new, replacing = split_new_and_existing(table, existing)
    assert [r.msisdn for r in replacing] == ["+447700900601"]
    assert [r.msisdn for r in new] == ["+447700900602", "+447700900603", "+447700900604"]


def test_an_identity_stays_taken_when_the_update_keeps_identities() -> None:
    """Without an ``identities`` column an update keeps the owner's identities."""
    table = read_import_table(
        "msisdn,password\n+447700900601,pw\n", REALM
    )  # no identities column: nothing moves
    found = check_against_store(
        table, existing={"+447700900601"}, identity_owners={}, servers=(), update=True
    )
    assert found == []
    moved = read_import_table(
        "msisdn,password,identities\n+447700900603,pw,sip:carol@net-b.test\n", REALM
    )
    found = check_against_store(
        moved,
        existing={"+447700900601"},
        identity_owners={"sip:carol@net-b.test": "+447700900601"},
        servers=(),
        update=True,
    )
    assert found == [BadLine(2, "identity sip:carol@net-b.test already belongs to +447700900601")]


def test_bad_lines_are_described_in_order_up_to_a_cap() -> None:
    bad = [BadLine(line, f"reason {line}") for line in range(30, 1, -1)]
    described = describe_bad_lines(bad, limit=20)
    assert described[0] == "line 2: reason 2"
    assert described[19] == "line 21: reason 21"
    assert described[20:] == ["and 9 more bad lines"]
    assert describe_bad_lines(bad[:3]) == [
        "line 28: reason 28",
        "line 29: reason 29",
        "line 30: reason 30",
    ]


def test_a_quote_left_open_or_text_after_a_closing_quote_is_a_bad_line() -> None:
    """A file cut in the middle of a quoted password, or a stray quote, is a bad line (hostile
    test: the non-strict reader imported the password ``"unterminated\\n"`` and ``pwx``); a
    quoted field with a line end in it, closed, is still a field (a password with a line end is
    then refused for its control character)."""
    table = read_import_table(
        "msisdn,password,identities\n"
        '+447700900001,"pw"x,\n'
        '+447700900002,pw,"sip:a@x.test\nsip:b@x.test"\n'
        '+447700900003,"p\nw",\n'
        '+447700900004,"cut,\n',
        REALM,
    )
    assert [row.subscriber.msisdn for row in table.rows] == ["+447700900002"]
    assert [(bad.line, bad.reason) for bad in sorted(table.bad, key=lambda bad: bad.line)] == [
        (2, "not readable as CSV: ',' expected after '\"'"),
        (5, "password contains a control character (U+000A)"),
        (7, "not readable as CSV: unexpected end of data"),
    ]


def test_a_password_with_a_control_character_is_a_bad_line() -> None:
    """A NUL, a tab or another control character in a password, C1 (U+0080-U+009F) included:
    a bad line naming the character, not the password (the CSV reader takes a NUL in a field)."""
    table = read_import_table(
        "msisdn,password\n+447700900001,se\x00cret\n+447700900002,\tsecret\n+447700900003,ok\n"
        "+447700900004,se\x80cret\n+447700900005,secret\x9f\n+447700900006,ok\xa0\n",
        REALM,
    )
    assert [row.line for row in table.rows] == [4, 7]
    assert [(bad.line, bad.reason) for bad in table.bad] == [
        (2, "password contains a control character (U+0000)"),
        (3, "password contains a control character (U+0009)"),
        (5, "password contains a control character (U+0080)"),
        (6, "password contains a control character (U+009F)"),
    ]


def test_a_record_spanning_lines_is_named_by_the_line_it_starts_on() -> None:
    """A quoted field with line ends in it (a spreadsheet cell of several lines): the record is
    reported at its first line, the one an operator opens in an editor (it was its last); blank
    lines before it are not its start, and records the CSV reader refuses one after another
    each get their own line."""
    text = (
        "msisdn,password,credit,identities\n"  # 1
        '+447700900001,pw,many,"sip:a@x.test\nsip:b@x.test"\n'  # 2-3: bad credit
        '+447700900002,pw,,"sip:c@x.test\nsip:d@x.test"\n'  # 4-5: good
        "\n"  # 6: blank
        '+447700900002,pw,,"sip:e@x.test\nsip:f@x.test\nsip:g@x.test"\n'  # 7-9: line 4's number
        '+447700900010,"a"x,,\n'  # 10: refused by the reader
        '+447700900011,"b"y,,\n'  # 11: refused by the reader
        "+447700900012,pw,-1,\n"  # 12: bad credit, one line as before
    )
    table = read_import_table(text, REALM)
    assert [row.line for row in table.rows] == [4]
    assert table.rows[0].subscriber.identities[2:] == ("sip:c@x.test", "sip:d@x.test")
    assert sorted((bad.line, bad.reason) for bad in table.bad) == [
        (2, "bad credit 'many' (expected a whole number >= 0)"),
        (7, "subscriber +447700900002 is on line 4 too"),
        (10, "not readable as CSV: ',' expected after '\"'"),
        (11, "not readable as CSV: ',' expected after '\"'"),
        (12, "bad credit -1 (expected a whole number >= 0)"),
    ]
