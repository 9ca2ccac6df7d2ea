"""The browser crypto backend: the noble libraries, called through the Pyodide FFI.

Same API and semantics as :mod:`zmesh.crypto._pyca`.  The primitives live in
``web/src/crypto.js``, which build_wasm.py bundles into ``web/dist/zmesh-crypto.js``; that
script sets ``globalThis.zmeshCrypto`` and must run before Python imports ``zmesh``.

Every call crosses the FFI once each way.  The arguments are concatenated into one
Uint8Array that is reused per length (converting each ``bytes`` separately costs several
microseconds apiece), and ``zmeshCrypto.ffi.call`` splits it again at the given lengths.

Differences from pyca, none visible to the protocol:

* ML-DSA-44 signs in FIPS 204's deterministic variant (pyca hedges with OpenSSL's RNG), so
  a signature is a function of the key and the message (docs/decisions.md, D3), and
  ``mldsa44_sign_deterministic`` is ``mldsa44_sign``.
* Randomness for ``mlkem768_encaps_random`` and ``x25519_generate`` comes from
  ``crypto.getRandomValues``.
"""

from typing import Any

from ..errors import RemoteProtocolError

try:
    from js import Uint8Array, zmeshCrypto
    from pyodide.ffi import JsException, to_js
except ImportError as exc:  # pragma: no cover - only outside a prepared Pyodide
    raise ImportError(
        "zmesh's browser crypto backend needs globalThis.zmeshCrypto: load "
        "zmesh-crypto.js (from build_wasm.py's web/dist/) before importing zmesh"
    ) from exc

NAME = "noble"

_X25519_SIZE = 32
_MLKEM768_SEED = 64
_MLKEM768_DK = 2400
_SHARED_SECRET = 32

_call_js = zmeshCrypto.ffi.call
_random_bytes = zmeshCrypto.randomBytes

# Reusable argument buffers, one per total length.  Cells have a fixed size, so the hot
# paths hit a handful of lengths; odd sizes beyond the cap are converted one-off.
_MAX_BUFFERED = 64 * 1024
_MAX_BUFFERS = 128
_buffers: dict[int, Any] = {}


def _buffer(data: bytes) -> Any:
    size = len(data)
    buf = _buffers.get(size)
    if buf is None:
        if size > _MAX_BUFFERED:
            return to_js(data)
        if len(_buffers) >= _MAX_BUFFERS:
            _buffers.clear()
        buf = _buffers[size] = Uint8Array.new(size)
    buf.assign(data)
    return buf


def _error(exc: Any) -> Exception:
    """The Python exception _pyca would raise for a JavaScript error from crypto.js."""
    name = str(getattr(exc, "name", ""))
    message = str(getattr(exc, "message", exc)).removeprefix("zmesh: ")
    if name == "RemoteProtocolError":
        return RemoteProtocolError(message)
    if name in {"RangeError", "TypeError"}:
        return ValueError(message)
    return RuntimeError(f"zmesh-crypto.js: {name}: {message}")


def _call(name: str, *parts: bytes) -> Any:
    """Call ``zmeshCrypto[name](*parts)`` with one buffer crossing the FFI."""
    try:
        return _call_js(name, _buffer(b"".join(parts)), *[len(p) for p in parts[:-1]])
    except JsException as exc:
        raise _error(exc) from None


def _bytes(name: str, *parts: bytes) -> bytes:
    out: bytes = _call(name, *parts).to_bytes()
    return out


def _bool(name: str, *parts: bytes) -> bool:
    return _call(name, *parts) is True


def chacha20_xor(key: bytes, nonce: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the ChaCha20 keystream from block counter 1 (RFC 8439, 12-byte
    nonce), as RFC 8439's AEAD encrypts (D40)."""
    return _bytes("chacha20Xor", key, nonce, data)


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """ChaCha20-Poly1305 seal (RFC 8439)."""
    return _bytes("aeadSeal", key, nonce, plaintext, ad)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """ChaCha20-Poly1305 open; raises RemoteProtocolError on a bad tag."""
    return _bytes("aeadOpen", key, nonce, ciphertext, ad)


def x25519_public(sk: bytes) -> bytes:
    return _bytes("x25519Public", sk)


def x25519(sk: bytes, pk: bytes) -> bytes:
    """Raw X25519 (RFC 7748); raises RemoteProtocolError on a low-order point."""
    return _bytes("x25519Exchange", sk, pk)


class X25519Key:
    """An X25519 private key (noble decodes the scalar per call; nothing to cache)."""

    __slots__ = ("_sk",)

    def __init__(self, sk: bytes) -> None:
        if len(sk) != _X25519_SIZE:
            raise ValueError("An X25519 private key is 32 bytes long")
        self._sk = bytes(sk)

    def exchange(self, pk: bytes) -> bytes:
        return _bytes("x25519Exchange", self._sk, pk)


class MLKEM768Key:
    """An ML-KEM-768 decapsulation key expanded from its 64-byte seed (d || z)."""

    __slots__ = ("_dk", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != _MLKEM768_SEED:
            raise ValueError("ML-KEM-768 seeds are 64 bytes long")
        keys = _bytes("mlkem768Keygen", seed)
        self._dk = keys[:_MLKEM768_DK]
        self.public = keys[_MLKEM768_DK:]

    def decaps(self, ct: bytes) -> bytes:
        """FIPS 203 ML-KEM.Decaps; implicit rejection, so a wrong ct gives a random key."""
        return _bytes("mlkem768Decaps", self._dk, ct)


def mlkem768_encaps_random(ek: bytes) -> tuple[bytes, bytes]:
    """FIPS 203 ML-KEM.Encaps with the platform's randomness: (shared key, ciphertext).

    Raises RemoteProtocolError on an encapsulation key of the wrong length or one that
    fails the modulus check (FIPS 203, section 7.2).
    """
    out = _bytes("mlkem768EncapsRandom", ek)
    return out[:_SHARED_SECRET], out[_SHARED_SECRET:]


def x25519_generate() -> bytes:
    """A fresh X25519 private key from crypto.getRandomValues."""
    out: bytes = _random_bytes(_X25519_SIZE).to_bytes()
    return out


def ed25519_public(seed: bytes) -> bytes:
    return _bytes("ed25519Public", seed)


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    return _bytes("ed25519Sign", seed, message)


#: noble (``zip215: false``) checks [8][S]B = [8]R + [8][k]A: a small-order part of R passes
ED25519_COFACTORLESS = False


def ed25519_verify(pk: bytes, signature: bytes, message: bytes) -> bool:
    return _bool("ed25519Verify", pk, signature, message)


def mldsa44_public(seed: bytes) -> bytes:
    return _bytes("mldsa44Public", seed)


def mldsa44_sign(seed: bytes, message: bytes, context: bytes) -> bytes:
    return _bytes("mldsa44Sign", seed, message, context)


def mldsa44_sign_deterministic(seed: bytes, message: bytes, context: bytes) -> bytes:
    """FIPS 204 ML-DSA.Sign with ``rnd = {0}^32``; noble's ``mldsa44_sign`` already is."""
    return mldsa44_sign(seed, message, context)


def mldsa44_verify(pk: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
    return _bool("mldsa44Verify", pk, signature, message, context)
