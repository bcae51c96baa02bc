"""``presence-sip hss``: administer a network's subscriber store (HSS).

Forms scripts rely on (DESIGN.md "The outside contract")::

    hss subscriber add MSISDN --password PW|--password-file FILE [--credit N]
                              [--presence-server NAME] [--identity URI]
    hss subscriber import FILE.csv|- [--update]
                              (msisdn,password[,credit,presence_server,identities])
    hss subscriber list [--json] | show MSISDN [--json] | remove MSISDN
    hss subscriber set MSISDN [--password PW|--password-file FILE] [--credit N]
                              [--presence-server NAME] [--identity URI]
                              [--remove-identity URI]
    hss rule add OWNER_MSISDN WATCHER_URI allow|block|polite-block|confirm
    hss rule list OWNER [--json] | remove OWNER WATCHER_URI
    hss plan add PREFIX NETWORK_DOMAIN | list [--json] | remove PREFIX
    hss port add MSISDN NETWORK_DOMAIN | list [--json] | remove MSISDN
    hss server add NAME URI | list [--json] | remove NAME

``--data DIR`` (default ``./data``) and ``--domain DOMAIN`` are accepted after ``hss`` and after
the command; the command that creates the HSS needs ``--domain`` (the digest realm of every
password, recorded then and checked afterwards: there is no default).  Every write is one
transaction; any error is one line on stderr and exit status 2, with nothing written (an import
with bad lines names each on a line of its own first).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from presence_sip.hss.msisdn import InvalidMsisdn
from presence_sip.hss.records import InvalidRecord, RuleAction, Subscriber
from presence_sip.hss.store import SubscriberStore
from presence_sip.hss.subscriber_import import (
    ImportHeaderError,
    check_against_store,
    describe_bad_lines,
    read_import_table,
    split_new_and_existing,
)
from presence_sip.sip.errors import ConfigError, StoreError
from presence_sip.storage.database import (
    DATABASE_NAME,
    DomainMismatch,
    DomainNotRecorded,
    connect_read_only,
    database_path,
)
from presence_sip.storage.database_check import table_counts
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

__all__ = ["main", "register", "run"]

DEFAULT_DATA_DIR = "./data"
EXIT_ERROR = 2

Handler: TypeAlias = Callable[[SubscriberStore, argparse.Namespace], None]
if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: Subparsers) -> None:
    """Add the ``hss`` subcommand (``set_defaults(func=run)``) to a ``presence-sip`` parser."""
    common = _common_options()
    hss = subparsers.add_parser(
        "hss",
        parents=[common],
        help="administer subscribers, presence rules, number plan, porting, presence servers",
        description="Administer the network's subscriber store (DATA_DIR/presence.sqlite).",
    )
    hss.set_defaults(func=run)
    groups = hss.add_subparsers(dest="hss_group", metavar="OBJECT", required=True)
    _register_subscriber(groups, common)
    _register_rule(groups, common)
    _register_plan(groups, common)
    _register_port(groups, common)
    _register_server(groups, common)


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``hss`` command; 0 on success, 2 after a one-line error on stderr."""
    handler: Handler = args.hss_handler
    data = getattr(args, "data", DEFAULT_DATA_DIR)
    try:
        if handler not in _CREATING and not database_path(data).exists():
            # A mistyped --data must not answer with an empty table (nor leave a database).
            raise ConfigError(
                f"no HSS in {data} ({DATABASE_NAME} does not exist; wrong --data? "
                "`hss subscriber add`, `plan add` or `server add` creates it)"
            )
        path = database_path(data)
        read_only = handler in _READING and path.exists() and not _may_write(path)
        store = _open_store(data, getattr(args, "domain", None), read_only=read_only)
        try:
            handler(store, args)
        finally:
            store.close()
    except (StoreError, ConfigError, InvalidMsisdn, InvalidRecord) as exc:
        message = " ".join(str(exc).split())
        print(f"presence-sip: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _open_store(data: str, domain: str | None, *, read_only: bool) -> SqliteSubscriberStore:
    """The HSS of *data*; a new one needs ``--domain`` (no default: the HA1s of a guessed realm
    would be refused by the network's node, and cannot be recomputed without the passwords)."""
    try:
        return SqliteSubscriberStore.open(data, domain, read_only=read_only)
    except DomainNotRecorded as exc:
        raise ConfigError(
            f"{data}: {exc}: give --domain DOMAIN, the network's domain (as `serve` has it: the"
            " digest realm the passwords are stored for, recorded now and checked afterwards)"
        ) from None
    except DomainMismatch as exc:
        if _subscriber_count(data) == 0:
            # A first command with a mistyped --domain that failed (a bad number) or added
            # nothing yet: nothing is lost by starting again, which only the operator may do.
            raise ConfigError(
                f"{data}: {exc}; it holds no subscriber yet: if {exc.stored} was a mistake,"
                f" remove {database_path(data)} and run the command again"
            ) from None
        raise


def _subscriber_count(data: str) -> int | None:
    """The subscribers the HSS of *data* holds (None when it cannot be read)."""
    try:
        conn = connect_read_only(database_path(data))
    except (sqlite3.Error, StoreError):
        return None
    try:
        return table_counts(conn).get("subscribers")
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m presence_sip.cli.hss ARGS`` behaves as ``presence-sip hss ARGS``."""
    parser = argparse.ArgumentParser(prog="presence-sip")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["hss", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


# -- parser construction ---------------------------------------------------------------------


def _common_options() -> argparse.ArgumentParser:
    """``--data``/``--domain``, SUPPRESSed so a value given at either level survives."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"data directory holding presence.sqlite (default {DEFAULT_DATA_DIR})",
    )
    common.add_argument(
        "--domain",
        default=argparse.SUPPRESS,
        help="network domain and digest realm: required by the command that creates the HSS,"
        " recorded then and checked afterwards",
    )
    return common


