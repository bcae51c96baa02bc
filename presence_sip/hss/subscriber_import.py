"""The CSV table ``presence-sip hss subscriber import`` reads, checked before anything is written.

Every line is parsed, validated and given its HA1 digests here, before the store opens its
write transaction: that transaction then only writes (a running node needing the write lock
meanwhile waits for the writing, not for this work), and every bad line is found in one pass,
so an operator fixing an export sees all of them at once instead of one per attempt.

The table: a header line naming the columns, ``msisdn`` and ``password`` and optionally
``credit``, ``presence_server`` and ``identities`` (space-separated URIs), in any order; then
one subscriber a line.  A spreadsheet's byte order mark is skipped; quoted fields may hold
commas (``"pw,602"``).  An empty optional cell means the default: credit 0, no presence
server, no extra identity.

Two kinds of checks: those of the table alone (:func:`read_import_table`: each line's fields,
an MSISDN or an extra identity on two lines), and those against what the store holds
(:func:`check_against_store`: a subscriber that exists, an unknown presence server, an identity
another subscriber has).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from presence_sip.hss.msisdn import InvalidMsisdn, normalize_msisdn
from presence_sip.hss.records import (
    InvalidRecord,
    Subscriber,
    SubscriberField,
    default_identities,
    make_subscriber,
)

__all__ = [
    "IMPORT_COLUMNS",
    "REPORTED_BAD_LINES",
    "BadLine",
    "ImportHeaderError",
    "ImportRow",
    "ImportTable",
    "check_against_store",
    "describe_bad_lines",
    "read_import_table",
    "split_new_and_existing",
]

IMPORT_COLUMNS: Final = ("msisdn", "password", "credit", "presence_server", "identities")
"""The columns the table may have; the first two are required."""
REQUIRED_COLUMNS: Final = frozenset({"msisdn", "password"})
REPORTED_BAD_LINES: Final = 20
"""Bad lines named one by one; the rest are counted ("and 5 more bad lines")."""


class ImportHeaderError(InvalidRecord):
    """The first line does not name the columns (nothing else can be read then)."""


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of the table that cannot be imported."""

    line: int
    """The number of the line it starts on in the file (the header is line 1): a quoted field
    may hold line ends."""
    reason: str
    """What is wrong with it, as an operator fixes it."""


@dataclass(frozen=True, slots=True)
class ImportRow:
    """A line of the table that makes a valid subscriber record."""

    line: int
    """The number of the line it starts on in the file."""
    subscriber: Subscriber
    """The record, its HA1s computed for the table's realm."""


@dataclass(frozen=True, slots=True)
class ImportTable:
    """What a table holds: the records of its good lines and the reasons of its bad ones."""

    realm: str
    """The network domain the HA1s were computed for."""
    fields: frozenset[SubscriberField]
    """The optional columns the header names (what ``--update`` replaces)."""
    rows: tuple[ImportRow, ...]
    """The good lines, in file order."""
    bad: tuple[BadLine, ...]
    """The bad lines found by the table's own checks, in file order."""


def read_import_table(text: str, realm: str) -> ImportTable:
    """Parse and check every line of *text*; :class:`ImportHeaderError` for a wrong header."""
    # A spreadsheet's "CSV UTF-8" begins with a byte order mark, which would be in the first name
    # strict: a quote left open (a file cut mid-line) or text after a closing quote is a bad
    # line, not a password with a line end in it
    lines = _NumberedLines(text.removeprefix("\ufeff"))
    reader = csv.DictReader(lines, strict=True)
    columns = _check_header(reader)
    fields = frozenset(SubscriberField(name) for name in columns - REQUIRED_COLUMNS)
    rows: list[ImportRow] = []
    bad: list[BadLine] = []
    first_line: dict[str, int] = {}  # MSISDN or extra identity -> the line that has it
    for line, cells in _records(reader, lines, bad):
        try:
            record = _subscriber(cells, realm)
        except (InvalidMsisdn, InvalidRecord) as exc:
            bad.append(BadLine(line, str(exc)))
            continue
        repeated = _repeated(record, realm, line, first_line)
        if repeated is not None:
            bad.append(repeated)
            continue
        rows.append(ImportRow(line, record))
    return ImportTable(realm=realm, fields=fields, rows=tuple(rows), bad=tuple(bad))


def check_against_store(
    table: ImportTable,
    *,
    existing: Collection[str],
    identity_owners: Mapping[str, str],
    servers: Collection[str],
    update: bool,
) -> list[BadLine]:
    """The good lines of *table* the store refuses: a subscriber that exists (unless *update*),
    a presence server the store lacks, an extra identity another subscriber keeps.

    *existing*: the store's MSISDNs; *identity_owners*: its extra identities -> MSISDN;
    *servers*: its presence servers' names.  With *update* and an ``identities`` column, the
    extra identities of the updated subscribers are replaced, so theirs are free to move."""
    replaces_identities = update and SubscriberField.IDENTITIES in table.fields
    moving = {row.subscriber.msisdn for row in table.rows} if replaces_identities else set()
    bad: list[BadLine] = []
    for row in table.rows:
        record = row.subscriber
        if record.msisdn in existing and not update:
            reason: str | None = (
                f"subscriber {record.msisdn} already exists (--update replaces existing ones)"
            )
        elif record.presence_server is not None and record.presence_server not in servers:
            reason = (
                f"unknown presence server {record.presence_server} (add it with `hss server add`)"
            )
        else:
            reason = _identity_taken(record, table.realm, identity_owners, moving)
        if reason is not None:
            bad.append(BadLine(row.line, reason))
    return bad


