"""Hybrid signatures: Ed25519 (RFC 8032) and ML-DSA-44 (FIPS 204), both must verify.

A hybrid signature is the concatenation of both signatures over the same message.  The
ML-DSA context string domain-separates zMesh's uses.

A key made with ``deterministic=True`` signs ML-DSA in FIPS 204's deterministic variant, so
its signatures are a function of the key and the message on every runtime; otherwise the
backend may hedge (pyca does, noble does not).  Both kinds verify everywhere
(docs/decisions.md, D3).

Ed25519 verification follows one rule on every runtime (docs/decisions.md, D30): the public
key ``A`` and the signature's ``R`` must canonically encode points of prime order ``L``, and
``S`` must be below ``L``.  Within that domain the cofactorless check (OpenSSL, pyca) and the
cofactored one (noble) agree, so no signature verifies in one runtime only.
"""

from dataclasses import dataclass
from functools import lru_cache

from . import backend, edwards25519

ED25519_PK = 32
ED25519_SIG = 64
MLDSA44_PK = 1312
MLDSA44_SIG = 2420
PUBLIC_KEY_SIZE = ED25519_PK + MLDSA44_PK
SIGNATURE_SIZE = ED25519_SIG + MLDSA44_SIG
SEED_SIZE = 64
KEY_CHECK_CACHE = 4096  # public keys whose subgroup check is remembered


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A hybrid signing key from a 64-byte seed (32 for Ed25519, 32 for ML-DSA-44).

    ``deterministic`` selects FIPS 204's deterministic ML-DSA signing (reproducible runs).
    """

    seed: bytes
    public: bytes
    deterministic: bool = False

    @classmethod
    def from_seed(cls, seed: bytes, *, deterministic: bool = False) -> "SigningKey":
        """Expand ``seed``; raises ValueError if it is not SEED_SIZE bytes."""
        if len(seed) != SEED_SIZE:
            raise ValueError(f"signing seeds are {SEED_SIZE} bytes")
        pk = backend.ed25519_public(seed[:32]) + backend.mldsa44_public(seed[32:])
        return cls(seed, pk, deterministic)

    def sign(self, message: bytes, context: bytes) -> bytes:
        """Ed25519 over ``context + message`` and ML-DSA-44 over ``message`` in ``context``.

        Raises ValueError for a context over 255 bytes.
        """
        mldsa_sign = (
            backend.mldsa44_sign_deterministic if self.deterministic else backend.mldsa44_sign
        )
        return backend.ed25519_sign(self.seed[:32], context + message) + mldsa_sign(
            self.seed[32:], message, context
        )

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(public={self.public[:8].hex()}…)"


@lru_cache(maxsize=KEY_CHECK_CACHE)
def _key_has_prime_order(public: bytes) -> bool:
    return edwards25519.has_prime_order(public)


def _ed25519_precheck(public: bytes, signature: bytes) -> bool:
    """The cheap half of the rule: sizes, ``S < L`` and the (cached) key check."""
    return (
        len(public) == ED25519_PK
        and len(signature) == ED25519_SIG
        and int.from_bytes(signature[32:], "little") < edwards25519.L
        and _key_has_prime_order(public)
    )


_IDENTITY = b"\x01" + bytes(31)  # the canonical encoding of the neutral point


def _r_has_prime_order(r: bytes) -> bool:
    """The rule's check of ``R``, once the backend has accepted with a prime-order key.

    A cofactorless backend (pyca) accepted only if ``R`` encodes exactly [S]B - [k]A, which
    lies in the prime-order subgroup because B and A do; so ``R`` has prime order unless it
    is the neutral point, and the pure-Python check (the cost of about ten verifications)
    is needed only on a cofactored backend (noble) (docs/decisions.md, D30)."""
    if backend.ED25519_COFACTORLESS:
        return r != _IDENTITY
    return edwards25519.has_prime_order(r)


def ed25519_verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 (RFC 8032) under zMesh's rule: the same verdict on every backend.

    False unless ``public`` is 32 bytes and ``signature`` 64, ``S < L``, ``A`` and ``R`` are
    canonical encodings of points of prime order ``L`` (no small-order component), and the
    backend verifies.  The key check is cached per key; the ``R`` check (pure Python, the
    cost of about ten Ed25519 verifications) runs only once the backend has accepted.
    """
    return (
        _ed25519_precheck(public, signature)
        and backend.ed25519_verify(public, signature, message)
        and _r_has_prime_order(signature[:32])
    )


def verify(public: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
    """True only if both the Ed25519 (under :func:`ed25519_verify`'s rule) and the
    ML-DSA-44 signatures verify; the costly ``R`` check runs last."""
    if len(public) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    ed_pk, ed_sig = public[:ED25519_PK], signature[:ED25519_SIG]
    return (
        _ed25519_precheck(ed_pk, ed_sig)
        and backend.ed25519_verify(ed_pk, ed_sig, context + message)
        and backend.mldsa44_verify(public[ED25519_PK:], signature[ED25519_SIG:], message, context)
        and _r_has_prime_order(ed_sig[:32])
    )
