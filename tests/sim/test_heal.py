"""Self-healing on real nodes in the simulator: sessions lose nothing while on-path relays
crash or go silent (issue 8; the full run is bench/heal_sim.py)."""

import pytest

from zmesh.sim.heal import run_heal


@pytest.mark.slow
def test_sessions_lose_no_byte_while_relays_on_their_legs_crash_or_go_silent() -> None:
    report = run_heal(3, sessions=120, size=256 * 1024, fault_every=0.4)
    assert len(report.faults) >= 10
    assert report.failovers >= 5  # the faults hit sessions with data in flight
    assert report.completed == report.sessions and report.failed == 0
    assert report.bytes_lost == 0
    assert sorted(report.stalls)[len(report.stalls) // 2] < 0.5  # the median failover
    assert max(report.stalls) < 3.0  # the one-way rule's 2 s floor, plus an RTO


def test_the_experiment_is_deterministic() -> None:
    a = run_heal(5, sessions=8, size=32 * 1024, fault_every=0.2)
    b = run_heal(5, sessions=8, size=32 * 1024, fault_every=0.2)
    assert a == b
    assert a.bytes_lost == 0 and a.completed == 8
