"""Sans-IO RFC 3261 §12 dialogs (UAS side, as the notifier of a subscription uses them)."""

from __future__ import annotations

from presence_sip.dialog.dialog import Dialog, DialogError, next_hop_peer

__all__ = ["Dialog", "DialogError", "next_hop_peer"]
