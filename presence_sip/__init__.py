"""presence-sip: SIP SIMPLE presence (registrar, presence server, gateway) on a sans-IO core."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
