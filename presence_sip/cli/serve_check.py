"""``presence-sip serve CONFIG --check``: what a start would refuse, found before it (as
``kamailio -c``, ``nginx -t``, ``named-checkconf``); the systemd unit runs it before a start and a
reload, as the service's user.

Per node: the configuration; its TLS files as a start loads them (a key that is not the
certificate's is refused there), then what peers would refuse of its certificate (expired, not
yet valid, not chaining to the configured ``ca``: :mod:`presence_sip.transport.certificate_check`)
and a warning for one that expires within 30 days; its data directory and database as this user
finds them (:mod:`presence_sip.storage.database_check`: read without a lock and without writing,
so it runs beside a serving node).  The first problem is one :class:`ConfigError` line naming the
node (exit status 2); else one line per node and ``configuration ok``.
"""

from __future__ import annotations

import os
import time

from presence_sip.node import NodeConfig, load_tls
from presence_sip.sip.errors import ConfigError
from presence_sip.storage.database_check import check_database
from presence_sip.transport.certificate_check import certificate_problem


def check(configs: list[NodeConfig]) -> int:
    """Check every node of ``configs`` and print what each would run; 0, or a ConfigError."""
    for config in configs:
        tls = _check_tls(config)
        try:
            database = check_database(config.data_dir, config.domain, config.name)
        except ConfigError as exc:
            raise ConfigError(f"{config.name}: {exc}") from None
        listen = " ".join(str(spec) for spec in config.listen)
        print(
            f"{config.name}: {config.domain}, roles {','.join(sorted(config.roles))}, "
            f"listens {listen}, data {os.path.abspath(config.data_dir)}, auth {config.auth}; {tls};"
            f" {database.describe()}"
        )
    print(f"configuration ok: {len(configs)} node{'' if len(configs) == 1 else 's'}")
    return 0


def _check_tls(config: NodeConfig) -> str:
    """The node's certificate, for its line; its warnings printed; ConfigError naming the node
    when peers would refuse the certificate."""
    if config.tls is None:
        return "no TLS"
    try:
        contexts, warnings = load_tls(config.tls)
        problem = certificate_problem(config.tls.cert, config.tls.ca, time.time())
    except ConfigError as exc:  # (a file that does not load: named, as the node is)
        raise ConfigError(f"{config.name}: {exc}") from None
    if problem is not None:
        raise ConfigError(f"{config.name}: {problem}")
    for warning in warnings:  # (what is left: a certificate about to expire)
        print(f"{config.name}: warning: {warning}")
    return f"TLS {contexts.certificate}"