def _leaf(
    group: Subparsers,
    name: str,
    common: argparse.ArgumentParser,
    handler: Handler,
    help_text: str,
    *,
    json_output: bool = False,
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, parents=[common], help=help_text, description=help_text)
    parser.set_defaults(hss_handler=handler)
    if json_output:
        parser.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return parser


def _group(groups: Subparsers, name: str, help_text: str) -> Subparsers:
    parser = groups.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest="hss_command", metavar="COMMAND", required=True)


def _register_subscriber(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    group = _group(groups, "subscriber", "subscribers: credentials, credit, presence server")
    add = _leaf(group, "add", common, _subscriber_add, "add a subscriber")
    add.add_argument("msisdn", metavar="MSISDN", help="E.164 number, e.g. +447700900123")
    _password_options(add, required=True)
    add.add_argument("--credit", default="0", help="prepaid credit units (default 0)")
    add.add_argument("--presence-server", metavar="NAME", help="presence server serving it")
    add.add_argument(
        "--identity", metavar="URI", action="append", default=[], help="extra SIP identity"
    )
    bulk = _leaf(
        group,
        "import",
        common,
        _subscriber_import,
        "add subscribers from a CSV file with a header (msisdn,password and optionally credit,"
        "presence_server,identities): all of them in one transaction, or none, every bad line"
        " named",
    )
    bulk.add_argument("file", metavar="FILE", help="the CSV file (- reads standard input)")
    bulk.add_argument(
        "--update",
        action="store_true",
        help="a subscriber that exists gets the line's password, and its values of the optional"
        " columns the header names (without it, an existing subscriber is a bad line)",
    )
    _leaf(group, "list", common, _subscriber_list, "list subscribers", json_output=True)
    show = _leaf(group, "show", common, _subscriber_show, "show a subscriber", json_output=True)
    show.add_argument("msisdn", metavar="MSISDN")
    remove = _leaf(group, "remove", common, _subscriber_remove, "remove a subscriber")
    remove.add_argument("msisdn", metavar="MSISDN")
    change = _leaf(group, "set", common, _subscriber_set, "change a subscriber")
    change.add_argument("msisdn", metavar="MSISDN")
    _password_options(change, required=False)
    change.add_argument("--credit", help="new prepaid credit units")
    change.add_argument("--presence-server", metavar="NAME", help="new presence server")
    change.add_argument(
        "--identity", metavar="URI", action="append", default=[], help="add an extra SIP identity"
    )
    change.add_argument(
        "--remove-identity",
        metavar="URI",
        action="append",
        default=[],
        help="remove an extra SIP identity",
    )


def _password_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """``--password PW`` or ``--password-file FILE`` (``-``: standard input), so a password
    need not show in the process list or the shell history."""
    choice = parser.add_mutually_exclusive_group(required=required)
    choice.add_argument("--password", help="digest password (stored as HA1 only)")
    choice.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the password from the first line of FILE (- for standard input; at a "
        "terminal it is asked for and not echoed)",
    )


STDIN = "-"
"""``--password-file -``: read the password from standard input."""


def _password(args: argparse.Namespace) -> str | None:
    """The password given by ``--password`` or read from ``--password-file``."""
    if args.password_file is None:
        return args.password  # type: ignore[no-any-return]
    source_name: str = args.password_file
    try:
        if source_name == STDIN and sys.stdin.isatty():
            # Typed at a terminal: not echoed, and asked twice (a typo would be stored unseen).
            line = getpass.getpass("Password: ")
            if line and getpass.getpass("Again: ") != line:
                raise ConfigError("the two passwords differ: nothing changed")
        elif source_name == STDIN:
            line = sys.stdin.readline()
        else:
            with open(source_name, encoding="utf-8") as source:
                line = source.readline()
    except OSError as exc:
        raise ConfigError(f"cannot read {source_name}: {exc.strerror}") from None
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ConfigError(f"no password in the first line of {source_name}")
    return password


def _register_rule(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    group = _group(groups, "rule", "presence rules (buddy lists) of a subscriber")
    add = _leaf(group, "add", common, _rule_add, "add or replace a rule")
    add.add_argument("owner", metavar="OWNER_MSISDN")
    add.add_argument("watcher", metavar="WATCHER_URI")
    add.add_argument("action", metavar="|".join(action.value for action in RuleAction))
    listing = _leaf(group, "list", common, _rule_list, "list one's rules", json_output=True)
    listing.add_argument("owner", metavar="OWNER")
    remove = _leaf(group, "remove", common, _rule_remove, "remove a rule")
    remove.add_argument("owner", metavar="OWNER")
    remove.add_argument("watcher", metavar="WATCHER_URI")


def _register_plan(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    group = _group(groups, "plan", "number plan: E.164 prefix -> network (longest prefix wins)")
    add = _leaf(group, "add", common, _plan_add, "add a prefix")
    add.add_argument("prefix", metavar="PREFIX")
    add.add_argument("network", metavar="NETWORK_DOMAIN")
    _leaf(group, "list", common, _plan_list, "list the number plan", json_output=True)
    remove = _leaf(group, "remove", common, _plan_remove, "remove a prefix")
    remove.add_argument("prefix", metavar="PREFIX")


def _register_port(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    group = _group(groups, "port", "ported numbers (override the number plan)")
    add = _leaf(group, "add", common, _port_add, "record a ported number")
    add.add_argument("msisdn", metavar="MSISDN")
    add.add_argument("network", metavar="NETWORK_DOMAIN")
    _leaf(group, "list", common, _port_list, "list ported numbers", json_output=True)
    remove = _leaf(group, "remove", common, _port_remove, "remove a porting override")
    remove.add_argument("msisdn", metavar="MSISDN")


def _register_server(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    group = _group(groups, "server", "the network's presence servers")
    add = _leaf(group, "add", common, _server_add, "add a presence server")
    add.add_argument("name", metavar="NAME")
    add.add_argument("uri", metavar="URI")
    _leaf(group, "list", common, _server_list, "list presence servers", json_output=True)
    remove = _leaf(group, "remove", common, _server_remove, "remove a presence server")
    remove.add_argument("name", metavar="NAME")


# -- handlers --------------------------------------------------------------------------------


def _subscriber_add(store: SubscriberStore, args: argparse.Namespace) -> None:
    password = _password(args)
    assert password is not None  # the option group is required
    record = store.add_subscriber(
        args.msisdn,
        password,
        credit=_credit(args.credit),
        presence_server=args.presence_server,
        identities=args.identity,
    )
    print(f"added subscriber {record.msisdn}")


def _subscriber_import(store: SubscriberStore, args: argparse.Namespace) -> None:
    """All of the file in one transaction, or nothing.  Every line is parsed, checked and given
    its HA1s first, so the write lock is held only while the rows are written (a running node
    that must write meanwhile waits that long), and every bad line is named at once."""
    name = "standard input" if args.file == STDIN else args.file
    try:
        table = read_import_table(_import_text(args.file, name), store.domain)
    except ImportHeaderError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    existing = store.msisdns()
    bad = [
        *table.bad,
        *check_against_store(
            table,
            existing=existing,
            identity_owners=store.extra_identities(),
            servers={server.name for server in store.presence_servers()},
            update=args.update,
        ),
    ]
    if bad:
        for line in describe_bad_lines(bad):
            print(f"presence-sip: error: {name} {line}", file=sys.stderr)
        raise ConfigError(f"{name}: {len(bad)} bad line(s); nothing was imported")
    new, replacing = split_new_and_existing(table, existing)
    store.import_subscribers(new, replacing, fields=table.fields)
    updated = f" ({len(new)} added, {len(replacing)} updated)" if args.update else ""
    print(f"imported {len(table.rows)} subscribers{updated}")


def _import_text(source: str, name: str) -> str:
    """The whole text of an import file (``-``: standard input)."""
    try:
        return sys.stdin.read() if source == STDIN else Path(source).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None


def _subscriber_list(store: SubscriberStore, args: argparse.Namespace) -> None:
    subscribers = store.list_subscribers()
    if args.json:
        _print_json([_subscriber_json(record) for record in subscribers])
        return
    rows = [
        [s.msisdn, str(s.credit), s.presence_server or "-", ", ".join(s.identities)]
        for s in subscribers
    ]
    _print_table(["MSISDN", "CREDIT", "PRESENCE SERVER", "IDENTITIES"], rows)


def _subscriber_show(store: SubscriberStore, args: argparse.Namespace) -> None:
    record = _require(store, args.msisdn)
    rules = store.rules_for(record.msisdn)
    if args.json:
        _print_json({**_subscriber_json(record), "rules": rules})
        return
    lines = [
        ("msisdn", record.msisdn),
        *(("identity", identity) for identity in record.identities),
        ("presence server", record.presence_server or "-"),
        ("credit", str(record.credit)),
        ("digest", f"HA1 MD5, SHA-256 (realm {store.domain})"),
        *(("rule", f"{watcher} {action}") for watcher, action in sorted(rules.items())),
    ]
    for key, value in lines:
        print(f"{key:<16} {value}")


def _subscriber_remove(store: SubscriberStore, args: argparse.Namespace) -> None:
    record = _require(store, args.msisdn)
    store.remove_subscriber(record.msisdn)
    print(f"removed subscriber {record.msisdn}")


def _subscriber_set(store: SubscriberStore, args: argparse.Namespace) -> None:
    password = _password(args)
    changes = (password, args.credit, args.presence_server)
    if all(c is None for c in changes) and not (args.identity or args.remove_identity):
        raise ConfigError(
            "nothing to change (give --password, --credit, --presence-server, --identity or"
            " --remove-identity)"
        )
    record = store.update_subscriber(
        args.msisdn,
        password=password,
        credit=None if args.credit is None else _credit(args.credit),
        presence_server=args.presence_server,
        add_identities=args.identity,
        remove_identities=args.remove_identity,
    )
    print(f"updated subscriber {record.msisdn}")


def _rule_add(store: SubscriberStore, args: argparse.Namespace) -> None:
    rule = store.set_rule(args.owner, args.watcher, args.action)
    print(f"rule of {rule.owner}: {rule.watcher_uri} {rule.action.value}")


def _rule_list(store: SubscriberStore, args: argparse.Namespace) -> None:
    rules = store.list_rules(args.owner)
    if args.json:
        _print_json(
            [
                {"owner": r.owner, "watcher_uri": r.watcher_uri, "action": r.action.value}
                for r in rules
            ]
        )
        return
    _print_table(["WATCHER", "ACTION"], [[r.watcher_uri, r.action.value] for r in rules])


def _rule_remove(store: SubscriberStore, args: argparse.Namespace) -> None:
    store.remove_rule(args.owner, args.watcher)
    print("removed rule")


def _plan_add(store: SubscriberStore, args: argparse.Namespace) -> None:
    entry = store.plan_add(args.prefix, args.network)
    print(f"plan: {entry.prefix} -> {entry.network}")


def _plan_list(store: SubscriberStore, args: argparse.Namespace) -> None:
    entries = store.plan_list()
    if args.json:
        _print_json([{"prefix": e.prefix, "network": e.network} for e in entries])
        return
    _print_table(["PREFIX", "NETWORK"], [[e.prefix, e.network] for e in entries])


def _plan_remove(store: SubscriberStore, args: argparse.Namespace) -> None:
    store.plan_remove(args.prefix)
    print("removed prefix")


def _port_add(store: SubscriberStore, args: argparse.Namespace) -> None:
    entry = store.port_add(args.msisdn, args.network)
    print(f"ported: {entry.msisdn} -> {entry.network}")


def _port_list(store: SubscriberStore, args: argparse.Namespace) -> None:
    entries = store.port_list()
    if args.json:
        _print_json([{"msisdn": e.msisdn, "network": e.network} for e in entries])
        return
    _print_table(["MSISDN", "NETWORK"], [[e.msisdn, e.network] for e in entries])


def _port_remove(store: SubscriberStore, args: argparse.Namespace) -> None:
    store.port_remove(args.msisdn)
    print("removed porting override")


def _server_add(store: SubscriberStore, args: argparse.Namespace) -> None:
    record = store.add_presence_server(args.name, args.uri)
    print(f"presence server {record.name}: {record.uri}")


def _server_list(store: SubscriberStore, args: argparse.Namespace) -> None:
    servers = store.presence_servers()
    if args.json:
        _print_json([{"name": s.name, "uri": s.uri} for s in servers])
        return
    _print_table(["NAME", "URI"], [[s.name, s.uri] for s in servers])


def _server_remove(store: SubscriberStore, args: argparse.Namespace) -> None:
    store.remove_presence_server(args.name)
    print("removed presence server")


# -- helpers ---------------------------------------------------------------------------------


def _require(store: SubscriberStore, msisdn: str) -> Subscriber:
    record = store.get_subscriber(msisdn)
    if record is None:
        raise StoreError(f"unknown subscriber {msisdn}")
    return record


def _credit(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise InvalidRecord(f"bad credit {text!r} (expected a whole number >= 0)") from None


def _subscriber_json(record: Subscriber) -> dict[str, Any]:
    return {
        "msisdn": record.msisdn,
        "identities": list(record.identities),
        "presence_server": record.presence_server,
        "credit": record.credit,
    }


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    columns = zip(headers, *rows, strict=False)
    widths = [max(len(cell) for cell in column) for column in columns]
    for row in (headers, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())


_CREATING: Final = frozenset({_subscriber_add, _subscriber_import, _plan_add, _server_add})
"""The commands that may create the database (every other one needs an existing HSS)."""

_READING: Final = frozenset(
    {_subscriber_list, _subscriber_show, _rule_list, _plan_list, _port_list, _server_list}
)
"""The commands that only read: they work on a database this user may not write."""


def _may_write(path: Path) -> bool:
    """This user may write the database and its directory (its WAL and -shm files)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


if __name__ == "__main__":
    sys.exit(main())
