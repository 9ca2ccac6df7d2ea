"""PhiDetector: the Akka/Cassandra phi-accrual failure detector, its bounds and hostile clocks."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.health.phi import MAX_INTERVAL, PhiDetector


def akka_phi(time_diff: float, mean: float, std: float) -> float:
    """Akka's two-branch formula, written out independently of the module."""
    y = (time_diff - mean) / std
    e = math.exp(-y * (1.5976 + 0.070566 * y * y))
    if time_diff > mean:
        return -math.log10(e / (1.0 + e))
    return -math.log10(1.0 - 1.0 / (1.0 + e))


def regular(detector: PhiDetector, count: int, every: float = 1.0, start: float = 0.0) -> float:
    now = start
    for i in range(count):
        now = start + i * every
        detector.heartbeat(now)
    return now


def test_phi_is_zero_before_any_heartbeat() -> None:
    d = PhiDetector()
    assert d.phi(0.0) == 0.0 and d.phi(1e9) == 0.0 and d.available(1e9)
    assert d.last_heartbeat is None


def test_phi_matches_akkas_formula() -> None:
    d = PhiDetector(min_std=0.01, acceptable_pause=0.5, first_interval=2.0)
    for now in (0.0, 1.0, 3.0, 4.5):
        d.heartbeat(now)
    intervals = [1.5, 2.5, 1.0, 2.0, 1.5]  # the two seeds around first_interval, then ours
    mean = sum(intervals) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in intervals) / 5)
    assert d.mean == pytest.approx(mean) and d.std == pytest.approx(std)
    for later in (4.5, 5.0, 6.0, 7.0, 8.0):
        expected = akka_phi(later - 4.5, mean + 0.5, std)
        assert d.phi(later) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_suspicion_grows_with_silence_and_a_heartbeat_clears_it() -> None:
    d = PhiDetector()
    last = regular(d, 50)
    assert d.available(last + 1.0)
    assert not d.available(last + 3.0)
    assert d.phi(last + 3.0) > 8.0
    assert d.phi(last + 1.5) < d.phi(last + 2.0) < d.phi(last + 3.0)
    assert not d.available(last + 1.6, threshold=1.0) and d.available(last + 1.6, threshold=1e9)
    d.heartbeat(last + 100.0)
    assert d.available(last + 100.5)


def test_the_interval_that_ends_an_outage_does_not_enter_the_window() -> None:
    d = PhiDetector()
    last = regular(d, 20)
    mean, held = d.mean, len(d)
    d.heartbeat(last + 3600.0)  # phi was far over the threshold: not a sample
    assert (d.mean, len(d)) == (mean, held) and d.last_heartbeat == last + 3600.0


def test_acceptable_pause_tolerates_a_longer_silence() -> None:
    strict, lenient = PhiDetector(), PhiDetector(acceptable_pause=3.0)
    last = regular(strict, 30)
    regular(lenient, 30)
    assert not strict.available(last + 3.0) and lenient.available(last + 3.0)


def test_identical_intervals_do_not_divide_by_zero() -> None:
    d = PhiDetector(window=2)
    last = regular(d, 10)
    assert d.std == 0.0
    assert math.isfinite(d.phi(last + 1e6)) and d.phi(last + 1e6) > 1e6


def test_an_earlier_heartbeat_is_ignored_and_phi_before_the_last_is_zero() -> None:
    d = PhiDetector()
    last = regular(d, 10)
    state = (d.mean, d.std, len(d), d.last_heartbeat)
    d.heartbeat(last - 5.0)
    assert (d.mean, d.std, len(d), d.last_heartbeat) == state
    assert d.phi(last - 0.001) == 0.0


def test_the_window_is_bounded() -> None:
    d = PhiDetector(window=7)
    regular(d, 10_000, every=0.5)
    assert len(d) == 7 and d.mean == pytest.approx(0.5)


