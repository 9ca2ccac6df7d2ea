"""Bootstrap backoff: exponential, capped, jittered from the injected Rng, reset."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.errors import LocalProtocolError
from zmesh.rng import DeterministicRng
from zmesh.signaling.backoff import BASE, CAP, Backoff


def test_delays_double_within_their_jitter_band_up_to_the_cap() -> None:
    backoff = Backoff(DeterministicRng(1, b"backoff"))
    for attempt in range(12):
        nominal = min(CAP, BASE * 2**attempt)
        assert nominal / 2 <= backoff.next_delay() <= nominal
    assert backoff.attempts == 12


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(DeterministicRng(2, b"backoff"), base=1.0, cap=8.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_jitter_spreads_nodes_that_fail_together() -> None:
    delays = {Backoff(DeterministicRng(seed, b"backoff")).next_delay() for seed in range(50)}
    assert len(delays) == 50
    assert min(delays) < BASE * 0.6 and max(delays) > BASE * 0.9


def test_the_same_seed_gives_the_same_delays() -> None:
    a, b = (Backoff(DeterministicRng(3, b"backoff")) for _ in range(2))
    assert [a.next_delay() for _ in range(8)] == [b.next_delay() for _ in range(8)]


def test_a_very_long_failure_streak_stays_at_the_cap() -> None:
    backoff = Backoff(DeterministicRng(4, b"backoff"))
    backoff.attempts = 10_000  # 2.0 ** 10_000 would overflow a float
    assert CAP / 2 <= backoff.next_delay() <= CAP


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_parameters_are_refused(base: float, cap: float) -> None:
    with pytest.raises(LocalProtocolError):
        Backoff(DeterministicRng(5), base=base, cap=cap)


@given(st.integers(0, 2**32), st.integers(0, 100))
def test_every_delay_is_in_its_band(seed: int, attempts: int) -> None:
    backoff = Backoff(DeterministicRng(seed, b"backoff"))
    backoff.attempts = attempts
    nominal = min(CAP, BASE * 2.0 ** min(attempts, 64))
    assert nominal / 2 <= backoff.next_delay() <= nominal
