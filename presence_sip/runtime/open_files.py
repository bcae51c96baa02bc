"""The open-files limit of a serving process, raised to what its connections need.

Every TCP/TLS connection is a file descriptor.  A login shell or a systemd unit often gives a
soft limit of 1,024 while a node allows ``max_connections`` (10,000) connections: beyond the
limit ``accept`` fails and new clients are dropped without a word.  Kamailio raises its limit at
start (``open_files_limit``); so does ``serve``, up to the hard limit, and says when that is not
enough.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

SPARE_FILES = 256
"""Descriptors beyond the connections: listening sockets, the database, its WAL, logs, pipes."""


def raise_open_files(connections: int, opened: int = 0) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``connections`` + ``opened`` + :data:`SPARE_FILES`
    (never above the hard limit); warn when it stays below what the ``connections`` accepted
    need (the ``opened`` ones, which the node makes itself, fail one by one beyond it, each a
    transport error).  Returns the soft limit in force."""
    wanted = connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + opened:
        target = wanted + opened
        if hard != resource.RLIM_INFINITY:
            target = min(target, hard)
        try:
            if target > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
        except (OSError, ValueError) as exc:
            log.debug("cannot raise the open files limit to %d: %s", target, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open files limit is %d (hard limit %s), less than the %d that %d connections and"
            " the node's own files need: clients beyond about %d connections will be refused"
            " (raise it with ulimit -n or LimitNOFILE=)",
            soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            wanted,
            connections,
            max(0, soft - SPARE_FILES),
        )
    return int(soft)
