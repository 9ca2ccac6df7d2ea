"""Avoidance: decaying failure scores of relays, the table bound and hostile input."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.health.avoid import MAX_SCORE, Avoidance

A, B = b"a" * 32, b"b" * 32


def test_a_failure_avoids_a_relay_until_it_decays() -> None:
    t = Avoidance(half_life=60.0, threshold=1.0)
    assert not t.avoided(A, 0.0) and t.score(A, 0.0) == 0.0
    t.failed(A, 10.0)
    assert t.avoided(A, 10.0) and not t.avoided(B, 10.0)
    assert t.score(A, 70.0) == pytest.approx(0.5)
    assert not t.avoided(A, 70.0)


def test_failures_add_up_and_keep_a_relay_avoided_longer() -> None:
    t = Avoidance(half_life=60.0, threshold=1.0)
    t.failed(A, 0.0)
    t.failed(A, 60.0)  # 0.5 left + 1
    t.failed(A, 60.0, weight=2.5)
    assert t.score(A, 60.0) == pytest.approx(4.0)
    assert t.avoided(A, 170.0) and not t.avoided(A, 181.0)


def test_decayed_entries_are_dropped_lazily() -> None:
    t = Avoidance(half_life=1.0)
    t.failed(A, 0.0)
    t.failed(B, 0.0)
    assert len(t) == 2
    assert t.score(A, 20.0) == 0.0  # 2**-20 < threshold / 1000
    assert len(t) == 1


def test_an_earlier_now_decays_nothing_and_does_not_move_time_back() -> None:
    t = Avoidance(half_life=10.0)
    t.failed(A, 100.0)
    assert t.score(A, 50.0) == 1.0
    t.failed(A, 50.0)  # counted, as of 100.0
    assert t.score(A, 100.0) == 2.0 and t.score(A, 110.0) == pytest.approx(1.0)


def test_scores_are_capped() -> None:
    t = Avoidance()
    t.failed(A, 0.0, weight=1e308)
    t.failed(A, 0.0, weight=1e308)
    assert t.score(A, 0.0) == MAX_SCORE


def test_spraying_ids_cannot_grow_the_table_nor_evict_a_worse_relay() -> None:
    t = Avoidance(max_entries=16)
    t.failed(A, 0.0, weight=5.0)
    for i in range(10_000):
        t.failed(i.to_bytes(32, "big"), float(i) / 1000)
        assert len(t) <= 16
    assert t.avoided(A, 10.0)


def test_a_full_table_evicts_the_lowest_score_oldest_first() -> None:
    t = Avoidance(max_entries=2)
    t.failed(A, 0.0, weight=3.0)
    t.failed(B, 0.0)
    c = b"c" * 32
    t.failed(c, 0.0)  # ties with B: B is older and goes
    assert t.score(B, 0.0) == 0.0 and t.score(c, 0.0) == 1.0 and t.score(A, 0.0) == 3.0
    t.failed(b"d" * 32, 0.0, weight=0.5)  # the lowest is the newcomer itself
    assert len(t) == 2 and t.score(b"d" * 32, 0.0) == 0.0


def test_an_old_entry_decayed_to_nothing_makes_room_first() -> None:
    t = Avoidance(max_entries=2, half_life=1.0)
    t.failed(A, 0.0)
    t.failed(B, 100.0, weight=0.01)
    t.failed(b"c" * 32, 100.0, weight=0.02)  # A decayed under the floor: it goes, B stays
    assert len(t) == 2 and t.score(B, 100.0) == pytest.approx(0.01)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_now_or_weight_is_a_value_error(bad: float) -> None:
    t = Avoidance()
    for call in (
        lambda: t.failed(A, bad),
        lambda: t.failed(A, 0.0, weight=bad),
        lambda: t.score(A, bad),
        lambda: t.avoided(A, bad),
    ):
        with pytest.raises(ValueError):
            call()
    assert len(t) == 0


@pytest.mark.parametrize("weight", [0.0, -1.0])
def test_a_weight_must_be_positive(weight: float) -> None:
    with pytest.raises(ValueError):
        Avoidance().failed(A, 0.0, weight=weight)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"half_life": 0.0},
        {"half_life": math.inf},
        {"threshold": 0.0},
        {"threshold": math.nan},
        {"threshold": 2 * MAX_SCORE},
        {"max_entries": 0},
    ],
)
def test_bad_settings_are_value_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Avoidance(**kwargs)  # type: ignore[arg-type]


OP = st.tuples(
    st.sampled_from([A, B, b"c", b"", b"\x00" * 64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(OP, max_size=60), max_entries=st.integers(1, 4))
def test_fuzz_any_input_keeps_scores_finite_and_the_table_bounded(
    ops: list[tuple[bytes, float, float]], max_entries: int
) -> None:
    t = Avoidance(half_life=5.0, max_entries=max_entries)
    for node_id, now, weight in ops:
        if math.isfinite(now) and math.isfinite(weight) and weight > 0.0:
            t.failed(node_id, now, weight)
        else:
            with pytest.raises(ValueError):
                t.failed(node_id, now, weight)
        assert len(t) <= max_entries
        if math.isfinite(now):
            score = t.score(node_id, now)
            assert 0.0 <= score <= MAX_SCORE
            assert t.avoided(node_id, now) == (score >= t.threshold)


def test_clear_forgets_a_relay_seen_working_again() -> None:
    table = Avoidance()
    table.failed(b"r", 0.0, weight=8.0)
    assert table.avoided(b"r", 200.0)  # 8 halves to 0.5 only after 4 half-lives
    table.clear(b"r")
    assert not table.avoided(b"r", 1.0) and len(table) == 0
    table.clear(b"unknown")  # nothing to forget: no error
