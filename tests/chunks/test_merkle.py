"""The RFC 6962 Merkle tree and inclusion proofs (zmesh/chunks/merkle.py)."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.chunks.errors import ProofError
from zmesh.chunks.merkle import (
    MAX_PROOF_LENGTH,
    MerkleTree,
    empty_root,
    leaf_hash,
    node_hash,
    verify_inclusion,
)


def mth(leaves: list[bytes]) -> bytes:
    """MTH of RFC 9162 section 2.1.1, recursively, over leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 section 2.1.3.1, recursively."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"ab") == hashlib.sha256(b"\x00ab").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    # an interior node's input, offered as a leaf, hashes differently
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert leaf_hash(left + right) != node_hash(left, right)


def test_rfc6962_test_vector_root() -> None:
    # the eight-leaf tree of certificate-transparency-go's merkle tests (RFC 6962 inputs)
    inputs = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    tree = MerkleTree([leaf_hash(bytes.fromhex(x)) for x in inputs])
    assert tree.root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert MerkleTree([]).root == empty_root() == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", [*range(1, 18), 31, 32, 33, 100])
def test_root_and_proofs_match_the_recursive_definition(n: int) -> None:
    hashes = leaves(n)
    tree = MerkleTree(hashes)
    assert tree.size == n
    assert tree.root == mth(hashes)
    for m in range(n):
        proof = tree.proof(m)
        assert proof == path(m, hashes)
        verify_inclusion(tree.root, n, m, hashes[m], proof)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_every_proof_verifies_and_nothing_else_does(n: int, data: st.DataObject) -> None:
    hashes = leaves(n)
    tree = MerkleTree(hashes)
    m = data.draw(st.integers(0, n - 1))
    proof = tree.proof(m)
    verify_inclusion(tree.root, n, m, hashes[m], proof)
    other = data.draw(st.integers(0, n - 1))
    if other != m:
        with pytest.raises(ProofError):
            verify_inclusion(tree.root, n, other, hashes[m], proof)
    # the tree size is authenticated (by the manifest); a wrong one with a path of another
    # depth is rejected (RFC 9162 verification only sees hashes, so a node can pose as a
    # leaf of a smaller tree; the size must come from a trusted place)
    for size in sorted({n - 1, n + 1, 2 * n}):
        if size > m and len(path(m, leaves(size))) != len(proof):
            with pytest.raises(ProofError):
                verify_inclusion(tree.root, size, m, hashes[m], proof)


def test_a_flipped_bit_in_a_proof_or_leaf_is_rejected() -> None:
    hashes = leaves(13)
    tree = MerkleTree(hashes)
    proof = tree.proof(6)
    for i, p in enumerate(proof):
        for bit in (0, 77, 255):
            bad = bytearray(p)
            bad[bit // 8] ^= 1 << (bit % 8)
            forged = [*proof[:i], bytes(bad), *proof[i + 1 :]]
            with pytest.raises(ProofError, match="root"):
                verify_inclusion(tree.root, 13, 6, hashes[6], forged)
    bad_leaf = bytes([hashes[6][0] ^ 1]) + hashes[6][1:]
    with pytest.raises(ProofError):
        verify_inclusion(tree.root, 13, 6, bad_leaf, proof)


def test_malformed_proofs_are_clear_errors() -> None:
    hashes = leaves(8)
    tree = MerkleTree(hashes)
    proof = tree.proof(3)
    with pytest.raises(ProofError, match="outside"):
        verify_inclusion(tree.root, 8, 8, hashes[3], proof)
    with pytest.raises(ProofError, match="outside"):
        verify_inclusion(tree.root, 8, -1, hashes[3], proof)
    with pytest.raises(ProofError, match="shorter"):
        verify_inclusion(tree.root, 8, 3, hashes[3], proof[:-1])
    with pytest.raises(ProofError, match="longer"):
        verify_inclusion(tree.root, 8, 3, hashes[3], [*proof, proof[0]])
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(tree.root, 8, 3, hashes[3], [proof[0][:31], *proof[1:]])
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(tree.root, 8, 3, hashes[3], [proof[0]] * (MAX_PROOF_LENGTH + 1))
    with pytest.raises(IndexError):
        tree.proof(8)
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree([b"short"])


def test_single_leaf_tree_has_an_empty_proof() -> None:
    tree = MerkleTree([leaf_hash(b"x")])
    assert tree.root == leaf_hash(b"x")
    assert tree.proof(0) == []
    verify_inclusion(tree.root, 1, 0, leaf_hash(b"x"), [])
