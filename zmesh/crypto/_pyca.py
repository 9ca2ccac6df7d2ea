"""The CPython crypto backend, on pyca ``cryptography``.

Only raw primitives live here; every key is passed in as bytes derived from the injected
Rng, so nothing in this module draws randomness of its own except ML-DSA signing, which
pyca performs in FIPS 204's hedged mode (see docs/decisions.md, D3), and the two explicitly
randomized helpers ``mlkem768_encaps_random`` and ``x25519_generate`` (used only by
``xwing.encaps(pk, None)``, never by the deterministic core).

``mldsa44_sign_deterministic`` is FIPS 204's deterministic variant (``rnd`` is 32 zero
bytes, as noble signs in the browser).  pyca does not offer it, so it runs on the pure-Python
``dilithium-py``: about 25x slower, and used only by reproducible identities (simulations).
"""

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa, mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import RemoteProtocolError

NAME = "pyca"


def chacha20_xor(key: bytes, nonce: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the ChaCha20 keystream from block counter 1 (RFC 8439, 12-byte
    nonce), as RFC 8439's AEAD encrypts: it is pyca's ChaCha20-Poly1305 without its tag,
    about 2 µs a call cheaper than pyca's raw ChaCha20, whose setup dominates on cells
    (docs/decisions.md, D40)."""
    return ChaCha20Poly1305(key).encrypt(nonce, data, None)[:-16]


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """ChaCha20-Poly1305 seal (RFC 8439)."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """ChaCha20-Poly1305 open; raises RemoteProtocolError on a bad tag."""
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        raise RemoteProtocolError("AEAD authentication failed") from None


def x25519_public(sk: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()


def x25519(sk: bytes, pk: bytes) -> bytes:
    """Raw X25519 (RFC 7748); raises RemoteProtocolError on a low-order point."""
    try:
        return X25519PrivateKey.from_private_bytes(sk).exchange(
            X25519PublicKey.from_public_bytes(pk)
        )
    except ValueError:
        raise RemoteProtocolError("X25519 produced the all-zero value") from None


class X25519Key:
    """An expanded X25519 private key, kept to avoid re-parsing on hot paths."""

    __slots__ = ("_key",)

    def __init__(self, sk: bytes) -> None:
        self._key = X25519PrivateKey.from_private_bytes(sk)

    def exchange(self, pk: bytes) -> bytes:
        try:
            return self._key.exchange(X25519PublicKey.from_public_bytes(pk))
        except ValueError:
            raise RemoteProtocolError("X25519 produced the all-zero value") from None


class MLKEM768Key:
    """An ML-KEM-768 decapsulation key expanded from its 64-byte seed (d || z)."""

    __slots__ = ("_key", "public")

    def __init__(self, seed: bytes) -> None:
        self._key = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        self.public = self._key.public_key().public_bytes_raw()

    def decaps(self, ct: bytes) -> bytes:
        """FIPS 203 ML-KEM.Decaps; implicit rejection, so a wrong ct gives a random key."""
        try:
            return self._key.decapsulate(ct)
        except ValueError:
            raise RemoteProtocolError("malformed ML-KEM ciphertext") from None


def mlkem768_encaps_random(ek: bytes) -> tuple[bytes, bytes]:
    """FIPS 203 ML-KEM.Encaps with OpenSSL's randomness: (shared key, ciphertext).

    Raises RemoteProtocolError on an encapsulation key of the wrong length or one that
    fails the modulus check (FIPS 203, section 7.2).
    """
    try:
        public = mlkem.MLKEM768PublicKey.from_public_bytes(ek)
    except ValueError:
        raise RemoteProtocolError("malformed ML-KEM-768 encapsulation key") from None
    return public.encapsulate()


def x25519_generate() -> bytes:
    """A fresh X25519 private key from OpenSSL's randomness."""
    return X25519PrivateKey.generate().private_bytes_raw()


def ed25519_public(seed: bytes) -> bytes:
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(message)


#: OpenSSL checks [S]B = R + [k]A exactly and compares R's encoding byte for byte
ED25519_COFACTORLESS = True


def ed25519_verify(pk: bytes, signature: bytes, message: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(pk).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def mldsa44_public(seed: bytes) -> bytes:
    return mldsa.MLDSA44PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()


def mldsa44_sign(seed: bytes, message: bytes, context: bytes) -> bytes:
    return mldsa.MLDSA44PrivateKey.from_seed_bytes(seed).sign(message, context)


def mldsa44_sign_deterministic(seed: bytes, message: bytes, context: bytes) -> bytes:
    """FIPS 204 ML-DSA.Sign with ``rnd = {0}^32`` (section 3.4): a function of key and message.

    Raises ValueError for a seed that is not 32 bytes or a context over 255 bytes.
    """
    from dilithium_py.ml_dsa import ML_DSA_44  # noqa: PLC0415 (simulations only)

    _, secret = ML_DSA_44.key_derive(seed)
    signature: bytes = ML_DSA_44.sign(secret, message, context, deterministic=True)
    return signature


def mldsa44_verify(pk: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
    try:
        mldsa.MLDSA44PublicKey.from_public_bytes(pk).verify(signature, message, context)
    except (InvalidSignature, ValueError):
        return False
    return True
