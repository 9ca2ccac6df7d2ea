"""LinkHealth: RTT, loss and phi from a link's PINGs and PONGs; stale and unknown PONGs.
(The budget on the peer's PINGs is the link's: tests/link/test_connection.py.)"""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.health.link import (
    LOSS_WINDOW,
    MAX_OUTSTANDING,
    PHI_THRESHOLD,
    LinkHealth,
)

KEEPALIVE, CAP = 1.0, 10.0


def steady(health: LinkHealth, start: float, count: int, rtt: float) -> float:
    """``count`` PINGs one keepalive apart, each answered after ``rtt``; returns the time
    of the last PONG."""
    now = start
    for i in range(count):
        now = start + i * KEEPALIVE
        seq = health.ping(now)
        assert health.pong(seq, now + rtt)
    return now + rtt


def test_the_first_sample_sets_srtt_and_rttvar() -> None:
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    assert h.rtt is None and h.loss == 0.0 and h.next_ping == KEEPALIVE
    seq = h.ping(0.0)
    assert h.next_ping == KEEPALIVE and h.outstanding == 1
    assert h.pong(seq, 0.08)
    assert h.rtt == pytest.approx(0.08) and h.rttvar == pytest.approx(0.04)  # RFC 6298 (2.2)
    assert h.pong(h.ping(1.0), 1.16)
    assert h.rttvar == pytest.approx(0.75 * 0.04 + 0.25 * 0.08)  # (2.3), RTTVAR first
    assert h.rtt == pytest.approx(0.875 * 0.08 + 0.125 * 0.16)


def test_rtt_converges_to_a_new_level() -> None:
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    steady(h, 0.0, 20, 0.05)
    assert h.rtt == pytest.approx(0.05)
    steady(h, 20.0, 40, 0.3)  # the path got slower: SRTT follows within a few dozen samples
    assert h.rtt == pytest.approx(0.3, rel=0.01)
    assert h.loss == 0.0


def test_unanswered_pings_are_counted_lost_after_their_deadline() -> None:
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    steady(h, 0.0, 10, 0.05)
    assert h.deadline == 2 * KEEPALIVE  # 3 SRTT is less
    for i in range(10, 20):  # every other PING unanswered
        seq = h.ping(float(i))
        if i % 2:
            h.pong(seq, i + 0.05)
    h.ping(25.0)  # the overdue ones are counted when the next PING goes out
    assert h.loss == pytest.approx(5 / 20)
    for i in range(26, 26 + 2 * LOSS_WINDOW):  # the window forgets the oldest
        h.pong(h.ping(float(i)), i + 0.05)
    assert h.loss == 0.0


def test_a_late_pong_is_lost_but_still_measures() -> None:
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    steady(h, 0.0, 4, 0.05)
    seq = h.ping(4.0)
    h.ping(7.0)  # 3 s on: the first counted lost
    assert h.loss == pytest.approx(1 / 5)
    assert h.pong(seq, 7.5)  # 3.5 s late: an RTT sample (bufferbloat shows), not a second loss
    assert h.rtt is not None and h.rtt > 0.4
    assert h.loss == pytest.approx(1 / 5)
    assert not h.pong(seq, 7.6)  # answered twice: stale


def test_the_outstanding_table_is_bounded_and_forgets_the_oldest_as_lost() -> None:
    h = LinkHealth(KEEPALIVE, 1e9, 0.0)
    first = h.ping(0.0)
    for i in range(1, 3 * MAX_OUTSTANDING):
        h.ping(i * 0.001)  # faster than any deadline: only the bound removes them
        assert h.outstanding <= MAX_OUTSTANDING
    assert h.outstanding == MAX_OUTSTANDING
    assert h.loss == 1.0  # 2 MAX_OUTSTANDING forgotten, every one lost
    assert not h.pong(first, 1.0)  # forgotten: dropped as stale
    assert h.stale_pongs == 1


def test_stale_and_unknown_pongs_are_dropped_quietly() -> None:
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    last = steady(h, 0.0, 5, 0.05)
    dead = h.dead_at(last)
    for seq in (0, 4, 5, 2**32 - 1, 123456):  # answered, answered, never sent (x3)
        assert not h.pong(seq, last + 1.0)
    assert h.stale_pongs == 5
    assert h.dead_at(last) == dead  # no heartbeat from them
    assert h.rtt == pytest.approx(0.05) and h.loss == 0.0


def test_seqs_wrap_at_32_bits() -> None:
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    h._seq = 2**32 - 1
    assert h.ping(0.0) == 2**32 - 1
    assert h.ping(1.0) == 0


def test_phi_rises_with_silence_and_the_rule_finds_a_steady_peer_dead_in_about_3_s() -> None:
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    last = steady(h, 0.0, 60, 0.05)
    phis = [h.phi(last + 0.25 * i) for i in range(20)]
    assert phis == sorted(phis) and phis[0] < 0.1 and phis[-1] > PHI_THRESHOLD
    dead = h.dead_at(last)  # nothing received since the last PONG
    assert 2.9 < dead - last < 3.2  # the old fixed 3 s silence, from the last heartbeat
    assert h.phi(dead) == pytest.approx(PHI_THRESHOLD)
    assert h.phi(dead - 0.05) < PHI_THRESHOLD < h.phi(dead + 0.05)


def test_a_link_receiving_data_is_not_dead_however_late_its_pongs() -> None:
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    last = steady(h, 0.0, 20, 0.05)
    phi_dead = h.dead_at(last)
    for rx in (last + 2.5, last + 5.0, last + 30.0):  # data arrived at rx, PONGs did not
        assert h.dead_at(rx) == rx + KEEPALIVE > phi_dead  # phi over 8, but not silent
    assert h.phi(last + 30.0) > PHI_THRESHOLD


def test_the_hard_cap_holds_whatever_phi_says() -> None:
    h = LinkHealth(KEEPALIVE, 2.0, 0.0)  # a cap below what phi would need
    last = steady(h, 0.0, 20, 0.05)
    assert h.dead_at(last) == last + 2.0


def test_a_pong_ending_a_suspected_failure_does_not_teach_phi_the_outage() -> None:
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    last = steady(h, 0.0, 30, 0.05)
    before = h.dead_at(last) - last
    seq = h.ping(last + 10.0)
    h.pong(seq, last + 10.05)  # after a 10 s outage
    assert h.dead_at(last + 10.05) - (last + 10.05) == pytest.approx(before)


@pytest.mark.parametrize(
    ("keepalive", "cap"), [(0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), (1.0, 0.0), (1.0, math.inf)]
)
def test_bad_settings_are_refused(keepalive: float, cap: float) -> None:
    with pytest.raises(ValueError):
        LinkHealth(keepalive, cap, 0.0)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["ping", "pong"]),
        st.floats(0.0, 5.0),
        st.integers(0, 2**32 - 1),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_fuzz_any_sequence_keeps_the_figures_in_range(ops: list[tuple[str, float, int]]) -> None:
    """Any order of PINGs and PONGs (for any seq, at any time): nothing raises, the table
    stays bounded and the figures in range."""
    h = LinkHealth(KEEPALIVE, CAP, 0.0)
    now, sent = 0.0, [0]
    for op, step, seq in ops:
        now += step
        if op == "ping":
            sent.append(h.ping(now))
        else:
            h.pong(sent[seq % len(sent)] if seq % 2 else seq, now)
        assert h.outstanding <= MAX_OUTSTANDING
        assert 0.0 <= h.loss <= 1.0
        assert h.rtt is None or h.rtt >= 0.0
        assert h.phi(now) >= 0.0
        assert now < h.dead_at(now) <= now + CAP
