"""Deterministic ML-KEM-768 encapsulation in pure Python (FIPS 203).

pyca's ``MLKEM768PublicKey.encapsulate()`` draws its message from OpenSSL's RNG, but the
sans-I/O core must be a function of an injected Rng.  This module implements
ML-KEM.Encaps_internal (FIPS 203, Algorithm 17) for ML-KEM-768 with the message ``m``
passed in, using only ``hashlib`` so that it runs on every runtime (including Pyodide).
Key generation and decapsulation stay with the backend, which is deterministic from the
seed.

Speed comes from working on whole polynomials: each NTT layer is a few list
comprehensions over precomputed index permutations, so no Python function is called per
coefficient.  Reduction modulo q is lazy where the values stay small.
"""

import hashlib
from collections.abc import Callable, Sequence
from operator import itemgetter

from ..errors import RemoteProtocolError

__all__ = ["CIPHERTEXT_SIZE", "ENCAPSULATION_KEY_SIZE", "MESSAGE_SIZE", "encaps"]

# ML-KEM-768 parameters (FIPS 203, section 8, table 2).
_Q = 3329
_N = 256
_K = 3
_DU = 10
_DV = 4
# eta1 = eta2 = 2: every PRF call produces 64 * 2 = 128 bytes.
_PRF_BYTES = 128

ENCAPSULATION_KEY_SIZE = 384 * _K + 32  # 1184
CIPHERTEXT_SIZE = 32 * (_DU * _K + _DV)  # 1088
MESSAGE_SIZE = 32
SHARED_KEY_SIZE = 32

_ZETA = 17
_N_INV = 3303  # 128^-1 mod q, the final scaling of NTT^-1 (Algorithm 10, line 14)
_HALF_Q = (_Q + 1) // 2  # Decompress_1(1) = round(q / 2) = 1665

# Bytes squeezed from SHAKE128 per SampleNTT attempt: 4 blocks give 448 candidates, of
# which about 364 are below q; fewer than 256 essentially never happens, and is handled.
_XOF_BYTES = 4 * 168


def _bitrev7(i: int) -> int:
    return int(f"{i:07b}"[::-1], 2)


_ZETAS = [pow(_ZETA, _bitrev7(i), _Q) for i in range(128)]  # zeta^BitRev7(i)
_GAMMAS = [pow(_ZETA, 2 * _bitrev7(i) + 1, _Q) for i in range(128)]  # Algorithm 11

_Gather = Callable[[Sequence[int]], tuple[int, ...]]
_Layer = tuple[_Gather, _Gather, list[int]]


def _layers(lengths: list[int], zeta_index: list[int], step: int) -> tuple[list[_Layer], list[int]]:
    """Precompute an NTT's layers as gathers from the previous layer's output layout.

    Every layer's output is stored as ``lo + hi`` (the two halves of its butterflies), so
    the next layer finds its inputs through one fixed permutation of that list.  Returns
    the layers and the final permutation back to natural coefficient order.
    """
    layers: list[_Layer] = []
    position = list(range(_N))  # position[natural index] in the current layout
    for length, first in zip(lengths, zeta_index, strict=True):
        lo_idx: list[int] = []
        hi_idx: list[int] = []
        zetas: list[int] = []
        for block, start in enumerate(range(0, _N, 2 * length)):
            zeta = _ZETAS[first + step * block]
            for j in range(start, start + length):
                lo_idx.append(j)
                hi_idx.append(j + length)
                zetas.append(zeta)
        layers.append(
            (
                itemgetter(*[position[j] for j in lo_idx]),
                itemgetter(*[position[j] for j in hi_idx]),
                zetas,
            )
        )
        for p, j in enumerate(lo_idx + hi_idx):
            position[j] = p
    return layers, position


