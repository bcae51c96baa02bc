"""Digest algorithms and the hashes computed with them (RFC 2617 §3.2.2, RFC 7616, RFC 8760).

:class:`DigestAlgorithm` names an ``algorithm`` of a challenge; :func:`compute_ha1` is what the
HSS stores per algorithm; :func:`session_ha1` and :func:`request_digest` give the ``response``
both sides compute, the client to answer a challenge and the server to check the answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import Enum


class DigestAlgorithm(Enum):
    """The ``algorithm`` of a digest challenge (RFC 7616 §6.1 registry; RFC 8760 §2.2 for SIP).

    A ``-sess`` variant uses the stored HA1 of its base algorithm (RFC 2617 §3.2.2.2).
    """

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"
    SHA512_256 = "SHA-512-256"
    SHA512_256_SESS = "SHA-512-256-sess"

    @property
    def is_session(self) -> bool:
        """True for the ``-sess`` variants."""
        return self.value.endswith("-sess")

    @property
    def base(self) -> DigestAlgorithm:
        """The algorithm whose HA1 is stored (``MD5`` for ``MD5-sess``)."""
        return DigestAlgorithm(self.value.removesuffix("-sess"))

    @classmethod
    def from_token(cls, token: str) -> DigestAlgorithm | None:
        """The algorithm named by ``token`` (case-insensitive); "" is MD5 (RFC 2617 §3.2.1)."""
        return _ALGORITHM_BY_TOKEN.get(token.lower() if token else "md5")


_ALGORITHM_BY_TOKEN = {alg.value.lower(): alg for alg in DigestAlgorithm}
_RANK = {"SHA-512-256": 0, "SHA-256": 1, "MD5": 2}


def strength(algorithm: DigestAlgorithm) -> tuple[int, bool]:
    """Sort key: RFC 8760 §2.4 lists challenges in order of preference, strongest first."""
    return _RANK[algorithm.base.value], algorithm.is_session


_BASE_HASH: dict[str, Callable[[bytes], str]] = {
    # MD5 is what RFC 2617 mandates here, not our choice of a secure hash.
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}
_HASH: dict[DigestAlgorithm, Callable[[bytes], str]] = {
    alg: _BASE_HASH[alg.base.value] for alg in DigestAlgorithm
}


def hash_hex(algorithm: DigestAlgorithm, data: bytes) -> str:
    """H(data) of ``algorithm`` (of its base for a ``-sess`` one), in lower-case hex."""
    return _HASH[algorithm](data)


def compute_ha1(username: str, realm: str, password: str, algorithm: DigestAlgorithm) -> str:
    """H(username ":" realm ":" password) in lower-case hex (RFC 2617 §3.2.2.2).

    This is what the HSS stores, per algorithm; for a ``-sess`` algorithm it is the HA1 of the base
    algorithm (the per-nonce session key is derived from it at verification time).
    """
    return _HASH[algorithm](f"{username}:{realm}:{password}".encode())


def session_ha1(ha1: str, nonce: str, cnonce: str, algorithm: DigestAlgorithm) -> str:
    """The HA1 a response is computed with: ``ha1`` itself, or for a ``-sess`` algorithm the
    session key of this nonce and cnonce."""
    # RFC 2617 §3.2.2.2: for "-sess", A1 = H(user:realm:password) ":" nonce ":" cnonce.
    if not algorithm.is_session:
        return ha1
    return _HASH[algorithm](f"{ha1}:{nonce}:{cnonce}".encode())


def request_digest(
    ha1: str, algorithm: DigestAlgorithm, method: str, uri: str, body: bytes, *,
    nonce: str, qop: str, nc: str, cnonce: str,
) -> str:  # fmt: skip
    """request-digest of RFC 2617 §3.2.2.1 (RFC 2069 form when ``qop`` is empty)."""
    h = _HASH[algorithm]
    a2 = f"{method}:{uri}"
    if qop.lower() == "auth-int":  # RFC 2617 §3.2.2.3
        a2 = f"{a2}:{h(body)}"
    ha2 = h(a2.encode())
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{ha2}".encode())


__all__ = [
    "DigestAlgorithm",
    "compute_ha1",
    "hash_hex",
    "request_digest",
    "session_ha1",
    "strength",
]
