"""Onion key rotation and the replay cache (zmesh/onion/keyring.py)."""

import gc
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.crypto import xwing
from zmesh.errors import CloseCode, RemoteProtocolError
from zmesh.onion import sphinx
from zmesh.onion.geometry import Geometry
from zmesh.onion.keyring import (
    BLOOM_HASHES,
    DEFAULT_REPLAY_CAPACITY,
    MAX_REPLAY_CAPACITY,
    MIGRATE_PER_RECORD,
    OnionKeyRing,
    ReplayCache,
)
from zmesh.rng import DeterministicRng

GEOMETRY = Geometry()


def tags(n: int, label: bytes = b"tags") -> list[bytes]:
    rng = DeterministicRng(9, label)
    return [rng.bytes(32) for _ in range(n)]


def cache_of(ring: OnionKeyRing, epoch: int) -> ReplayCache:
    return ring._keys[epoch].replay


# -- the API: a check that records nothing, then a record -------------------------------


def test_is_replay_records_nothing() -> None:
    ring = OnionKeyRing(DeterministicRng(3), now=0.0)
    tag = b"t" * 32
    assert not ring.epoch_key(0).replay.seen(tag)
    assert not ring.epoch_key(0).replay.seen(tag)  # a refused circuit costs no cache space
    ring.epoch_key(0).replay.record(tag)
    assert ring.epoch_key(0).replay.seen(tag)
    assert not ring.epoch_key(0).replay.seen(b"u" * 32)


def test_a_replayed_setup_header_is_caught() -> None:
    ring = OnionKeyRing(DeterministicRng(3), now=0.0)
    epoch, pk = ring.current(0.0)
    hop = sphinx.PathHop(bytes(32), epoch, pk)
    header = sphinx.build_setup_header(GEOMETRY, [hop], DeterministicRng(4)).header
    first = sphinx.unwrap_setup_header(GEOMETRY, ring.epoch_key(epoch).key, header)
    assert not ring.epoch_key(epoch).replay.seen(first.keys.replay_tag)
    ring.epoch_key(epoch).replay.record(first.keys.replay_tag)
    again = sphinx.unwrap_setup_header(GEOMETRY, ring.epoch_key(epoch).key, header)
    assert ring.epoch_key(epoch).replay.seen(again.keys.replay_tag)


def test_unknown_epoch() -> None:
    ring = OnionKeyRing(DeterministicRng(3), now=0.0)
    with pytest.raises(RemoteProtocolError) as err:
        ring.epoch_key(7)
    assert err.value.code is CloseCode.AUTH


@pytest.mark.parametrize("capacity", [0, -1, MAX_REPLAY_CAPACITY + 1])
def test_capacity_bounds(capacity: int) -> None:
    with pytest.raises(ValueError):
        OnionKeyRing(DeterministicRng(3), now=0.0, replay_capacity=capacity)
    with pytest.raises(ValueError):
        ReplayCache(bytes(32), capacity)


def test_filter_key_length() -> None:
    with pytest.raises(ValueError):
        ReplayCache(bytes(8), 16)


# -- the capacity attack (zMesh issue 7) ------------------------------------------------


def test_capacity_attack_does_not_close_the_relay() -> None:
    """An attacker fills the cache far past capacity; fresh circuits are still accepted
    (all but the computed false-positive share) and every recorded tag is still refused."""
    capacity = 64
    ring = OnionKeyRing(DeterministicRng(3), now=0.0, replay_capacity=capacity)
    flood = tags(4 * capacity, b"flood")
    for tag in flood:
        assert not ring.epoch_key(0).replay.seen(tag) or cache_of(ring, 0).overflowed
        ring.epoch_key(0).replay.record(tag)
    cache = cache_of(ring, 0)
    assert cache.overflowed
    assert cache._exact is None  # freed: memory is the fixed-size filter alone
    assert all(ring.epoch_key(0).replay.seen(tag) for tag in flood)  # no false negatives
    fresh = tags(2000, b"honest")
    refused = sum(ring.epoch_key(0).replay.seen(tag) for tag in fresh)
    assert refused / len(fresh) < 3 * cache.false_positive_rate() < 0.1
    honest = next(t for t in fresh if not ring.epoch_key(0).replay.seen(t))
    ring.epoch_key(0).replay.record(honest)
    assert ring.epoch_key(0).replay.seen(honest)  # and its replay is refused


def test_exact_set_means_no_false_positives_below_capacity() -> None:
    capacity = 512  # a tiny filter (2^14 bits) that alone would give false positives
    ring = OnionKeyRing(DeterministicRng(3), now=0.0, replay_capacity=capacity)
    for tag in tags(capacity):
        ring.epoch_key(0).replay.record(tag)
    cache = cache_of(ring, 0)
    assert not cache.overflowed
    assert cache._filter is None  # below capacity: no filter, no hashing
    fresh = tags(20_000, b"fresh")
    assert not any(ring.epoch_key(0).replay.seen(t) for t in fresh)


def test_overflow_happens_at_the_capacity_plus_first_tag() -> None:
    ring = OnionKeyRing(DeterministicRng(3), now=0.0, replay_capacity=4)
    four = tags(5)
    for tag in four[:4]:
        ring.epoch_key(0).replay.record(tag)
        ring.epoch_key(0).replay.record(tag)  # recording twice takes no extra room
    assert not cache_of(ring, 0).overflowed
    ring.epoch_key(0).replay.record(four[4])
    assert cache_of(ring, 0).overflowed
    assert all(ring.epoch_key(0).replay.seen(t) for t in four)