def test_huge_gaps_are_capped_and_phi_stays_finite() -> None:
    d = PhiDetector(threshold=1e300)  # so the huge gap is sampled
    d.heartbeat(-1e308)
    d.heartbeat(1e308)
    assert len(d) == 3 and max(d.mean, d.std) <= MAX_INTERVAL
    assert math.isfinite(d.phi(1e308))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_now_is_a_value_error(bad: float) -> None:
    d = PhiDetector()
    d.heartbeat(0.0)
    for call in (d.heartbeat, d.phi, d.available):
        with pytest.raises(ValueError):
            call(bad)
    assert d.last_heartbeat == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 1},
        {"min_std": 0.0},
        {"min_std": math.nan},
        {"acceptable_pause": -1.0},
        {"acceptable_pause": math.inf},
        {"first_interval": 0.0},
        {"first_interval": 2 * MAX_INTERVAL},
        {"threshold": 0.0},
        {"threshold": math.nan},
    ],
)
def test_bad_settings_are_value_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PhiDetector(**kwargs)  # type: ignore[arg-type]


ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    beats=st.lists(ANY_FLOAT, max_size=40),
    probes=st.lists(FINITE, min_size=2, max_size=10),
    window=st.integers(2, 8),
    min_std=st.floats(1e-9, 1e3),
    pause=st.floats(0.0, 1e6),
)
def test_fuzz_any_clock_gives_a_finite_monotone_phi(
    beats: list[float], probes: list[float], window: int, min_std: float, pause: float
) -> None:
    d = PhiDetector(window=window, min_std=min_std, acceptable_pause=pause)
    for now in beats:
        if math.isfinite(now):
            d.heartbeat(now)
        else:
            with pytest.raises(ValueError):
                d.heartbeat(now)
        assert len(d) <= window
        assert math.isfinite(d.mean) and math.isfinite(d.std) and d.std >= 0.0
    phis = [d.phi(now) for now in sorted(probes)]
    assert all(math.isfinite(p) and p >= 0.0 for p in phis)
    assert phis == sorted(phis)  # non-decreasing in now for a fixed history


# -- reaches: the inverse of phi ---------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.01, 0.3, 1.0, 3.0, 8.0, 17.0, 17.5, 40.0, 1000.0])
def test_reaches_is_the_time_phi_reaches_a_threshold(threshold: float) -> None:
    d = PhiDetector(min_std=0.2, acceptable_pause=1.0)
    last = regular(d, 30)
    when = d.reaches(threshold)
    assert when >= last
    if when > last:
        assert d.phi(when) == pytest.approx(threshold, rel=1e-9)
        assert d.phi(when - 1e-6) < threshold <= d.phi(when + 1e-6)


def test_reaches_defaults_to_the_detectors_threshold_and_is_never_before_the_last_beat() -> None:
    d = PhiDetector(threshold=8.0, min_std=1.0)
    assert d.reaches() == math.inf  # no heartbeat yet
    last = regular(d, 10)
    assert d.reaches() == d.reaches(8.0) > last
    assert d.reaches(1e-9) == last  # phi is already over it at the last heartbeat


@pytest.mark.parametrize("threshold", [0.0, -1.0, math.nan, math.inf])
def test_reaches_refuses_a_bad_threshold(threshold: float) -> None:
    d = PhiDetector()
    with pytest.raises(ValueError):
        d.reaches(threshold)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.001, 100.0), min_size=1, max_size=30),
    st.floats(0.01, 50.0),
)
def test_fuzz_phi_at_reaches_is_the_threshold(intervals: list[float], threshold: float) -> None:
    d = PhiDetector(min_std=0.05, acceptable_pause=0.5)
    now = 0.0
    d.heartbeat(now)
    for step in intervals:
        now += step
        d.heartbeat(now)
    when = d.reaches(threshold)
    assert when >= now and math.isfinite(when)
    if when > now:
        assert d.phi(when) == pytest.approx(threshold, rel=1e-6)
