"""Reed–Solomon k-of-n erasure coding behind one interface, the same bytes everywhere.

On CPython the coding is zfec's (a maintained C library); in Pyodide, which does not
ship zfec, it is :mod:`zmesh.chunks._gf256`, a pure-Python implementation of the same
code (``sys.platform == "emscripten"`` chooses, as for :mod:`zmesh.crypto`).  The
vectors in tests/vectors/erasure.json hold both to the same output.

The code is systematic: share numbers ``0..k-1`` are the data blocks themselves and
``k..n-1`` the parity blocks; any ``k`` distinct shares rebuild the data.
"""

import sys
from collections.abc import Mapping, Sequence

from .errors import NotEnoughPiecesError
from .manifest import MAX_N

if sys.platform == "emscripten":
    from . import _gf256 as backend
else:
    from . import _zfec as backend

__all__ = ["BACKEND", "backend", "decode", "encode"]

BACKEND = backend.__name__.rsplit(".", 1)[-1].lstrip("_")


def _check(k: int, n: int) -> None:
    if not 1 <= k <= n <= MAX_N:
        raise NotEnoughPiecesError(f"erasure parameters {k}-of-{n} are not 1 <= k <= n <= {MAX_N}")


def encode(blocks: Sequence[bytes], n: int) -> list[bytes]:
    """The ``n - len(blocks)`` parity blocks of the data blocks (all of one length).

    Raises NotEnoughPiecesError (a local error) for bad parameters or unequal lengths."""
    k = len(blocks)
    _check(k, n)
    if len({len(b) for b in blocks}) != 1:
        raise NotEnoughPiecesError("the blocks of a group must be of one length")
    if k == n:
        return []
    return backend.encode([bytes(b) for b in blocks], k, n)


def decode(shares: Mapping[int, bytes], k: int, n: int) -> list[bytes]:
    """The ``k`` data blocks rebuilt from any ``k`` of the shares (share number to block).

    Uses the data shares at hand first (then nothing is computed for them).  Raises
    NotEnoughPiecesError if fewer than ``k`` shares are given, a share number is outside
    ``0..n-1``, or the blocks differ in length."""
    _check(k, n)
    if any(not 0 <= s < n for s in shares):
        raise NotEnoughPiecesError(f"share numbers are 0..{n - 1}")
    if len(shares) < k:
        raise NotEnoughPiecesError(f"{len(shares)} shares cannot rebuild a group that needs {k}")
    chosen = sorted(shares)[:k]  # data shares (the lowest numbers) first
    if len({len(shares[s]) for s in chosen}) != 1:
        raise NotEnoughPiecesError("the shares of a group must be of one length")
    if chosen == list(range(k)):
        return [bytes(shares[s]) for s in chosen]
    return backend.decode([(s, bytes(shares[s])) for s in chosen], k, n)