def split_new_and_existing(
    table: ImportTable, existing: Collection[str]
) -> tuple[list[Subscriber], list[Subscriber]]:
    """The records of *table* that are new, and those that replace existing subscribers."""
    new = [row.subscriber for row in table.rows if row.subscriber.msisdn not in existing]
    old = [row.subscriber for row in table.rows if row.subscriber.msisdn in existing]
    return new, old


def describe_bad_lines(bad: Sequence[BadLine], limit: int = REPORTED_BAD_LINES) -> list[str]:
    """``line N: reason`` for the first *limit* bad lines by line number, then how many more."""
    ordered = sorted(bad, key=lambda item: item.line)
    described = [f"line {item.line}: {item.reason}" for item in ordered[:limit]]
    if len(ordered) > limit:
        described.append(f"and {len(ordered) - limit} more bad lines")
    return described


# -- helpers -------------------------------------------------------------------------------


def _check_header(reader: csv.DictReader[str]) -> frozenset[str]:
    try:
        columns = tuple(reader.fieldnames or ())
    except csv.Error as exc:
        raise ImportHeaderError(f"the first line cannot be read: {exc}") from None
    names = frozenset(columns)
    if REQUIRED_COLUMNS - names or names - set(IMPORT_COLUMNS) or len(names) != len(columns):
        raise ImportHeaderError(
            "the first line must name the columns: msisdn,password and optionally"
            f" credit,presence_server,identities, each once (not {','.join(columns)!r})"
        )
    return names


class _NumberedLines:
    """The lines of the table as the CSV reader takes them, noting the line each record starts
    on: a quoted field may hold line ends, so a record can span lines, and the reader's own
    ``line_num`` is the number of its last one (and is not updated for a record it refuses)."""

    def __init__(self, text: str) -> None:
        self._lines = iter(io.StringIO(text, newline=""))
        self._count = 0  # lines read so far
        self._start: int | None = None  # the first line of the record being read, once read

    def __iter__(self) -> _NumberedLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._count += 1
        if self._start is None and line.strip("\r\n"):  # (the reader skips blank lines)
            self._start = self._count
        return line

    def next_record(self) -> None:
        """The next line read with text in it starts a record."""
        self._start = None

    @property
    def start(self) -> int:
        """The line the record read last starts on."""
        return self._count if self._start is None else self._start


def _records(
    reader: csv.DictReader[str], lines: _NumberedLines, bad: list[BadLine]
) -> Sequence[tuple[int, dict[str, str | None]]]:
    """``(line number, cells)`` of every record, numbered by the line it starts on (what an
    operator opens in an editor); a record the CSV reader refuses (a field over its size limit,
    a quote left open) goes to *bad* and reading goes on after it."""
    records: list[tuple[int, dict[str, str | None]]] = []
    while True:
        lines.next_record()
        try:
            cells = next(reader)
        except StopIteration:
            return records
        except csv.Error as exc:
            bad.append(BadLine(lines.start, f"not readable as CSV: {exc}"))
            continue
        records.append((lines.start, cells))


def _subscriber(cells: dict[str, str | None], realm: str) -> Subscriber:
    """The record a line describes; ``InvalidMsisdn``/``InvalidRecord`` naming the defect."""
    if None in cells or any(value is None for value in cells.values()):
        raise InvalidRecord("not as many fields as the header names")
    password = cells.get("password") or ""
    if not password:
        raise InvalidRecord("empty password")
    return make_subscriber(
        normalize_msisdn(cells["msisdn"] or ""),
        password,
        realm,
        credit=_credit(cells.get("credit") or "0"),
        presence_server=(cells.get("presence_server") or "").strip() or None,
        identities=(cells.get("identities") or "").split(),
    )


def _credit(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise InvalidRecord(f"bad credit {text!r} (expected a whole number >= 0)") from None


def _extras(record: Subscriber, realm: str) -> list[str]:
    """The record's identities beyond the two every subscriber gets."""
    defaults = default_identities(record.msisdn, realm)
    return [identity for identity in record.identities if identity not in defaults]


def _repeated(
    record: Subscriber, realm: str, line: int, first_line: dict[str, int]
) -> BadLine | None:
    """A line whose MSISDN or an extra identity an earlier line has; else remember its own."""
    keys = [record.msisdn, *_extras(record, realm)]
    for key in keys:
        earlier = first_line.get(key)
        if earlier is not None:
            what = "subscriber" if key == record.msisdn else "identity"
            return BadLine(line, f"{what} {key} is on line {earlier} too")
    for key in keys:
        first_line[key] = line
    return None


def _identity_taken(
    record: Subscriber, realm: str, owners: Mapping[str, str], moving: Collection[str]
) -> str | None:
    for identity in _extras(record, realm):
        owner = owners.get(identity)
        if owner is not None and owner != record.msisdn and owner not in moving:
            return f"identity {identity} already belongs to {owner}"
    return None
