"""Hybrid signatures: Ed25519 (RFC 8032) and ML-DSA-44 (FIPS 204), both must verify.

A hybrid signature is the concatenation of both signatures over the same message.  The
ML-DSA context string domain-separates zMesh's uses.

A key made with ``deterministic=True`` signs ML-DSA in FIPS 204's deterministic variant, so
its signatures are a function of the key and the message on every runtime; otherwise the
backend may hedge (pyca does, noble does not).  Both kinds verify everywhere
(docs/decisions.md, D3).
"""

from dataclasses import dataclass

from . import backend

ED25519_PK = 32
ED25519_SIG = 64
MLDSA44_PK = 1312
MLDSA44_SIG = 2420
PUBLIC_KEY_SIZE = ED25519_PK + MLDSA44_PK
SIGNATURE_SIZE = ED25519_SIG + MLDSA44_SIG
SEED_SIZE = 64


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


def verify(public: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
    """True only if both the Ed25519 and the ML-DSA-44 signatures verify."""
    if len(public) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    ok_ed = backend.ed25519_verify(public[:ED25519_PK], signature[:ED25519_SIG], context + message)
    ok_pq = backend.mldsa44_verify(public[ED25519_PK:], signature[ED25519_SIG:], message, context)
    return ok_ed and ok_pq
