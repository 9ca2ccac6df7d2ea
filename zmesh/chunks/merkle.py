"""A Merkle tree with the hashing and proofs of RFC 6962 section 2.1 (RFC 9162 section 2.1).

Leaves and interior nodes are hashed with different one-byte prefixes (0x00 and 0x01), so
no interior node can pass for a leaf (the second-preimage trick against plain Merkle
trees).  A tree of ``n`` leaves splits at the largest power of two below ``n``
(RFC 9162 section 2.1.1); the tree is built level by level, an odd last node rising
unhashed, which gives the same tree.  Inclusion proofs are verified with the algorithm of
RFC 9162 section 2.1.3.2.
"""

import hashlib
from collections.abc import Sequence

from .errors import ProofError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
MAX_PROOF_LENGTH = 64  # a tree has fewer than 2**64 leaves


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data), the hash of a leaf (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right), the hash of an interior node."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def empty_root() -> bytes:
    """The root of the tree with no leaves: SHA-256 of the empty string."""
    return hashlib.sha256(b"").digest()


class MerkleTree:
    """Every level of the tree over a list of leaf hashes, to answer inclusion proofs."""

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        """Build the tree; raises ValueError if a leaf hash is not 32 bytes."""
        if any(len(h) != HASH_SIZE for h in leaf_hashes):
            raise ValueError("leaf hashes are 32 bytes")
        levels = [list(leaf_hashes)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                above.append(below[-1])
            levels.append(above)
        self._levels = levels

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        return self._levels[-1][0] if self.size else empty_root()

    def proof(self, index: int) -> list[bytes]:
        """The audit path of leaf ``index``, bottom up (RFC 9162 section 2.1.3.1).

        Raises IndexError for an index outside the tree."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} is outside a tree of {self.size}")
        path = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index >>= 1
        return path


def verify_inclusion(
    root: bytes, size: int, index: int, leaf: bytes, path: Sequence[bytes]
) -> None:
    """Check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` leaves
    whose root is ``root``, by the algorithm of RFC 9162 section 2.1.3.2.

    Raises ProofError if it is not (a wrong index, a path too long or too short, a hash
    that does not match)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is outside a tree of {size}")
    if len(path) > MAX_PROOF_LENGTH:
        raise ProofError(f"a proof of {len(path)} hashes is too long")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if len(p) != HASH_SIZE:
            raise ProofError("a proof hash is not 32 bytes")
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    if r != root:
        raise ProofError("the proof does not lead to the root")
