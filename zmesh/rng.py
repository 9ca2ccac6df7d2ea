"""Injected randomness.

Every random value in the core comes from an :class:`Rng` passed in by the driver.  The
simulator and the tests use :class:`DeterministicRng`, whose output depends only on its
seed, so a seeded run is reproducible bit for bit on CPython and on Pyodide (it uses
only :mod:`hashlib`).  Native and browser drivers pass an OS-backed Rng.
"""

import builtins
import hashlib
from typing import Protocol


class Rng(Protocol):
    """A source of random bytes.

    ``reproducible`` says whether the stream is a function of a seed.  A reproducible Rng
    must supply every random value itself; an OS-backed one may let a crypto backend draw
    from the same OS source directly (for X-Wing encapsulation that is 17x faster).
    """

    reproducible: bool

    def bytes(self, n: int) -> builtins.bytes:
        """Return ``n`` random bytes."""
        ...


class DeterministicRng:
    """A seeded DRBG: SHAKE-256 of the seed, a fork label and a block counter.

    ``fork(label)`` derives an independent stream, so each node of a simulation gets its
    own generator and adding a node does not perturb the others.
    """

    _BLOCK = 4096
    reproducible = True

    def __init__(self, seed: bytes | int, label: bytes = b"") -> None:
        if isinstance(seed, int):
            seed = seed.to_bytes(32, "big", signed=True)
        self._key = hashlib.sha256(b"zmesh-drbg\x00" + label + b"\x00" + seed).digest()
        self._counter = 0
        self._pool = b""
        self._pos = 0

    def bytes(self, n: int) -> builtins.bytes:
        if n < 0:
            raise ValueError("n must be non-negative")
        end = self._pos + n
        if end > len(self._pool):
            blocks = [self._pool[self._pos :]]
            have = len(blocks[0])
            while have < n:
                xof = hashlib.shake_256(self._key + self._counter.to_bytes(8, "big"))
                blocks.append(xof.digest(self._BLOCK))
                self._counter += 1
                have += self._BLOCK
            self._pool, self._pos, end = b"".join(blocks), 0, n
        out = self._pool[self._pos : end]
        self._pos = end
        return out

    def fork(self, label: builtins.bytes) -> "DeterministicRng":
        """Return an independent generator derived from this one's key and ``label``."""
        return DeterministicRng(self._key, label)


def randbelow(rng: Rng, n: int) -> int:
    """Return a uniform integer in ``[0, n)`` by rejection sampling."""
    if n <= 0:
        raise ValueError("n must be positive")
    nbytes = (n.bit_length() + 7) // 8 + 1
    limit = (256**nbytes // n) * n
    while True:
        x = int.from_bytes(rng.bytes(nbytes), "big")
        if x < limit:
            return x % n


def sample(rng: Rng, items: list[bytes], k: int) -> list[bytes]:
    """Return ``k`` distinct items chosen uniformly (partial Fisher-Yates)."""
    if not 0 <= k <= len(items):
        raise ValueError("sample larger than population")
    pool = list(items)
    for i in range(k):
        j = i + randbelow(rng, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]