def test_false_positive_rate_measured_against_computed() -> None:
    capacity = 2048  # filter: 2^16 bits
    cache = ReplayCache(bytes(range(32)), capacity)
    assert cache.bits == 1 << 16
    n = 4 * capacity
    for tag in tags(n, b"load"):
        cache.record(tag)
    assert cache.overflowed
    computed = cache.false_positive_rate()
    assert computed == pytest.approx(0.0216, abs=0.001)  # the module doc's 4x row
    probes = tags(40_000, b"probe")
    measured = sum(cache.seen(t) for t in probes) / len(probes)
    assert measured == pytest.approx(computed, rel=0.15)  # about 6 standard deviations
    # and against the filter's actual fill, which the formula estimates
    assert cache._filter is not None
    fill = sum(bin(b).count("1") for b in cache._filter) / cache.bits
    assert measured == pytest.approx(fill**BLOOM_HASHES, rel=0.15)


def test_default_sizes_match_the_module_doc() -> None:
    cache = ReplayCache(bytes(32), DEFAULT_REPLAY_CAPACITY)
    assert cache.bits == 1 << 25  # 4 MiB
    assert cache._filter is None  # nothing allocated before the first record
    rates = [cache.false_positive_rate(DEFAULT_REPLAY_CAPACITY << i) for i in range(4)]
    assert [f"{r:.1e}" for r in rates] == ["2.5e-05", "9.4e-04", "2.2e-02", "2.2e-01"]


# -- rotation and determinism ------------------------------------------------------------


def test_rotation_deletes_the_key_and_both_replay_structures() -> None:
    ring = OnionKeyRing(DeterministicRng(3), now=0.0, epoch_length=100.0, replay_capacity=2)
    e0, pk0 = ring.current(0.0)
    for tag in tags(5):  # past capacity: exact set gone, filter in use
        ring.epoch_key(e0).replay.record(tag)
    ring.epoch_key(e0).replay.record(b"t" * 32)
    old = weakref.ref(cache_of(ring, e0))
    ring.rotate(150.0)
    e1, pk1 = ring.current(150.0)
    assert (e0, e1) == (0, 1)
    assert pk0 != pk1
    assert ring.epochs() == [0, 1]  # grace: the previous epoch still works
    assert ring.epoch_key(e0).replay.seen(b"t" * 32)
    assert not ring.epoch_key(e1).replay.seen(b"t" * 32)  # each epoch has its own cache
    ring.rotate(250.0)
    assert ring.epochs() == [1, 2]
    gc.collect()
    assert old() is None  # the filter and the exact set went with it
    with pytest.raises(RemoteProtocolError):
        ring.epoch_key(e0)


def test_migration_moves_every_exact_tag_then_frees_the_set() -> None:
    capacity = 64
    ring = OnionKeyRing(DeterministicRng(3), now=0.0, replay_capacity=capacity)
    old = tags(capacity)
    for tag in old:
        ring.epoch_key(0).replay.record(tag)
    cache = cache_of(ring, 0)
    newer = tags(capacity // MIGRATE_PER_RECORD + 1, b"new")
    for i, tag in enumerate(newer):
        ring.epoch_key(0).replay.record(tag)
        assert all(ring.epoch_key(0).replay.seen(t) for t in old)  # before, during and after
        if i < len(newer) - 2:
            assert cache._moving is not None
    assert cache._moving is None  # migrated: the exact set is freed
    assert all(cache._in_filter(t) for t in old + newer)


def test_same_seed_same_filter_bits() -> None:
    def filled(seed: int) -> bytes:
        ring = OnionKeyRing(DeterministicRng(seed), now=0.0, replay_capacity=64)
        for tag in tags(100):  # past capacity, so the filter holds them all
            ring.epoch_key(0).replay.record(tag)
        bits = cache_of(ring, 0)._filter
        assert bits is not None
        return bytes(bits)

    assert filled(5) == filled(5)
    assert filled(5) != filled(6)  # the filter is keyed per ring (and per epoch)


def test_the_filter_key_draws_nothing_more_from_the_rng() -> None:
    """A node's random stream (and the simulator's pinned digest) is as before."""
    rng, reference = DeterministicRng(5), DeterministicRng(5)
    OnionKeyRing(rng, now=0.0)
    reference.bytes(xwing.SEED_SIZE)
    assert rng.bytes(16) == reference.bytes(16)


def test_each_epoch_has_its_own_filter_key() -> None:
    ring = OnionKeyRing(DeterministicRng(3), now=0.0, epoch_length=100.0)
    ring.rotate(150.0)
    tag = b"t" * 32
    assert cache_of(ring, 0)._indices(tag) != cache_of(ring, 1)._indices(tag)


# -- fuzzing -----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.integers(1, 40),
    ops=st.lists(st.tuples(st.integers(0, 80), st.booleans()), max_size=150),
)
def test_fuzz_no_false_negatives_and_exact_below_capacity(
    capacity: int, ops: list[tuple[int, bool]]
) -> None:
    """Any interleaving of checks and records: a recorded tag is always a replay, and an
    unrecorded one is never a replay until the exact set overflowed."""
    ring = OnionKeyRing(DeterministicRng(3), now=0.0, replay_capacity=capacity)
    pool = tags(81, b"pool")
    recorded: set[int] = set()
    for index, do_record in ops:
        replay = ring.epoch_key(0).replay.seen(pool[index])
        if index in recorded:
            assert replay
        elif not cache_of(ring, 0).overflowed:
            assert not replay
        if do_record:
            ring.epoch_key(0).replay.record(pool[index])
            recorded.add(index)
    assert cache_of(ring, 0).overflowed == (len(recorded) > capacity)
