"""TokenBucket: the per-peer work budget."""

from hypothesis import given
from hypothesis import strategies as st

from zmesh.budget import TokenBucket


def test_starts_full_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0)
    assert [bucket.take(5.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.ready_at(5.0) == 5.1
    assert not bucket.take(5.05)
    assert bucket.take(5.1)
    assert bucket.take(100.0) and bucket.take(100.0) and bucket.take(100.0)  # capped at burst
    assert not bucket.take(100.0)


def test_a_take_at_ready_at_always_succeeds() -> None:
    """Floating point must not leave a timer armed for ready_at spinning."""
    for rate in (100.0, 3.0, 7.0, 1000.0):
        bucket = TokenBucket(rate=rate, burst=2.0)
        now = 1000.0
        while bucket.take(now):
            pass
        for _ in range(500):
            now = bucket.ready_at(now)
            assert bucket.take(now)


@given(st.lists(st.floats(0.0, 5.0), max_size=50), st.floats(0.1, 500.0), st.floats(1.0, 50.0))
def test_never_grants_more_than_burst_plus_rate_times_time(
    gaps: list[float], rate: float, burst: float
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    now, granted = 0.0, 0
    for gap in gaps:
        now += gap
        while bucket.take(now):
            granted += 1
    assert granted <= burst + rate * now + 1
