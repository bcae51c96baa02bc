"""The stream connections up with each peer address, the one a send to that address takes first.

RFC 3261 §18.1.1 and §18.2.2: a message for an address goes over a connection already open to
it.  Most addresses have one connection, but two at once happen: a user agent that connects
from the port it listens on (``SO_REUSEPORT``, as Kamailio's ``tcp_reuse_port``) and is also
connected to by the node, or a connection opened while an older one is still closing.  When the
one in use closes, the next send takes another still up at that address instead of opening a
new connection, and the endpoint, told of both, keeps the address up
(``Endpoint.is_connected``).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from .sockets import AddressKey

C = TypeVar("C")


class AddressTable(Generic[C]):
    """Connections by address: :meth:`get` gives the one in use, the others wait their turn."""

    __slots__ = ("_in_use", "_others")

    def __init__(self) -> None:
        self._in_use: dict[AddressKey, C] = {}
        self._others: dict[AddressKey, list[C]] = {}
        """Further connections of an address, oldest first (rare: no entry for most)."""

    def get(self, key: AddressKey) -> C | None:
        return self._in_use.get(key)

    def add(self, key: AddressKey, conn: C, *, use_now: bool) -> None:
        """``conn`` is up (or opening) at ``key``: in use at once when ``use_now`` (one the node
        opens: the one in use, if any, was unusable) or when it is the address's first."""
        current = self._in_use.get(key)
        if current is None:
            self._in_use[key] = conn
            return
        if current is conn or conn in self._others.get(key, ()):
            return  # (told twice)
        if use_now:
            self._in_use[key] = conn
            conn = current  # the one in use until now waits with the others
        self._others.setdefault(key, []).append(conn)

    def remove(self, key: AddressKey, conn: C) -> None:
        """``conn`` is gone: when it was in use, the newest other connection of ``key`` is."""
        others = self._others.get(key)
        if self._in_use.get(key) is conn:
            if others:
                self._in_use[key] = others.pop()
            else:
                del self._in_use[key]
        elif others and conn in others:
            others.remove(conn)
        if others is not None and not others:
            del self._others[key]

    def clear(self) -> None:
        self._in_use.clear()
        self._others.clear()


__all__ = ["AddressTable"]
