"""Reed–Solomon erasure coding in pure Python, byte for byte the code of zfec.

zfec (Rizzo's ``fec.c``, used by Tahoe-LAFS) works in GF(2^8) with the polynomial
x^8+x^4+x^3+x^2+1 (0x11d).  Its encoding matrix is the n-by-k Vandermonde matrix at the
points 0, 1, a, a^2, ... (a = x), made systematic by multiplying it on the right with
the inverse of its top k rows; decoding inverts the rows of the shares at hand.  An
inverse is unique, so this module yields exactly zfec's bytes (tests/vectors/erasure.json
pins it).

Speed comes from the standard library's C loops: multiplying a block by a constant is
one ``bytes.translate`` through that constant's 256-byte table, and adding blocks is the
XOR of two big integers.  This is the Pyodide backend (zfec is a C extension that Pyodide
does not ship); on CPython :mod:`zmesh.chunks._zfec` is used.
"""

from collections.abc import Sequence
from functools import cache, lru_cache

POLYNOMIAL = 0x11D

Matrix = tuple[tuple[int, ...], ...]


def _tables() -> tuple[list[int], list[int]]:
    exp, log = [0] * 510, [0] * 256
    x = 1
    for i in range(255):
        exp[i] = exp[i + 255] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= POLYNOMIAL
    return exp, log


EXP, LOG = _tables()


def mul(a: int, b: int) -> int:
    """The product of two field elements."""
    return EXP[LOG[a] + LOG[b]] if a and b else 0


def inverse(a: int) -> int:
    """The multiplicative inverse of a non-zero field element."""
    return EXP[255 - LOG[a]]


@cache
def _mul_table(c: int) -> bytes:
    """The 256-byte ``translate`` table that multiplies every byte by ``c``."""
    return bytes(mul(c, v) for v in range(256))


def invert(matrix: Matrix) -> Matrix:
    """The inverse of a square matrix by Gauss–Jordan elimination; raises
    ZeroDivisionError if it is singular (never for rows of the encoding matrix)."""
    size = len(matrix)
    rows = [list(row) + [int(i == j) for j in range(size)] for i, row in enumerate(matrix)]
    for col in range(size):
        pivot = next((r for r in range(col, size) if rows[r][col]), None)
        if pivot is None:
            raise ZeroDivisionError("singular matrix")
        rows[col], rows[pivot] = rows[pivot], rows[col]
        scale = inverse(rows[col][col])
        rows[col] = [mul(scale, v) for v in rows[col]]
        for r in range(size):
            factor = rows[r][col]
            if r != col and factor:
                rows[r] = [v ^ mul(factor, w) for v, w in zip(rows[r], rows[col], strict=True)]
    return tuple(tuple(row[size:]) for row in rows)


def _matmul(a: Matrix, b: Matrix) -> Matrix:
    return tuple(
        tuple(_dot(row, tuple(b[i][j] for i in range(len(b)))) for j in range(len(b[0])))
        for row in a
    )


def _dot(u: Sequence[int], v: Sequence[int]) -> int:
    out = 0
    for x, y in zip(u, v, strict=True):
        out ^= mul(x, y)
    return out


@lru_cache(maxsize=64)
def encoding_matrix(k: int, n: int) -> Matrix:
    """zfec's systematic n-by-k encoding matrix (``fec_new`` in fec.c)."""
    first = (1,) + (0,) * (k - 1)  # the point 0: 0**0 is 1
    rest = (tuple(EXP[(row * col) % 255] for col in range(k)) for row in range(n - 1))
    vandermonde = (first, *rest)
    identity = tuple(tuple(int(i == j) for j in range(k)) for i in range(k))
    return identity + _matmul(vandermonde[k:], invert(vandermonde[:k]))


@lru_cache(maxsize=256)
def _decoding_matrix(k: int, n: int, shares: tuple[int, ...]) -> Matrix:
    matrix = encoding_matrix(k, n)
    return invert(tuple(matrix[s] for s in shares))


def _combine(coefficients: Sequence[int], blocks: Sequence[bytes], length: int) -> bytes:
    acc = 0
    for c, block in zip(coefficients, blocks, strict=True):
        if c:
            acc ^= int.from_bytes(block if c == 1 else block.translate(_mul_table(c)), "little")
    return acc.to_bytes(length, "little")


def encode(blocks: Sequence[bytes], k: int, n: int) -> list[bytes]:
    """The ``n - k`` parity blocks of ``k`` data blocks of one length."""
    matrix = encoding_matrix(k, n)
    length = len(blocks[0])
    return [_combine(matrix[row], blocks, length) for row in range(k, n)]


def decode(shares: Sequence[tuple[int, bytes]], k: int, n: int) -> list[bytes]:
    """The ``k`` data blocks from exactly ``k`` (share number, block) pairs, numbers
    distinct and sorted."""
    numbers = tuple(s for s, _ in shares)
    blocks = [b for _, b in shares]
    held = dict(shares)
    matrix = _decoding_matrix(k, n, numbers)
    length = len(blocks[0])
    return [held[r] if r in held else _combine(matrix[r], blocks, length) for r in range(k)]
