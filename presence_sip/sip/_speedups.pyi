"""Type stub of the optional C fast path of :mod:`presence_sip.sip.parser` (_speedups.c)."""

from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T", bound=tuple[object, ...])

def configure(
    line_cache: dict[str, tuple[tuple[str, str], str]],
    scan_line: Callable[[str], tuple[tuple[tuple[str, str], str], int]],
    fast_ruri: Callable[[str], bool],
    ruri_cache: dict[str, bool],
    single_keys: frozenset[str],
    parse_error: type[Exception],
) -> None: ...
def parse(
    data: bytes, datagram: bool, /
) -> tuple[str | int, str, list[tuple[str, str]], list[str], bytes, bytes | None, int] | None: ...
def recognise(kind: str, value: bytes, /) -> bool: ...
def split_via(item: str, via_class: type[_T], /) -> _T | None: ...
