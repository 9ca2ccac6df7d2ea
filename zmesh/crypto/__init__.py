"""Cryptographic primitives behind one small interface.

The backend is chosen by runtime: pyca ``cryptography`` on CPython, the noble libraries
through the FFI in Pyodide (``sys.platform == "emscripten"``; see ``_noble``).  Both expose
the same functions with the same semantics.  Hashes, keyed BLAKE2b and HKDF come from the
standard library, which every runtime has.  Nothing here draws randomness: callers pass
keys and nonces derived from an injected Rng.
"""

import hashlib
import hmac
import sys

if sys.platform == "emscripten":
    from . import _noble as backend
else:
    from . import _pyca as backend

__all__ = [
    "backend",
    "constant_time_equal",
    "hkdf",
    "hkdf_expand",
    "hkdf_extract",
    "keyed_hash",
    "sha256",
]

HASH_SIZE = 32


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def keyed_hash(key: bytes, data: bytes, size: int = 32) -> bytes:
    """Keyed BLAKE2b (RFC 7693) of ``data``; the key is at most 64 bytes."""
    return hashlib.blake2b(data, key=key, digest_size=size).digest()


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869, section 2.2)."""
    return hmac.new(salt or bytes(HASH_SIZE), ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand with SHA-256 (RFC 5869, section 2.3)."""
    if length > 255 * HASH_SIZE:
        raise ValueError("HKDF output too long")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869)."""
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
