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


def _xor32(a: bytes, b: int) -> bytes:
    return (int.from_bytes(a, "little") ^ b).to_bytes(HALF, "little")


def _xor_into32(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(HALF, "little")


def _h(key: bytes, tweak: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=HALF, salt=tweak[:16]).digest()


def encrypt(key: LionessKey, tweak: bytes, block: bytes) -> bytes:
    """Encrypt ``block`` (at least 33 bytes) under ``key`` and a 16-byte ``tweak``."""
    if len(block) < MIN_BLOCK:
        raise ValueError("LIONESS block too short")
    nonce1, nonce2 = tweak[:8] + b"\x01\x00\x00\x00", tweak[:8] + b"\x03\x00\x00\x00"
    left, right = block[:HALF], block[HALF:]
    right = backend.chacha20_xor(_xor32(left, key.k1), nonce1, right)
    left = _xor_into32(left, _h(key.k2, tweak, right))
    right = backend.chacha20_xor(_xor32(left, key.k3), nonce2, right)
    left = _xor_into32(left, _h(key.k4, tweak, right))
    return left + right


def decrypt(key: LionessKey, tweak: bytes, block: bytes) -> bytes:
    """Invert :func:`encrypt`."""
    if len(block) < MIN_BLOCK:
        raise ValueError("LIONESS block too short")
    nonce1, nonce2 = tweak[:8] + b"\x01\x00\x00\x00", tweak[:8] + b"\x03\x00\x00\x00"
    left, right = block[:HALF], block[HALF:]
    left = _xor_into32(left, _h(key.k4, tweak, right))
    right = backend.chacha20_xor(_xor32(left, key.k3), nonce2, right)
    left = _xor_into32(left, _h(key.k2, tweak, right))
    right = backend.chacha20_xor(_xor32(left, key.k1), nonce1, right)
    return left + right


def make_tweak(counter: int, direction: int) -> bytes:
    """A 16-byte tweak: the 8-byte cell counter, the direction, zero padding."""
    return counter.to_bytes(8, "little") + bytes([direction]) + bytes(7)
