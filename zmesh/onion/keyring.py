"""A relay's onion keys: one X-Wing key per epoch, rotated, with per-epoch replay caches.

A key serves its own epoch and, for a grace period, the next one (so descriptors that
clients fetched just before a rotation still work).  After that the key and its replay
cache are deleted: a later compromise of the relay cannot decrypt recorded setup packets
(forward secrecy), and a replayed packet for a dead epoch cannot be decapsulated at all.

Replay cache.  The relay asks the epoch's ``replay.seen`` (which records nothing) before
it commits to a circuit and calls ``replay.record`` only once it has accepted it, so
setup packets it refuses for other reasons (no route, too many circuits) cost no cache
space.  Each epoch's cache is a keyed Bloom filter in front of an exact set,
as in Katzenpost's mix keys (``server/internal/mixkey``):

* Up to ``replay_capacity`` tags the exact set answers alone, so there are no false
  positives and no hashing on the relay's hot path (a set lookup and insertion).
* Past capacity the relay does NOT refuse every circuit for the rest of the epoch (that
  was zMesh issue 7: 2^20 cheap setups closed a relay for an hour).  It answers from the
  filter: new tags go into it, and the exact set's tags migrate into it
  :data:`MIGRATE_PER_RECORD` per record (the exact set still answers for the tags not yet
  moved), after which the exact set is freed.  A Bloom filter has no false negatives, so
  a replay is still refused; an honest tag is refused with the filter's false-positive
  rate, so the relay sheds a small, computed fraction of circuits instead of all.

Sizes (defaults): ``replay_capacity`` = 2^20 tags, whose exact set of 32-byte tags takes
about 97 MiB in CPython at capacity (and is freed once migrated); the filter has
``BLOOM_BITS_PER_TAG`` * capacity = 2^25 bits (4 MiB, allocated at overflow) and
``BLOOM_HASHES`` = 6 indices.  Its false-positive rate after ``n`` tags is
``(1 - exp(-6 n / 2^25)) ** 6`` (:meth:`ReplayCache.false_positive_rate`):

=====================  =================
tags this epoch        false positives
=====================  =================
2^20 (capacity)        2.5e-5
2^21                   9.4e-4
2^22                   2.2e-2
2^23                   0.22
=====================  =================

Memory per epoch is bounded by the filter plus the exact set at capacity; at most two
epochs are live.  The filter's indices are one keyed BLAKE2b call per tag, split into six
32-bit words; the key is derived from the epoch key's seed (which the injected
:class:`~zmesh.rng.Rng` drew), so it is secret, reproducible from a seed, and drawing it
does not shift the node's random stream.  Pure Python: it runs under Pyodide.
"""

import hashlib
import itertools
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..crypto import xwing
from ..errors import CloseCode, RemoteProtocolError
from ..rng import Rng

DEFAULT_EPOCH_LENGTH = 3600.0
DEFAULT_REPLAY_CAPACITY = 1 << 20
MAX_REPLAY_CAPACITY = 1 << 27  # keeps the filter within 2^32 bits (32-bit indices)
BLOOM_BITS_PER_TAG = 32
BLOOM_HASHES = 6
_INDICES = struct.Struct(f"<{BLOOM_HASHES}I")
MIGRATE_PER_RECORD = 8  # exact-set tags moved into the filter with each record past capacity
_KEY_PERSON = b"zmesh-replay-key"


