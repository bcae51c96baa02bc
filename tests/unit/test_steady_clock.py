"""The node's clock: wall-clock time from the start, advanced monotonically (no jumps)."""

from __future__ import annotations

import logging

import pytest

from presence_sip.runtime.clock import CHECK_INTERVAL, SteadyWallClock


class Fake:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 50.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_a_step_of_the_system_clock_does_not_move_the_node_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = Fake()
    clock = SteadyWallClock(wall=lambda: fake.wall, monotonic=lambda: fake.mono)
    assert clock() == 1_800_000_000.0
    fake.advance(10.0)
    assert clock() == 1_800_000_010.0
    fake.wall -= 3600.0  # an NTP step back: timers must not stop for an hour
    fake.advance(5.0)
    assert clock() == 1_800_000_015.0
    assert clock.drift() == -3600.0
    with caplog.at_level(logging.WARNING, logger="presence_sip.runtime.clock"):
        clock.handle_timer(clock())
        clock.handle_timer(clock() + CHECK_INTERVAL)  # the same step: said once
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("the system clock was stepped by -3600.0 s")
    assert clock.get_timer() == pytest.approx(clock() + 2 * CHECK_INTERVAL)
