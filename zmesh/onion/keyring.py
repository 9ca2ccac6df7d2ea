"""A relay's onion keys: one X-Wing key per epoch, rotated, with per-epoch replay caches.

A key serves its own epoch and, for a grace period, the next one (so descriptors that
clients fetched just before a rotation still work).  After that the key and its replay
cache are deleted: a later compromise of the relay cannot decrypt recorded setup packets
(forward secrecy), and a replayed packet for a dead epoch cannot be decapsulated at all.
"""

from dataclasses import dataclass, field

from ..crypto import xwing
from ..errors import CloseCode, RemoteProtocolError
from ..rng import Rng

DEFAULT_EPOCH_LENGTH = 3600.0
DEFAULT_REPLAY_CAPACITY = 1 << 20


@dataclass
class _EpochKey:
    key: xwing.PrivateKey
    seen: set[bytes] = field(default_factory=set)


class OnionKeyRing:
    def __init__(
        self,
        rng: Rng,
        now: float,
        *,
        epoch_length: float = DEFAULT_EPOCH_LENGTH,
        replay_capacity: int = DEFAULT_REPLAY_CAPACITY,
    ) -> None:
        self._rng = rng
        self.epoch_length = epoch_length
        self.replay_capacity = replay_capacity
        self._keys: dict[int, _EpochKey] = {}
        self.rotate(now)

    def epoch_at(self, now: float) -> int:
        return int(now // self.epoch_length)

    def rotate(self, now: float) -> None:
        """Create the current epoch's key and delete keys past their grace period."""
        current = self.epoch_at(now)
        if current not in self._keys:
            self._keys[current] = _EpochKey(xwing.PrivateKey(self._rng.bytes(xwing.SEED_SIZE)))
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

    def key_for(self, epoch: int) -> xwing.PrivateKey:
        entry = self._keys.get(epoch)
        if entry is None:
            raise RemoteProtocolError(f"no onion key for epoch {epoch}", CloseCode.AUTH)
        return entry.key

    def is_replay(self, epoch: int, tag: bytes) -> bool:
        """True if ``tag`` was recorded in ``epoch`` (records nothing)."""
        entry = self._keys.get(epoch)
        return entry is not None and tag in entry.seen

    def record(self, epoch: int, tag: bytes) -> None:
        """Record the tag of a circuit we accepted."""
        entry = self._keys.get(epoch)
        if entry is not None and len(entry.seen) < self.replay_capacity:
            entry.seen.add(tag)

    def epochs(self) -> list[int]:
        return sorted(self._keys)
