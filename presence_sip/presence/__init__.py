"""Presence: PIDF documents, partial PIDF, watcherinfo, authorization rules (sans-IO)."""
