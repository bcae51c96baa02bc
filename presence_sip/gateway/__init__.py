"""Inter-network gateway logic (sans-IO): number plan and porting, next-hop location, peering."""

from __future__ import annotations
