"""S/Kademlia's static crypto puzzle on node ids: an id costs work to make, nothing to check.

Baumgart and Mies, "S/Kademlia" (ICPADS 2007), section 4.1: a node id is ``H(K_pub)``, and
it is valid with difficulty ``c1`` if ``H(H(K_pub))`` starts with ``c1`` zero bits, so
each new id costs about ``2**c1`` key generations while checking one costs a hash.

In zMesh the *public key material* is what :func:`zmesh.identity.node_id_of` hashes: the
label ``zmesh-node-id-v1``, the X-Wing identity public key and the hybrid signing public
key (Ed25519 then ML-DSA-44).  So ``H(K_pub)`` is the node id itself, unchanged, and the
puzzle is a check layered on top: ``SHA-256(node_id)`` must start with ``difficulty`` zero
bits.  Ids made before the puzzle keep their meaning; whether a table or a path accepts an
id that fails it is the caller's policy (docs/decisions.md, D39).

:func:`solve` searches the cheapest honest way: it draws the X-Wing and ML-DSA seeds once
and then only new Ed25519 seeds (about 50 µs a key on CPython), since any change of key
changes the id.  An attacker can do better (successive Ed25519 keys by point addition,
and SHA-256 midstates over the fixed prefix), so the cost floor per attempt is about the
hashes alone; ``bench/dht_puzzle.py`` prints both, and D39 sets the difficulty from the
floor.
"""

from functools import lru_cache

from ..crypto import backend, sha256, signing, xwing
from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..identity import Identity, node_id_of
from ..rng import Rng

MAX_DIFFICULTY = 64
CHECK_CACHE = 1 << 15  # ids whose puzzle check is remembered (bounded, process-wide)
ATTEMPTS_FACTOR = 64  # solve gives up after this many times the expected attempts


def puzzle_hash(node_id: bytes) -> bytes:
    """``H(H(K_pub))``: SHA-256 of the node id (which is ``H(K_pub)``)."""
    return sha256(node_id)


def leading_zero_bits(digest: bytes) -> int:
    """The number of zero bits ``digest`` starts with."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def satisfies(node_id: bytes, difficulty: int) -> bool:
    """True if ``node_id`` solves the puzzle at ``difficulty`` (0 accepts every id)."""
    return difficulty <= 0 or _zero_bits(node_id) >= difficulty


@lru_cache(maxsize=CHECK_CACHE)
def _zero_bits(node_id: bytes) -> int:
    """The puzzle's work in ``node_id``, remembered (a node checks the same ids again and
    again: every answer names contacts it already knows)."""
    return leading_zero_bits(puzzle_hash(node_id))


def check(node_id: bytes, difficulty: int) -> None:
    """Raise RemoteProtocolError (AUTH) if ``node_id`` does not solve the puzzle."""
    if not satisfies(node_id, difficulty):
        raise RemoteProtocolError(
            f"node id fails the puzzle at difficulty {difficulty}", CloseCode.AUTH
        )


def solve(rng: Rng, difficulty: int, *, max_attempts: int | None = None) -> tuple[Identity, int]:
    """Find an identity whose node id solves the puzzle at ``difficulty``; returns it and
    the attempts it took.  About ``2**difficulty`` Ed25519 key generations.  A reproducible
    ``rng`` gives the same identity (with deterministic signing, as Identity.generate).

    Raises LocalProtocolError for a difficulty out of [0, 64] or if ``max_attempts``
    (default 64 times the expected count) pass without a solution.
    """
    if not 0 <= difficulty <= MAX_DIFFICULTY:
        raise LocalProtocolError(f"puzzle difficulty is between 0 and {MAX_DIFFICULTY}")
    limit = max_attempts if max_attempts is not None else ATTEMPTS_FACTOR << difficulty
    kem_seed = rng.bytes(xwing.SEED_SIZE)
    kem_pk = xwing.PrivateKey(kem_seed).public
    mldsa_seed = rng.bytes(signing.SEED_SIZE - 32)
    mldsa_pk = backend.mldsa44_public(mldsa_seed)
    for attempt in range(1, limit + 1):
        ed_seed = rng.bytes(32)
        node_id = node_id_of(kem_pk, backend.ed25519_public(ed_seed) + mldsa_pk)
        if satisfies(node_id, difficulty):
            identity = Identity(kem_seed, ed_seed + mldsa_seed, deterministic=rng.reproducible)
            return identity, attempt
    raise LocalProtocolError(f"no id solved difficulty {difficulty} in {limit} attempts")
