"""``presence-sip certs``: make the per-network CAs and node certificates (into ``certs/``).

::

    presence-sip certs ca NETWORK [--out certs/] [--force]
    presence-sip certs node NETWORK NODE_NAME --ip 127.0.1.1 [--ip IP] [--dns NAME] [--out certs/]
                            [--force] [--renew]
    presence-sip certs demo [--out certs/]     # both demo networks, every node of DESIGN.md
    presence-sip certs show FILE

Existing valid files are kept (each line says ``kept`` or ``created``), so the commands can be
run again safely.  A CA that exists but cannot be used (its key missing or not its own, expiring)
and a node certificate naming other identities or addresses are never replaced silently: that is
an error, unless ``--force``.  ``--renew`` makes a node a new key and certificate even when its
are valid (a running node takes them on SIGHUP).  Errors are one line and exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from presence_sip.transport import pki

DEFAULT_OUT = "certs"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``certs`` subcommand and its own subcommands."""
    parser = subparsers.add_parser("certs", help="make per-network CAs and node certificates")
    parser.set_defaults(func=run)
    commands = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    ca = commands.add_parser("ca", help="create the CA of a network (if missing)")
    ca.add_argument("network", help="network domain, e.g. net-a.test")
    _add_out(ca)
    _add_force(ca)

    node = commands.add_parser("node", help="create a node certificate signed by its network's CA")
    node.add_argument("network", help="network domain, e.g. net-b.test")
    node.add_argument("node", metavar="NODE_NAME", help="node name, e.g. gw1 (host gw1.NETWORK)")
    node.add_argument(
        "--ip", action="append", default=[], required=True, help="listen address (repeatable)"
    )
    node.add_argument(
        "--dns", action="append", default=[], help="extra domain it answers for (repeatable)"
    )
    _add_out(node)
    _add_force(node)
    node.add_argument(
        "--renew",
        action="store_true",
        help="a new key and certificate even when the current ones are valid (a key that may "
        "have leaked, a scheduled rotation); SIGHUP the node afterwards",
    )

    demo = commands.add_parser("demo", help="CAs and every node certificate of the demo networks")
    _add_out(demo)

    show = commands.add_parser("show", help="print the certificates in a PEM file")
    show.add_argument("file", type=Path)


def _add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help="output directory (default certs/)"
    )


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an unusable CA or a node certificate naming other identities (new keys)",
    )


def run(args: argparse.Namespace) -> int:
    """Run one ``certs`` action; a ``ConfigError`` reaches ``main`` as a one-line error."""
    return _ACTIONS[args.certs_command](args)


def _status(created: bool) -> str:
    return "created" if created else "kept"


def _run_ca(args: argparse.Namespace) -> int:
    files = pki.load_or_create_ca(args.out, args.network, force=args.force)
    print(f"{_status(files.created):8} {files.cert}  (key {files.key})")
    return 0


def _run_node(args: argparse.Namespace) -> int:
    spec = pki.NodeSpec(args.network, args.node, tuple(args.ip), tuple(args.dns))
    _print_node(pki.load_or_create(args.out, spec, force=args.force, renew=args.renew))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    for files in pki.create_demo(args.out):
        _print_node(files)
    return 0


def _print_node(files: pki.NodeFiles) -> None:
    names = ", ".join(files.spec.identities + files.spec.ips)
    print(f"{_status(files.created):8} {files.cert}  [{names}]  (CA {files.ca})")


def _run_show(args: argparse.Namespace) -> int:
    certs = pki.load_certificates(args.file)
    for index, cert in enumerate(certs):
        if index:
            print()
        if len(certs) > 1:
            print(f"certificate {index + 1} of {len(certs)}")
        for label, value in pki.describe_certificate(cert):
            print(f"  {label + ':':20} {value}")
    return 0


_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "ca": _run_ca,
    "node": _run_node,
    "demo": _run_demo,
    "show": _run_show,
}

__all__ = ["register", "run"]
