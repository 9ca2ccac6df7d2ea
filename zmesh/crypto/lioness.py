"""LIONESS, a length-preserving wide-block cipher (Anderson and Biham, 1996).

Built, as Sphinx encrypts its payloads, from ChaCha20 (the stream cipher S) and keyed
BLAKE2b (the hash H).  The block is split into a 32-byte left half ``L`` and the rest
``R``; four unbalanced Feistel rounds make a strong pseudorandom permutation, so changing
any bit of a ciphertext garbles the whole plaintext.

A 12-byte tweak (a per-circuit, per-direction counter) feeds the ChaCha20 nonce and the
BLAKE2b salt, so the same plaintext never gives the same ciphertext twice on a circuit.
"""

import hashlib
from dataclasses import dataclass

from . import backend

KEY_SIZE = 128
HALF = 32
MIN_BLOCK = HALF + 1
_ROUND1 = b"\x01\x00\x00\x00"  # the ChaCha20 nonce is the tweak's first 8 bytes, then this
_ROUND3 = b"\x03\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class LionessKey:
    """The four 32-byte round keys of one LIONESS instance."""

    k1: int
    k2: bytes
    k3: int
    k4: bytes

    @classmethod
    def from_bytes(cls, key: bytes) -> "LionessKey":
        if len(key) != KEY_SIZE:
            raise ValueError(f"LIONESS keys are {KEY_SIZE} bytes")
        return cls(
            int.from_bytes(key[0:32], "little"),
            key[32:64],
            int.from_bytes(key[64:96], "little"),
            key[96:128],
        )


# The relays' per-cell hot path: the left half stays an integer across the four rounds, so
# each XOR with a round key or a hash is one integer operation.


def _s(round_key: int, left: int, nonce: bytes, right: bytes) -> bytes:
    """ChaCha20 keyed with ``left ^ round_key`` over ``right``."""
    return backend.chacha20_xor((left ^ round_key).to_bytes(HALF, "little"), nonce, right)


def _h(key: bytes, salt: bytes, right: bytes) -> int:
    """Keyed BLAKE2b of ``right``, salted with the tweak, as an integer."""
    digest = hashlib.blake2b(right, key=key, digest_size=HALF, salt=salt).digest()
    return int.from_bytes(digest, "little")


def encrypt(key: LionessKey, tweak: bytes, block: bytes) -> bytes:
    """Encrypt ``block`` (at least 33 bytes) under ``key`` and a 16-byte ``tweak``."""
    if len(block) < MIN_BLOCK:
        raise ValueError("LIONESS block too short")
    counter, salt = tweak[:8], tweak[:16]
    left, right = int.from_bytes(block[:HALF], "little"), block[HALF:]
    right = _s(key.k1, left, counter + _ROUND1, right)
    left ^= _h(key.k2, salt, right)
    right = _s(key.k3, left, counter + _ROUND3, right)
    left ^= _h(key.k4, salt, right)
    return left.to_bytes(HALF, "little") + right


def decrypt(key: LionessKey, tweak: bytes, block: bytes) -> bytes:
    """Invert :func:`encrypt`."""
    if len(block) < MIN_BLOCK:
        raise ValueError("LIONESS block too short")
    counter, salt = tweak[:8], tweak[:16]
    left, right = int.from_bytes(block[:HALF], "little"), block[HALF:]
    left ^= _h(key.k4, salt, right)
    right = _s(key.k3, left, counter + _ROUND3, right)
    left ^= _h(key.k2, salt, right)
    right = _s(key.k1, left, counter + _ROUND1, right)
    return left.to_bytes(HALF, "little") + right


def make_tweak(counter: int, direction: int) -> bytes:
    """A 16-byte tweak: the 8-byte cell counter, the direction, zero padding."""
    return counter.to_bytes(8, "little") + bytes([direction]) + bytes(7)
