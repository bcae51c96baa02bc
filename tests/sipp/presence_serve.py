"""A ``presence-sip serve`` node for the SIPp presence scenarios, plus the CLI and store helpers.

The process itself is ``tests/integration/serve_process.py``'s :class:`ServeProcess` (start,
wait for OPTIONS 200, one SIGTERM, exit 0 asserted, log dumped on failure); this module adds
what the presence scenarios need around it::

    hss(data, "--domain", "example.test", "subscriber", "add", "+447700900123", "--password", "pw")
    with presence_node(data, auth="none", default_policy="allow") as node:
        run_scenario(FETCH_XML, node.address, keys={...})
        assert wait_for_subscriptions(data, "+447700900123", 0, timeout=5) == 0

Everything stays on 127.0.0.1; every subprocess runs under a timeout.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

_INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(_INTEGRATION) not in sys.path:  # serve_process lives beside the integration tests
    sys.path.insert(0, str(_INTEGRATION))

from serve_process import LOOPBACK, ServeProcess, serve_command  # noqa: E402

__all__ = [
    "CLI_TIMEOUT",
    "LOOPBACK",
    "ServeProcess",
    "count_subscriptions",
    "hss",
    "presence_node",
    "provision",
    "wait_for_subscriptions",
]

SERVE_DEFAULT_DOMAIN = "example.test"
"""The domain of a node started without ``--domain`` (:func:`presence_node`'s default), which
its HSS must be made for."""
CLI_TIMEOUT = 30.0
"""Seconds one ``presence-sip hss ...`` command may take."""


def presence_node(
    data: Path,
    *,
    auth: str = "none",
    default_policy: str = "allow",
    domain: str | None = None,
    log_level: str = "INFO",
) -> ServeProcess:
    """An all-in-one node (registrar + presence server) on a free 127.0.0.1 port (UDP and TCP)."""
    return ServeProcess(
        data, domain=domain, auth=auth, log_level=log_level,
        extra_args=["--default-policy", default_policy],
    )  # fmt: skip


def hss(data: Path, *args: str, timeout: float = CLI_TIMEOUT) -> str:
    """``presence-sip hss --data DATA ARGS``: its stdout; AssertionError unless it exits 0."""
    argv = [*serve_command(), "hss", "--data", str(data), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} -> {done.returncode}: {done.stderr.strip()}"
    return done.stdout


def provision(
    data: Path,
    subscribers: Iterable[str],
    *,
    password: str = "secret",
    rules: Iterable[tuple[str, str, str]] = (),
    domain: str = SERVE_DEFAULT_DOMAIN,
) -> None:
    """Add subscribers (MSISDNs) and rules ``(owner, watcher URI, action)`` to DATA's HSS
    in-process (the library call behind ``presence-sip hss``; a CLI start per row is slow)."""
    store = SqliteSubscriberStore.open(data, domain)
    try:
        for msisdn in subscribers:
            store.add_subscriber(msisdn, password)
        for owner, watcher, action in rules:
            store.set_rule(owner, watcher, action)
    finally:
        store.close()


def count_subscriptions(data: Path, presentity: str, *, event: str = "presence") -> int:
    """Stored subscriptions to ``presentity`` (key: ``+MSISDN`` or ``sip:user@host``).

    Read-only, beside the running node (SQLite WAL).  The node stores subscriptions write-behind
    (group commit), so a change shows here up to ~30 ms after the node answered: poll with
    :func:`wait_for_subscriptions`."""
    conn = sqlite3.connect(f"file:{data / 'presence.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT count(*) FROM presence_subscriptions WHERE presentity = ? AND event = ?",
            (presentity, event),
        ).fetchone()
    except sqlite3.OperationalError:
        return 0  # no table yet
    finally:
        conn.close()
    return int(row[0])


def wait_for_subscriptions(
    data: Path, presentity: str, want: int, *, event: str = "presence", timeout: float = 30.0
) -> int:
    """Poll :func:`count_subscriptions` until it equals ``want``; the last count seen.

    The node writes subscriptions behind (group commit, at most ~30 ms after it answered), so a
    check right after a scenario ends polls rather than reads once."""
    deadline = time.monotonic() + timeout
    count = count_subscriptions(data, presentity, event=event)
    while count != want and time.monotonic() < deadline:
        time.sleep(0.05)
        count = count_subscriptions(data, presentity, event=event)
    return count
