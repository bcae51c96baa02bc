"""Registrar bindings (RFC 3261 §10.3) and the port through which they are stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Binding:
    """One Contact bound to an address of record."""

    aor: str
    """The normalised address-of-record key (``+447700900123`` or ``sip:user@domain``)."""
    contact: str
    """The contact URI exactly as registered, URI parameters included (RFC 4475 cparam02)."""
    params: str
    """Contact header parameters exactly as registered, minus ``expires`` (RFC 4475 cparam01)."""
    expires_at: float
    """Absolute expiry on the node's clock (seconds since the epoch in stored form)."""
    q: float
    call_id: str
    cseq: int
    path: tuple[str, ...] = ()
    """RFC 3327 Path values, in order, to reach the contact."""
    source: str = ""
    """Where the REGISTER came from (``udp:127.0.0.1:5090``), for NAT-style delivery."""
    user_agent: str = ""

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


class BindingStore(Protocol):
    """Durable storage of bindings; the registrar keeps its own index in memory."""

    def load_bindings(self) -> list[Binding]:
        """Every stored binding (expired ones included; the registrar purges them)."""
        ...

    def save_bindings(self, aor: str, upserts: list[Binding], removed_contacts: list[str]) -> None:
        """Apply one REGISTER's changes for ``aor`` atomically."""
        ...

    def delete_expired(self, aor: str, contacts: list[str]) -> None:
        """Remove bindings the registrar found expired."""
        ...


class MemoryBindingStore:
    """A :class:`BindingStore` kept in a dict (unit tests, ``--data :memory:``)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Binding] = {}

    def load_bindings(self) -> list[Binding]:
        return list(self.rows.values())

    def save_bindings(self, aor: str, upserts: list[Binding], removed_contacts: list[str]) -> None:
        for contact in removed_contacts:
            self.rows.pop((aor, contact), None)
        for binding in upserts:
            self.rows[(aor, binding.contact)] = binding

    def delete_expired(self, aor: str, contacts: list[str]) -> None:
        for contact in contacts:
            self.rows.pop((aor, contact), None)
