"""Atheris harness: any byte string -> a message or ``SipParseError``, nothing else.

Run (atheris is not a test dependency)::

    pip install atheris
    python fuzz/fuzz_parser.py -max_total_time=300 fuzz/corpus

The seed corpus is every test vector (RFC 4475, RFC 5118 made wire-ready, the RFC 3261/3856/3903
examples); it is written to the corpus directory given on the command line (default
``fuzz/corpus``) before fuzzing starts.  Each input goes through ``parse_message`` as a datagram,
through ``StreamBuffer`` as a stream, and, when it parses, through ``to_bytes`` and back.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from presence_sip.sip import (  # noqa: E402
    Request,
    SipParseError,
    StreamBuffer,
    make_response,
    parse_message,
    to_bytes,
)
from presence_sip.sip.validate import validate_message  # noqa: E402


def seeds() -> dict[str, bytes]:
    """Every test vector, by a file name usable in a corpus directory."""
    from vectors import load, names, wire

    out = {n.replace("/", "_"): load(n) for n in names("rfc4475") + names("sip")}
    out.update({n.replace("/", "_"): wire(n) for n in names("rfc5118")})
    return out


def write_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (directory / name).write_bytes(data)


def test_one_input(data: bytes) -> None:
    """The invariant; any other exception is a finding."""
    try:
        message = parse_message(data)
    except SipParseError:
        pass
    else:
        validate_message(message)
        wire_form = to_bytes(message)
        if to_bytes(parse_message(wire_form)) != wire_form:
            raise AssertionError("serialise/parse is not stable")
        if isinstance(message, Request):
            to_bytes(make_response(message, 400, to_tag="fuzz"))
    buffer = StreamBuffer()
    buffer.feed(data)
    try:
        while (framed := buffer.next_message()) is not None:
            try:
                parse_message(framed, datagram=False)
            except SipParseError:
                pass
    except SipParseError:
        pass


def main() -> None:
    import atheris

    corpus = next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus is None:
        corpus = ROOT / "fuzz" / "corpus"
        sys.argv.append(str(corpus))
    write_corpus(corpus)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
