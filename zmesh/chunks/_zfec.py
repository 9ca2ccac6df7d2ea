"""Reed–Solomon erasure coding through zfec (the C library of Tahoe-LAFS), on CPython.

Pyodide does not ship zfec; there :mod:`zmesh.chunks._gf256` computes the same bytes.
"""

from collections.abc import Sequence
from functools import lru_cache

import zfec  # type: ignore[import-untyped]


@lru_cache(maxsize=64)
def _encoder(k: int, n: int) -> "zfec.Encoder":
    return zfec.Encoder(k, n)


@lru_cache(maxsize=64)
def _decoder(k: int, n: int) -> "zfec.Decoder":
    return zfec.Decoder(k, n)


def encode(blocks: Sequence[bytes], k: int, n: int) -> list[bytes]:
    """The ``n - k`` parity blocks of ``k`` data blocks of one length."""
    return list(_encoder(k, n).encode(tuple(blocks), tuple(range(k, n))))


def decode(shares: Sequence[tuple[int, bytes]], k: int, n: int) -> list[bytes]:
    """The ``k`` data blocks from exactly ``k`` (share number, block) pairs, numbers
    distinct and sorted."""
    numbers = tuple(s for s, _ in shares)
    return list(_decoder(k, n).decode(tuple(b for _, b in shares), numbers))
