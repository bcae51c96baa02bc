"""Atheris harness: any byte string -> a message or ``SipParseError``, nothing else.

Run (atheris is not a test dependency; ``make fuzz`` installs it)::

    pip install atheris
    python fuzz/fuzz_parser.py -max_total_time=300 [CORPUS_DIR] [--compiled]

The seed corpus is every test vector; it is written to the corpus directory (default
``fuzz/corpus/parser``) before fuzzing starts.  Each input goes through ``parse_message`` as a
datagram, through ``StreamBuffer`` as a stream, and, when it parses, through ``to_bytes`` and
back.  By default the pure-Python parser is fuzzed, instrumented (see ``_harness.py``).
"""

from __future__ import annotations

from types import ModuleType

from _harness import fuzz, vector_seeds

sip: ModuleType
"""``presence_sip.sip``, once the harness imported it."""
validate: ModuleType
"""``presence_sip.sip.validate``, once the harness imported it."""


def setup() -> None:
    global sip, validate
    import presence_sip.sip
    import presence_sip.sip.validate

    sip, validate = presence_sip.sip, presence_sip.sip.validate


def test_one_input(data: bytes) -> None:
    """The invariant; any other exception is a finding."""
    try:
        message = sip.parse_message(data)
    except sip.SipParseError:
        pass
    else:
        validate.validate_message(message)
        wire_form = sip.to_bytes(message)
        if sip.to_bytes(sip.parse_message(wire_form)) != wire_form:
            raise AssertionError("serialise/parse is not stable")
        if isinstance(message, sip.Request):
            sip.to_bytes(sip.make_response(message, 400, to_tag="fuzz"))
    buffer = sip.StreamBuffer()
    buffer.feed(data)
    try:
        while (framed := buffer.next_message()) is not None:
            try:
                sip.parse_message(framed, datagram=False)
            except sip.SipParseError:
                pass
    except sip.SipParseError:
        pass


if __name__ == "__main__":
    fuzz(
        "parser",
        ["presence_sip.sip", "presence_sip.sip.validate"],
        setup,
        test_one_input,
        vector_seeds,
    )
