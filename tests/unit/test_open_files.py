"""The open-files limit a serving process raises for its connections (in a child process: the
limit is the process's own)."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
HARD = 20000 if _HARD == resource.RLIM_INFINITY else min(_HARD, 20000)
"""A hard limit this process may set (lowering it is always allowed)."""


def run_with_limits(
    soft: int, hard: int, connections: int, opened: int = 0
) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import logging, resource, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
        from presence_sip.runtime.open_files import raise_open_files
        print("soft", raise_open_files({connections}, {opened}))
        print("now", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )


def test_the_soft_limit_is_raised_to_what_the_connections_need() -> None:
    connections = HARD - 500
    out = run_with_limits(256, HARD, connections).stdout.splitlines()
    assert out == [f"soft {connections + 256}", f"now {connections + 256}"]


def test_a_hard_limit_too_low_is_a_warning_saying_how_many_clients_fit() -> None:
    out = run_with_limits(1024, 2048, 10000).stdout.splitlines()
    assert out[0].startswith("open files limit is 2048 (hard limit 2048), less than the 10256")
    assert "beyond about 1792 connections" in out[0]
    assert out[1:] == ["soft 2048", "now 2048"]


def test_a_sufficient_limit_is_left_alone() -> None:
    out = run_with_limits(HARD, HARD, 100).stdout.splitlines()
    assert out == [f"soft {HARD}", f"now {HARD}"]


def test_room_for_the_connections_opened_too_where_the_hard_limit_allows() -> None:
    connections = (HARD - 256) // 2 - 100
    out = run_with_limits(256, HARD, connections, connections).stdout.splitlines()
    assert out == [f"soft {2 * connections + 256}", f"now {2 * connections + 256}"]
    # Room for the accepted ones only: no warning (the opened ones fail one by one beyond).
    big = HARD - 300
    out = run_with_limits(256, HARD, big, big).stdout.splitlines()
    assert out == [f"soft {HARD}", f"now {HARD}"]