class ReplayCache:
    """One epoch's replay tags: a keyed Bloom filter in front of an exact set.

    ``capacity`` bounds the exact set; the filter has ``BLOOM_BITS_PER_TAG * capacity``
    bits rounded up to a power of two.  Raises ValueError for a capacity outside
    ``1..MAX_REPLAY_CAPACITY`` or a key BLAKE2b cannot take.
    """

    def __init__(self, key: bytes, capacity: int) -> None:
        if not 1 <= capacity <= MAX_REPLAY_CAPACITY:
            raise ValueError(f"replay capacity must be 1..{MAX_REPLAY_CAPACITY}")
        if not 16 <= len(key) <= 64:
            raise ValueError("the filter key must be 16..64 bytes")
        self._key = key
        self.capacity = capacity
        self.bits = 1 << max(6, (BLOOM_BITS_PER_TAG * capacity - 1).bit_length())
        self._filter: bytearray | None = None  # allocated when the exact set overflows
        self._exact: set[bytes] | None = set()  # None once it overflowed
        self._moving: set[bytes] | None = None  # the exact set's tags not in the filter yet
        self._migration: Iterator[bytes] | None = None
        self.filter_entries = 0  # tags that set at least one new bit

    @property
    def overflowed(self) -> bool:
        """The exact set reached capacity; the filter answers from now on."""
        return self._exact is None

    def _indices(self, tag: bytes) -> tuple[int, ...]:
        digest = hashlib.blake2b(tag, key=self._key, digest_size=_INDICES.size).digest()
        mask = self.bits - 1
        return tuple(word & mask for word in _INDICES.unpack(digest))

    def _in_filter(self, tag: bytes) -> bool:
        bits = self._filter
        if bits is None:
            return False
        return all(bits[i >> 3] >> (i & 7) & 1 for i in self._indices(tag))

    def _add_to_filter(self, tag: bytes) -> None:
        assert self._filter is not None
        bits, new = self._filter, False
        for i in self._indices(tag):
            byte, mask = i >> 3, 1 << (i & 7)
            if not bits[byte] & mask:
                bits[byte] |= mask
                new = True
        self.filter_entries += new

    def seen(self, tag: bytes) -> bool:
        """Whether ``tag`` was recorded (or, after overflow, may have been); records nothing."""
        if self._exact is not None:
            return tag in self._exact
        return (self._moving is not None and tag in self._moving) or self._in_filter(tag)

    def record(self, tag: bytes) -> None:
        """Remember ``tag``; past capacity, in the filter (see the module doc)."""
        exact = self._exact
        if exact is not None:
            if len(exact) < self.capacity or tag in exact:
                exact.add(tag)
                return
            self._filter = bytearray(self.bits // 8)  # overflow: the filter takes over
            self._moving, self._exact = exact, None
            self._migration = iter(exact)  # exact is never changed again
        self._add_to_filter(tag)
        if self._migration is not None:
            moved = list(itertools.islice(self._migration, MIGRATE_PER_RECORD))
            for old in moved:
                self._add_to_filter(old)
            if len(moved) < MIGRATE_PER_RECORD:  # all moved: free the exact set
                self._moving = self._migration = None

    def false_positive_rate(self, entries: int | None = None) -> float:
        """The filter's computed false-positive rate after ``entries`` tags (default: now).

        ``(1 - exp(-k n / m)) ** k`` for k hashes, n tags and m bits (Bloom 1970).
        """
        n = self.filter_entries if entries is None else entries
        return float((1.0 - math.exp(-BLOOM_HASHES * n / self.bits)) ** BLOOM_HASHES)


@dataclass
class EpochKey:
    key: xwing.PrivateKey
    replay: ReplayCache


class OnionKeyRing:
    """Per-epoch onion keys and replay caches, rotated by ``now`` (see the module doc)."""

    def __init__(
        self,
        rng: Rng,
        now: float,
        *,
        epoch_length: float = DEFAULT_EPOCH_LENGTH,
        replay_capacity: int = DEFAULT_REPLAY_CAPACITY,
    ) -> None:
        if not 1 <= replay_capacity <= MAX_REPLAY_CAPACITY:
            raise ValueError(f"replay_capacity must be 1..{MAX_REPLAY_CAPACITY}")
        self._rng = rng
        self.epoch_length = epoch_length
        self.replay_capacity = replay_capacity
        self._keys: dict[int, EpochKey] = {}
        self.rotate(now)

    def epoch_at(self, now: float) -> int:
        return int(now // self.epoch_length)

    def rotate(self, now: float) -> None:
        """Create the current epoch's key and delete keys (and caches) past their grace."""
        current = self.epoch_at(now)
        if current not in self._keys:
            seed = self._rng.bytes(xwing.SEED_SIZE)
            filter_key = hashlib.blake2b(seed, digest_size=32, person=_KEY_PERSON).digest()
            self._keys[current] = EpochKey(
                xwing.PrivateKey(seed), ReplayCache(filter_key, self.replay_capacity)
            )
        for epoch in [e for e in self._keys if e < current - 1]:
            del self._keys[epoch]

    def next_rotation(self, now: float) -> float:
        return (self.epoch_at(now) + 1) * self.epoch_length

    def current(self, now: float) -> tuple[int, bytes]:
        """The epoch number and public key to publish in a descriptor."""
        epoch = self.epoch_at(now)
        if epoch not in self._keys:
            self.rotate(now)
        return epoch, self._keys[epoch].key.public

    def epoch_key(self, epoch: int) -> EpochKey:
        """The key and replay cache of ``epoch``; raises RemoteProtocolError (AUTH) if the
        epoch's key is gone (or never existed).

        Ask ``replay.seen(tag)`` (which records nothing) before committing to a circuit,
        and ``replay.record(tag)`` once it is accepted.  Past the exact set's capacity an
        unseen tag is reported as seen with the filter's false-positive rate; ``record``
        never refuses (past capacity only the fixed-size filter fills).
        """
        entry = self._keys.get(epoch)
        if entry is None:
            raise RemoteProtocolError(f"no onion key for epoch {epoch}", CloseCode.AUTH)
        return entry

    def epochs(self) -> list[int]:
        return sorted(self._keys)
