"""BuildTimes: Tor's circuit build timeout (Pareto fit), its bounds and hostile durations."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.health.cbt import MAX_SAMPLE, BuildTimes


def pareto(rng: random.Random, xm: float, alpha: float) -> float:
    return xm * (1.0 - rng.random()) ** (-1.0 / alpha)


def test_the_default_holds_until_min_samples() -> None:
    b = BuildTimes()
    for _ in range(99):
        b.add(0.5)
    assert b.fit() is None and b.timeout() == 30.0
    b.add(0.5)
    assert b.fit() is not None and b.timeout() < 30.0


def test_a_hand_computed_fit() -> None:
    # bins of 10 ms: bin 10 holds 3 samples, bins 20 and 40 one each; the 2 modes are bin 10
    # and (the tie goes to the lower bin) bin 20, at their midpoints 0.105 s and 0.205 s
    b = BuildTimes(min_samples=5, num_modes=2, min_timeout=0.01)
    for x in (0.101, 0.103, 0.107, 0.205, 0.4):
        b.add(x)
    fit = b.fit()
    assert fit is not None
    assert fit.xm == pytest.approx((3 * 0.105 + 0.205) / 4) == pytest.approx(0.13)
    # samples under Xm count at Xm (ln 1 = 0): alpha = 5 / (ln(0.205/0.13) + ln(0.4/0.13))
    assert fit.alpha == pytest.approx(5 / (0.455475 + 1.123930), rel=1e-5)
    assert fit.alpha == pytest.approx(3.165748, rel=1e-6)
    # the 80% quantile: Xm / 0.2 ** (1 / alpha)
    assert b.timeout() == fit.timeout == pytest.approx(0.2161398, rel=1e-6)


@pytest.mark.parametrize(("xm", "alpha"), [(0.5, 2.0), (0.2, 3.0), (1.5, 1.5)])
@pytest.mark.parametrize("seed", range(3))
def test_the_fit_recovers_a_known_pareto(xm: float, alpha: float, seed: int) -> None:
    rng = random.Random(seed)
    b = BuildTimes(min_timeout=0.01)
    for _ in range(1000):
        b.add(pareto(rng, xm, alpha))
    true_timeout = xm / 0.2 ** (1 / alpha)
    assert b.timeout() == pytest.approx(true_timeout, rel=0.08)


@pytest.mark.parametrize("seed", range(3))
def test_timeouts_are_right_censored_samples(seed: int) -> None:
    # builds are cut off at the true 80% quantile, as the builder's timeout would: the
    # censored fit still finds the tail (within the bias of Tor's mode-based Xm, which is
    # over xm), where dropping the timeouts would ratchet the timeout down by ~30%
    true_timeout = 0.5 / 0.2**0.5
    rng = random.Random(seed)
    censored, truncated = BuildTimes(min_timeout=0.01), BuildTimes(min_timeout=0.01)
    for _ in range(1000):
        x = pareto(rng, 0.5, 2.0)
        if x < true_timeout:
            censored.add(x)
            truncated.add(x)
        else:
            censored.add_timeout(true_timeout)
    assert 150 < censored.timeouts < 250 and censored.resets == 0
    assert censored.timeout() == pytest.approx(true_timeout, rel=0.12)
    assert truncated.timeout() < 0.75 * true_timeout


def test_add_timeout_defaults_to_the_current_close_timeout() -> None:
    b = BuildTimes(min_samples=1)
    b.add(2.0)
    waited = b.close_timeout()
    b.add_timeout()
    assert b.timeouts == 1 and max(x for x, _ in b._samples) == waited


def test_a_run_of_timeouts_resets_to_the_default() -> None:
    b = BuildTimes()
    for _ in range(200):
        b.add(0.3)
    assert b.timeout() == 1.0  # a fast network: clamped at the minimum
    for _ in range(17):
        b.add_timeout()
    assert b.resets == 0 and b.timeout() < 30.0
    b.add_timeout()  # 18 of the last 20
    assert b.resets == 1 and len(b) == 0 and b.timeout() == 30.0


def test_only_timeouts_held_gives_the_default() -> None:
    b = BuildTimes(min_samples=3, recent=20, max_recent_timeouts=20)
    for _ in range(5):
        b.add_timeout(4.0)
    assert b.fit() is None and b.timeout() == 30.0


def test_the_result_is_clamped_to_min_and_default() -> None:
    fast, slow = BuildTimes(min_samples=1), BuildTimes(min_samples=1, default=10.0)
    fast.add(0.001)
    slow.add(5000.0)
    slow.add(9000.0)
    assert fast.timeout() == 1.0 and slow.timeout() == 10.0


def test_the_sample_ring_is_bounded() -> None:
    b = BuildTimes(max_samples=50, min_samples=10)
    for i in range(10_000):
        b.add(0.5 + (i % 7) / 10)
    assert len(b) == 50


def test_a_sample_ring_full_of_huge_values_stays_finite() -> None:
    b = BuildTimes(min_samples=1, min_timeout=0.01)
    b.add(1e308)
    b.add_timeout(1e308)
    assert max(x for x, _ in b._samples) == MAX_SAMPLE
    assert b.timeout() == 30.0


def test_the_fit_is_a_function_of_the_held_samples_only() -> None:
    rng = random.Random(7)
    samples = [pareto(rng, 0.4, 2.5) for _ in range(300)]
    shuffled = samples[:]
    rng.shuffle(shuffled)
    a, b = BuildTimes(min_timeout=0.01), BuildTimes(min_timeout=0.01)
    for x in samples:
        a.add(x)
    for x in shuffled:
        b.add(x)
    assert a.fit() == b.fit()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.5])
def test_bad_durations_are_value_errors(bad: float) -> None:
    b = BuildTimes(min_samples=1)
    with pytest.raises(ValueError):
        b.add(bad)
    with pytest.raises(ValueError):
        b.add_timeout(bad)
    assert len(b) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default": math.nan},
        {"default": math.inf},
        {"min_timeout": 0.0},
        {"min_timeout": 40.0},
        {"quantile": 1.0},
        {"quantile": 0.0},
        {"num_modes": 0},
        {"min_samples": 0},
        {"min_samples": 2000},
        {"bin_width": 0.0},
        {"max_recent_timeouts": 0},
        {"max_recent_timeouts": 21},
    ],
)
def test_bad_settings_are_value_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BuildTimes(**kwargs)  # type: ignore[arg-type]


OUTCOME = st.tuples(st.booleans(), st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=300, deadline=None)
@given(outcomes=st.lists(OUTCOME, max_size=60), min_samples=st.integers(1, 30))
def test_fuzz_any_durations_give_a_timeout_in_range(
    outcomes: list[tuple[bool, float]], min_samples: int
) -> None:
    twins = [BuildTimes(min_samples=min_samples, max_samples=40) for _ in range(2)]
    for completed, x in outcomes:
        for b in twins:
            record = b.add if completed else b.add_timeout
            if math.isfinite(x) and x >= 0.0:
                record(x)
            else:
                with pytest.raises(ValueError):
                    record(x)
            assert len(b) <= 40
            timeout = b.timeout()
            assert math.isfinite(timeout) and b.min_timeout <= timeout <= b.default
    assert twins[0].fit() == twins[1].fit()  # deterministic


def test_the_close_timeout_is_the_later_quantile() -> None:
    """A build is late at the 80% point (the caller hedges) and abandoned at the 99%
    point, both from the same Pareto fit."""
    b = BuildTimes(min_samples=10)
    for i in range(200):
        b.add(0.5 + 0.02 * i)
    fit = b.fit()
    assert fit is not None
    late = fit.xm / (1 - 0.8) ** (1 / fit.alpha)
    close = fit.xm / (1 - 0.99) ** (1 / fit.alpha)
    assert b.timeout() == pytest.approx(max(late, b.min_timeout))
    assert b.close_timeout() == pytest.approx(min(max(close, b.min_timeout), b.default))
    assert b.close_timeout() > b.timeout()


def test_quantiles_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError):
        BuildTimes(quantile=0.9, close_quantile=0.8)
    with pytest.raises(ValueError):
        BuildTimes(close_quantile=1.0)