# Algorithm 9 walks zeta indices 1..127 with len = 128, 64, ..., 2; Algorithm 10 walks
# 127..1 with len = 2, 4, ..., 128.
_FWD_LENGTHS = [128 >> i for i in range(7)]
_FWD, _FWD_OUT = _layers(_FWD_LENGTHS, [1 << i for i in range(7)], 1)
_INV, _INV_OUT = _layers(_FWD_LENGTHS[::-1], [(256 >> i) - 1 for i in range(1, 8)], -1)
_FWD_NATURAL: _Gather = itemgetter(*_FWD_OUT)
_INV_NATURAL: _Gather = itemgetter(*_INV_OUT)

# SamplePolyCBD_2 (Algorithm 8) on one byte: the low nibble gives the even coefficient,
# the high nibble the odd one; each nibble is (b0 + b1) - (b2 + b3).
_CBD_LO = [(b & 1) + (b >> 1 & 1) - (b >> 2 & 1) - (b >> 3 & 1) for b in range(256)]
_CBD_HI = [(b >> 4 & 1) + (b >> 5 & 1) - (b >> 6 & 1) - (b >> 7 & 1) for b in range(256)]


def _ntt(f: list[int]) -> list[int]:
    """NTT (Algorithm 9), output reduced to [0, q)."""
    q = _Q
    cat: list[int] = f
    for get_lo, get_hi, zetas in _FWD:
        lo = get_lo(cat)
        t = [z * h % q for z, h in zip(zetas, get_hi(cat), strict=True)]
        cat = [a + b for a, b in zip(lo, t, strict=True)] + [
            a - b for a, b in zip(lo, t, strict=True)
        ]
    return [x % q for x in _FWD_NATURAL(cat)]


def _inv_ntt_unscaled(f: list[int]) -> tuple[int, ...]:
    """NTT^-1 (Algorithm 10) without the final factor 128^-1 and final reduction."""
    q = _Q
    cat: list[int] = f
    for get_lo, get_hi, zetas in _INV:
        lo = get_lo(cat)
        hi = get_hi(cat)
        cat = [a + b for a, b in zip(lo, hi, strict=True)] + [
            z * (b - a) % q for z, a, b in zip(zetas, lo, hi, strict=True)
        ]
    result: tuple[int, ...] = _INV_NATURAL(cat)
    return result


def _decode12(data: bytes) -> list[int]:
    """ByteDecode_12 (Algorithm 6) without the reduction: values may reach 4095."""
    b0, b1, b2 = data[0::3], data[1::3], data[2::3]
    out = [0] * (2 * len(b0))
    out[0::2] = [x | (y & 15) << 8 for x, y in zip(b0, b1, strict=True)]
    out[1::2] = [y >> 4 | z << 4 for y, z in zip(b1, b2, strict=True)]
    return out


def _sample_ntt(seed: bytes) -> list[int]:
    """SampleNTT (Algorithm 7): rejection-sample 256 coefficients from SHAKE128(seed)."""
    size = _XOF_BYTES
    while True:
        candidates = _decode12(hashlib.shake_128(seed).digest(size))
        accepted = [d for d in candidates if d < _Q]
        if len(accepted) >= _N:
            return accepted[:_N]
        size += 3 * 168


def _cbd(seed: bytes, counter: int) -> list[int]:
    """SamplePolyCBD_2(PRF_2(seed, counter)) (Algorithm 8; PRF of section 4.1), signed."""
    data = hashlib.shake_256(seed + bytes([counter])).digest(_PRF_BYTES)
    out = [0] * _N
    out[0::2] = [_CBD_LO[b] for b in data]
    out[1::2] = [_CBD_HI[b] for b in data]
    return out


def _encode(values: list[int], bits: int) -> bytes:
    """ByteEncode_d (Algorithm 5) for d in {4, 10}."""
    if bits == 4:
        return bytes([a | b << 4 for a, b in zip(values[0::2], values[1::2], strict=True)])
    words = [
        a | b << 10 | c << 20 | d << 30
        for a, b, c, d in zip(values[0::4], values[1::4], values[2::4], values[3::4], strict=True)
    ]
    return b"".join([w.to_bytes(5, "little") for w in words])


