"""The configuration our server runs with in the bench (``benchmarks/harness``): no rate step can
reach its ``max_publications``, and the command line and ``serve.toml`` mean what the report's
settings line says (read by ``serve``'s own parser, nothing started)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from benchmarks.harness.config import DOMAIN, FULL, MAX_PUBLICATIONS, PORTS, QUICK, Settings
from benchmarks.harness.servers import OURS_SETTINGS, Ours, ours_command
from presence_sip.cli.main import build_parser
from presence_sip.cli.serve_config import load_configs
from presence_sip.node import NodeConfig
from presence_sip.presence.publications import MAX_PUBLICATIONS as DEFAULT_MAX_PUBLICATIONS
from presence_sip.transport.listen import ListenSpec


def serve_config(argv: list[str]) -> NodeConfig:
    """The one node ``python -m presence_sip ARGS`` would run (argv as ``ours_command``)."""
    assert argv[1:3] == ["-m", "presence_sip"]
    (config,) = load_configs(build_parser().parse_args(argv[3:]))
    return config


@pytest.mark.parametrize("settings", [FULL, QUICK], ids=["full", "quick"])
def test_no_publish_step_reaches_max_publications(settings: Settings) -> None:
    """A step sends ``rate * step_seconds`` initial PUBLISHes (Expires 3600) round-robin over
    the presentities to a fresh server: at the search's ceiling, --quick makes 90 a presentity,
    past the default 64 (the steps above ~42,700/s ended publications Kamailio keeps)."""
    most = math.ceil(settings.rate_ceiling * settings.step_seconds / settings.presentities)
    assert most < MAX_PUBLICATIONS
    latency = math.ceil(settings.rate_ceiling * settings.latency_seconds / settings.presentities)
    assert latency < MAX_PUBLICATIONS
    if settings.quick:
        assert most > DEFAULT_MAX_PUBLICATIONS  # (why the bench sets it)


def test_our_bench_server_runs_with_its_config_file_and_the_same_flags(tmp_path: Path) -> None:
    server = Ours(tmp_path, ["--loop", "asyncio"])
    rundir = tmp_path / "run1"
    rundir.mkdir()
    argv = server.command(rundir)
    assert (rundir / "serve.toml").is_file()
    config = serve_config(argv)
    assert config.presence is not None
    assert config.presence.max_publications == MAX_PUBLICATIONS
    assert (config.domain, config.auth, config.default_policy) == (DOMAIN, "none", "allow")
    assert config.listen == (ListenSpec("udp", "127.0.0.1", PORTS["ours"]),)
    assert config.data_dir == str(rundir / "data")
    # The file changes nothing else: the same node as from the flags alone.
    flags_only = serve_config(ours_command(PORTS["ours"], rundir / "data"))
    assert flags_only.presence is not None
    assert flags_only.presence.max_publications == DEFAULT_MAX_PUBLICATIONS
    assert dataclasses.replace(flags_only, presence=config.presence) == config


def test_the_settings_line_says_what_our_server_ran_with() -> None:
    assert f"`[network.presence] max_publications = {MAX_PUBLICATIONS}`" in OURS_SETTINGS
    assert "`presence-sip serve serve.toml --domain example.test" in OURS_SETTINGS
