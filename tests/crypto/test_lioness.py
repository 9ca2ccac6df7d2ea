"""LIONESS (zmesh/crypto/lioness.py): known answers, a byte-level reference, round trips,
wrong keys and tweaks, and diffusion of a single flipped bit.

Runs on both backends (ChaCha20 is the backend's; BLAKE2b is hashlib's), so the known
answers below hold on CPython and in Pyodide alike.
"""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.crypto import backend, lioness

KEY = bytes(range(128))

# (tweak counter, direction, plaintext, ciphertext) under KEY
KNOWN_ANSWERS = [
    (
        5,
        1,
        bytes(range(64)),
        "c4a31e50f1253912d7d9ec3a86c65ee7eeb0e9cce2d3bc9dfb74f038f54e2e5e"
        "37bc24ffe473f102c6b3313eb03e6d03cb1a33e06be6a0e31de229ca3bc8f3de",
    ),
    (0, 0, bytes(33), "d7ca00da80098e8b46f88cf023ef912a6fc21985a3e07a919360cbaf884b1f7e3c"),
]  # computed with pycryptodome's ChaCha20 from block 1 (D40), not with zmesh's backend

keys = st.binary(min_size=lioness.KEY_SIZE, max_size=lioness.KEY_SIZE)
tweaks = st.builds(lioness.make_tweak, st.integers(0, 2**64 - 1), st.integers(0, 1))
blocks = st.binary(min_size=lioness.MIN_BLOCK, max_size=600)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def reference_encrypt(key: bytes, tweak: bytes, block: bytes) -> bytes:
    """LIONESS as Anderson and Biham write it, on bytes: R ^= S(L ^ K1); L ^= H_K2(R);
    R ^= S(L ^ K3); L ^= H_K4(R), with the tweak in the nonce and the salt."""
    k1, k2, k3, k4 = (key[i : i + 32] for i in range(0, 128, 32))
    left, right = block[:32], block[32:]

    def s(round_key: bytes, nonce_tail: bytes, data: bytes) -> bytes:
        return backend.chacha20_xor(_xor(left, round_key), tweak[:8] + nonce_tail, data)

    def hsh(round_key: bytes, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=round_key, digest_size=32, salt=tweak[:16]).digest()

    right = s(k1, b"\x01\x00\x00\x00", right)
    left = _xor(left, hsh(k2, right))
    right = s(k3, b"\x03\x00\x00\x00", right)
    left = _xor(left, hsh(k4, right))
    return left + right


def _bits_differ(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("counter", "direction", "plaintext", "ciphertext"), KNOWN_ANSWERS)
def test_known_answers(counter: int, direction: int, plaintext: bytes, ciphertext: str) -> None:
    key = lioness.LionessKey.from_bytes(KEY)
    tweak = lioness.make_tweak(counter, direction)
    assert lioness.encrypt(key, tweak, plaintext).hex() == ciphertext
    assert lioness.decrypt(key, tweak, bytes.fromhex(ciphertext)) == plaintext
    assert reference_encrypt(KEY, tweak, plaintext).hex() == ciphertext


@settings(max_examples=40, deadline=None)
@given(key=keys, tweak=tweaks, block=blocks)
def test_round_trip_and_reference(key: bytes, tweak: bytes, block: bytes) -> None:
    lkey = lioness.LionessKey.from_bytes(key)
    ciphertext = lioness.encrypt(lkey, tweak, block)
    assert len(ciphertext) == len(block)
    assert ciphertext == reference_encrypt(key, tweak, block)
    assert lioness.decrypt(lkey, tweak, ciphertext) == block


@settings(max_examples=20, deadline=None)
@given(key=keys, other=keys, tweak=tweaks, block=st.binary(min_size=64, max_size=300))
def test_wrong_key_or_tweak_gives_garbage(
    key: bytes, other: bytes, tweak: bytes, block: bytes
) -> None:
    lkey = lioness.LionessKey.from_bytes(key)
    ciphertext = lioness.encrypt(lkey, tweak, block)
    if other != key:
        assert lioness.decrypt(lioness.LionessKey.from_bytes(other), tweak, ciphertext) != block
    other_tweak = bytes([tweak[0] ^ 1]) + tweak[1:]
    assert lioness.decrypt(lkey, other_tweak, ciphertext) != block
    assert lioness.encrypt(lkey, other_tweak, block) != ciphertext


@settings(max_examples=20, deadline=None)
@given(key=keys, tweak=tweaks, block=st.binary(min_size=256, max_size=512), data=st.data())
def test_one_flipped_bit_garbles_every_part(
    key: bytes, tweak: bytes, block: bytes, data: st.DataObject
) -> None:
    """A strong PRP: one flipped bit, anywhere, in either direction, changes about half of
    all bits on the other side, in the left half and in the right part alike."""
    lkey = lioness.LionessKey.from_bytes(key)
    ciphertext = lioness.encrypt(lkey, tweak, block)
    bit = data.draw(st.integers(0, len(block) * 8 - 1))
    for source, transform, target in (
        (ciphertext, lambda b: lioness.decrypt(lkey, tweak, b), block),
        (block, lambda b: lioness.encrypt(lkey, tweak, b), ciphertext),
    ):
        flipped = bytearray(source)
        flipped[bit // 8] ^= 1 << (bit % 8)
        out = transform(bytes(flipped))
        for part in (slice(0, 32), slice(32, None)):
            n_bits = len(target[part]) * 8
            assert 0.3 * n_bits < _bits_differ(out[part], target[part]) < 0.7 * n_bits


def test_misuse_is_a_value_error() -> None:
    key = lioness.LionessKey.from_bytes(KEY)
    tweak = lioness.make_tweak(0, 0)
    for short in (b"", bytes(32)):
        with pytest.raises(ValueError):
            lioness.encrypt(key, tweak, short)
        with pytest.raises(ValueError):
            lioness.decrypt(key, tweak, short)
    for size in (0, 127, 129):
        with pytest.raises(ValueError):
            lioness.LionessKey.from_bytes(bytes(size))


def test_tweak_layout() -> None:
    tweak = lioness.make_tweak(0x0102030405060708, 1)
    assert tweak == bytes([8, 7, 6, 5, 4, 3, 2, 1, 1]) + bytes(7)
    assert len(lioness.make_tweak(0, 0)) == 16
