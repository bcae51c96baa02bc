"""One process per node and data directory: an advisory lock file, ``DATA_DIR/NAME.lock``.

Several nodes of a network share the database, each owning its own rows (``node`` columns).
Two processes running the *same* node on it would load, expire and delete each other's rows
(a refreshed subscription terminated by the other, a binding deleted): the second one is
refused.  ``flock`` locks go with the process, so a node killed with SIGKILL leaves no stale
lock behind.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from presence_sip.sip.errors import StoreError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def lock_path(data_dir: str | Path, name: str) -> Path:
    """``DATA_DIR/NAME.lock``, the name made safe for a file name."""
    return Path(data_dir) / f"{_UNSAFE.sub('_', name) or '_'}.lock"


class NodeLock:
    """Holds ``DATA_DIR/NAME.lock`` until :meth:`release` (or the process ends)."""

    def __init__(self, data_dir: str | Path, name: str) -> None:
        self.path = lock_path(data_dir, name)
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise StoreError(
                f"node {name!r} already runs on data directory {data_dir} (lock {self.path})"
            ) from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # (closing the descriptor releases the lock)
            self._fd = None
