"""Warnings an operator needs, at most once a minute: a condition that repeats per message (a
refused handshake, a datagram too large, a change that cannot be stored) counts every time and
is logged once per interval, with the count so far (:class:`LogLimit`).  A line worth having for
each occurrence while they are few, naming its source (a failed TLS handshake), is logged a few
times per interval per source and a few more in all, the others counted for one line that says
how many were not (:class:`SourceBurst`), so that a flood from one source does not take the
lines of the others."""

from __future__ import annotations

from typing import Final, NamedTuple

INTERVAL: Final = 60.0
"""Seconds between two log lines of one condition."""


class LogLimit:
    """Counts one condition; :meth:`due` says when it is time to log it again."""

    __slots__ = ("_next", "count", "interval")

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.count = 0
        """Occurrences so far."""
        self._next = float("-inf")

    def due(self, now: float) -> bool:
        """Count one occurrence at ``now``; True when it is to be logged."""
        self.count += 1
        if now < self._next:
            return False
        self._next = now + self.interval
        return True


class Unlogged(NamedTuple):
    """What a :class:`SourceBurst` did not log since it was last asked (:meth:`take_unlogged`)."""

    total: int
    """Occurrences not logged."""
    sources: int
    """The sources they came from, of those remembered (see :attr:`more_sources`)."""
    more_sources: bool
    """Some came from sources past the table's bound: more sources than :attr:`sources`."""
    top: str
    """The source with the most of them (of those remembered)."""
    top_count: int
    """How many of them came from :attr:`top`."""
    top_detail: str
    """The detail given with the latest of them from :attr:`top`."""


class SourceBurst:
    """Up to ``per_source`` occurrences logged per interval for
    each source, and up to ``lines`` in all (a flood from many sources cannot fill the log);
    the interval starts at the first of them.  The others are counted by source, for one line
    once the interval is over (:attr:`ends`, :meth:`take_unlogged`).  At most ``sources``
    sources are counted (the memory stays bounded under a flood from many addresses): past
    that, the occurrences of a source not counted yet go to the total only."""

    __slots__ = (
        "_logged",
        "_logged_total",
        "_unlogged",
        "_untracked",
        "ends",
        "interval",
        "lines",
        "per_source",
        "sources",
        "unlogged",
    )

    def __init__(
        self, lines: int, per_source: int, sources: int, interval: float = INTERVAL
    ) -> None:
        if sources < 1:
            raise ValueError(f"a SourceBurst counts at least 1 source, not {sources}")
        self.lines = lines
        self.per_source = per_source
        self.sources = sources
        self.interval = interval
        self.unlogged = 0
        """Occurrences not logged since :meth:`take_unlogged` last took them."""
        self.ends = float("-inf")
        """When the current interval ends (the next occurrence from then on starts one)."""
        self._logged: dict[str, int] = {}
        """Lines logged in the current interval, by source (at most ``lines`` sources)."""
        self._logged_total = 0
        self._unlogged: dict[str, tuple[int, str]] = {}
        """Since :meth:`take_unlogged`: occurrences not logged and the latest one's detail, by
        source (at most ``sources``)."""
        self._untracked = 0
        """Occurrences not logged from sources past ``sources``."""

    def due(self, source: str, now: float, detail: str = "") -> bool:
        """One occurrence from ``source`` at ``now``: True when it is to be logged, else it is
        counted (with ``detail``, for the line that says so)."""
        if now >= self.ends:
            self.ends = now + self.interval
            self._logged = {}
            self._logged_total = 0
        logged = self._logged.get(source, 0)
        if logged < self.per_source and self._logged_total < self.lines:
            self._logged[source] = logged + 1
            self._logged_total += 1
            return True
        self.unlogged += 1
        counted = self._unlogged.get(source)
        if counted is not None:
            self._unlogged[source] = (counted[0] + 1, detail)
        elif len(self._unlogged) < self.sources:
            self._unlogged[source] = (1, detail)
        else:
            self._untracked += 1
        return False

    def take_unlogged(self) -> Unlogged | None:
        """What was not logged so far (None: nothing), counting anew."""
        if not self.unlogged:
            return None
        top, (top_count, top_detail) = max(self._unlogged.items(), key=_by_count)
        taken = Unlogged(
            self.unlogged, len(self._unlogged), self._untracked > 0, top, top_count, top_detail
        )
        self.unlogged = self._untracked = 0
        self._unlogged = {}
        return taken


def _by_count(item: tuple[str, tuple[int, str]]) -> int:
    return item[1][0]
