"""Injected randomness (zmesh/rng.py)."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.rng import DeterministicRng, randbelow, sample


def test_same_seed_same_bytes() -> None:
    assert DeterministicRng(1).bytes(100) == DeterministicRng(1).bytes(100)
    assert DeterministicRng(b"seed").bytes(100) == DeterministicRng(b"seed").bytes(100)


def test_different_seeds_and_labels_differ() -> None:
    outs = {
        DeterministicRng(1).bytes(32),
        DeterministicRng(2).bytes(32),
        DeterministicRng(-1).bytes(32),
        DeterministicRng(b"1").bytes(32),
        DeterministicRng(1, b"x").bytes(32),
    }
    assert len(outs) == 5


def test_int_seed_is_its_32_byte_encoding() -> None:
    assert DeterministicRng(7).bytes(16) == DeterministicRng((7).to_bytes(32, "big")).bytes(16)


def test_stream_continues_across_calls() -> None:
    rng = DeterministicRng(3)
    first, second = rng.bytes(10), rng.bytes(10)
    assert first != second
    assert first + second == DeterministicRng(3).bytes(20)


def test_zero_and_negative_requests() -> None:
    rng = DeterministicRng(3)
    assert rng.bytes(0) == b""
    with pytest.raises(ValueError, match="non-negative"):
        rng.bytes(-1)
    assert rng.bytes(8) == DeterministicRng(3).bytes(8)  # nothing was consumed


@settings(max_examples=100)
@given(st.lists(st.integers(0, 5000), max_size=12), st.binary(max_size=8))
def test_chunking_does_not_change_the_stream(sizes: list[int], seed: bytes) -> None:
    rng = DeterministicRng(seed)
    pieces = b"".join(rng.bytes(n) for n in sizes)
    assert pieces == DeterministicRng(seed).bytes(sum(sizes))


def test_block_boundaries() -> None:
    whole = DeterministicRng(5).bytes(3 * 4096 + 1)
    rng = DeterministicRng(5)
    assert rng.bytes(4095) + rng.bytes(2) + rng.bytes(4096) + rng.bytes(4096) == whole


def test_forks_are_independent() -> None:
    parent = DeterministicRng(9)
    a, b = parent.fork(b"a"), parent.fork(b"b")
    assert a.bytes(32) != b.bytes(32)
    # forking consumes nothing from the parent, and a fork is reproducible
    assert parent.bytes(32) == DeterministicRng(9).bytes(32)
    assert parent.fork(b"a").bytes(32) == DeterministicRng(9).fork(b"a").bytes(32)
    # drawing from a fork or the parent does not perturb the other
    c = DeterministicRng(9).fork(b"a")
    DeterministicRng(9).bytes(10_000)
    assert c.bytes(32) == DeterministicRng(9).fork(b"a").bytes(32)
    assert parent.fork(b"a").bytes(32) != parent.bytes(32)
    assert DeterministicRng(10).fork(b"a").bytes(32) != DeterministicRng(9).fork(b"a").bytes(32)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 255, 256, 257, 1000, 2**40 + 3])
def test_randbelow_range(n: int) -> None:
    rng = DeterministicRng(n)
    values = [randbelow(rng, n) for _ in range(500)]
    assert all(0 <= v < n for v in values)
    if n > 1:
        assert len(set(values)) > 1


def test_randbelow_rejects_empty_range() -> None:
    for n in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            randbelow(DeterministicRng(1), n)


@pytest.mark.parametrize("n", [3, 10, 100])
def test_randbelow_is_roughly_uniform(n: int) -> None:
    rng = DeterministicRng(42)
    draws = 200 * n
    counts = Counter(randbelow(rng, n) for _ in range(draws))
    assert set(counts) == set(range(n))
    expected = draws / n
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    # chi-square with n-1 degrees of freedom: mean n-1, far below this bound
    assert chi2 < 3 * (n - 1) + 30


def test_sample() -> None:
    items = [bytes([i]) for i in range(20)]
    rng = DeterministicRng(4)
    for k in (0, 1, 5, 20):
        chosen = sample(rng, items, k)
        assert len(chosen) == k
        assert len(set(chosen)) == k
        assert set(chosen) <= set(items)
    assert items == [bytes([i]) for i in range(20)]  # the input is not mutated
    assert sample(DeterministicRng(4), items, 5) == sample(DeterministicRng(4), items, 5)
    for k in (-1, 21):
        with pytest.raises(ValueError, match="larger"):
            sample(rng, items, k)


def test_sample_is_roughly_uniform() -> None:
    items = [bytes([i]) for i in range(5)]
    rng = DeterministicRng(8)
    firsts = Counter(sample(rng, items, 2)[0] for _ in range(2000))
    assert all(300 < firsts[i] < 500 for i in items)
