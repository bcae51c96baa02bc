"""``presence-sip`` console script: argparse dispatch to one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from presence_sip import __version__
from presence_sip.sip.errors import ConfigError, StoreError, TransportError

SUBCOMMANDS = ("parse", "serve", "hss", "show", "certs", "demo", "backup")
"""Modules of :mod:`presence_sip.cli`; each has ``register(subparsers)`` setting ``func``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="presence-sip",
        description="SIP SIMPLE presence stack (registrar, presence server, gateway).",
    )
    parser.add_argument("--version", action="version", version=f"presence-sip {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"presence_sip.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"presence_sip.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except ConfigError as exc:
        print(f"presence-sip: error: {exc}", file=sys.stderr)
        return 2
    except (TransportError, StoreError) as exc:  # cannot listen, database unusable: one line
        print(f"presence-sip: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `presence-sip certs show FILE | head`: the reader left. Say nothing more, and keep
        # the interpreter's final flush from failing on the closed pipe too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
