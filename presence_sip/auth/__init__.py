"""SIP digest authentication, sans-IO (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

``DigestAuthenticator`` challenges and verifies (server side); ``build_authorization`` answers a
challenge (client side).  Time is passed in as ``now``; nothing here reads a clock or a socket.
"""

from __future__ import annotations

from presence_sip.auth.algorithms import DigestAlgorithm, compute_ha1
from presence_sip.auth.digest import (
    AuthOutcome,
    AuthResult,
    DigestAuthenticator,
    build_authorization,
    uri_matches,
)
from presence_sip.auth.headers import Challenge, Credentials, parse_challenge, parse_credentials

__all__ = [
    "AuthOutcome",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAlgorithm",
    "DigestAuthenticator",
    "build_authorization",
    "compute_ha1",
    "parse_challenge",
    "parse_credentials",
    "uri_matches",
]