def _parse_ek(ek: bytes) -> list[list[int]]:
    """Decode t-hat, applying the modulus check of FIPS 203, section 7.2."""
    if len(ek) != ENCAPSULATION_KEY_SIZE:
        raise RemoteProtocolError("ML-KEM-768 encapsulation key has the wrong length")
    t_hat = [_decode12(ek[384 * i : 384 * (i + 1)]) for i in range(_K)]
    if max(max(t) for t in t_hat) >= _Q:
        raise RemoteProtocolError("ML-KEM-768 encapsulation key fails the modulus check")
    return t_hat


def _encrypt(ek: bytes, t_hat: list[list[int]], m: bytes, r: bytes) -> bytes:
    """K-PKE.Encrypt (Algorithm 14) for ML-KEM-768."""
    q = _Q
    rho = ek[384 * _K :]
    # lines 9-16: y, e1, e2 from PRF counters 0..2, 3..5 and 6.
    r_hat = [_ntt(_cbd(r, n)) for n in range(_K)]
    e1 = [_cbd(r, _K + n) for n in range(_K)]
    e2 = _cbd(r, 2 * _K)
    # MultiplyNTTs (Algorithm 11) shares r-hat across every row: split it once, with
    # the odd halves pre-multiplied by their gamma.
    r_split = [
        (rh[0::2], rh[1::2], [b * g % q for b, g in zip(rh[1::2], _GAMMAS, strict=True)])
        for rh in r_hat
    ]

    def dot(rows: list[list[int]]) -> list[int]:
        c0 = [0] * 128
        c1 = [0] * 128
        for a, (b0, b1, b1g) in zip(rows, r_split, strict=True):
            a0, a1 = a[0::2], a[1::2]
            c0 = [
                s + x0 * y0 + x1 * y1g
                for s, x0, x1, y0, y1g in zip(c0, a0, a1, b0, b1g, strict=True)
            ]
            c1 = [
                s + x0 * y1 + x1 * y0 for s, x0, x1, y0, y1 in zip(c1, a0, a1, b0, b1, strict=True)
            ]
        out = [0] * _N
        out[0::2] = [x % q for x in c0]
        out[1::2] = [x % q for x in c1]
        return out

    # line 19: u = NTT^-1(A-hat^T o r-hat) + e1, where (A-hat^T)[i][j] = A-hat[j][i]
    # = SampleNTT(rho || i || j) (Algorithm 14, line 6).
    c1 = b""
    for i in range(_K):
        row = [_sample_ntt(rho + bytes([i, j])) for j in range(_K)]
        u = _inv_ntt_unscaled(dot(row))
        compressed = [
            (((a * _N_INV + e) % q << _DU) + 1664) // q & 1023
            for a, e in zip(u, e1[i], strict=True)
        ]
        c1 += _encode(compressed, _DU)
    # lines 20-21: v = NTT^-1(t-hat^T o r-hat) + e2 + Decompress_1(m).
    mu = [(byte >> k & 1) * _HALF_Q for byte in m for k in range(8)]
    v = _inv_ntt_unscaled(dot(t_hat))
    compressed = [
        (((a * _N_INV + e + h) % q << _DV) + 1664) // q & 15
        for a, e, h in zip(v, e2, mu, strict=True)
    ]
    return c1 + _encode(compressed, _DV)


def encaps(ek: bytes, m: bytes) -> tuple[bytes, bytes]:
    """ML-KEM-768.Encaps_internal(ek, m) (FIPS 203, Algorithm 17): return (K, c).

    ``ek`` comes from a peer: a wrong length or a coefficient >= q (the type and modulus
    check of section 7.2) raises :class:`RemoteProtocolError`.  ``m`` is the 32-byte
    message, which the caller draws from its Rng.
    """
    if len(m) != MESSAGE_SIZE:
        raise ValueError(f"the ML-KEM message is {MESSAGE_SIZE} bytes")
    t_hat = _parse_ek(ek)
    g = hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()
    shared_key, r = g[:32], g[32:]
    return shared_key, _encrypt(ek, t_hat, m, r)
