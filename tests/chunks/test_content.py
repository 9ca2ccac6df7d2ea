"""Cutting files into pieces, checking pieces and proofs, rebuilding (zmesh/chunks/content.py)."""

import hashlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.chunks import erasure
from zmesh.chunks.content import (
    EncodedContent,
    GroupProof,
    assemble,
    decode_group,
    decode_group_proof,
    encode_content,
    group_leaf,
    missing,
    piece_hash,
    verify_group_proof,
    verify_piece,
)
from zmesh.chunks.errors import ManifestError, NotEnoughPiecesError, ProofError
from zmesh.chunks.manifest import Layout, Manifest
from zmesh.chunks.merkle import MAX_PROOF_LENGTH, MerkleTree
from zmesh.rng import DeterministicRng

CS = 4096


def content(size: int, k: int = 3, n: int = 5) -> tuple[bytes, EncodedContent]:
    data = DeterministicRng(b"content", size.to_bytes(8, "big")).bytes(size)
    return data, encode_content(data, CS, k, n)


def proofs(enc: EncodedContent) -> dict[int, GroupProof]:
    return {g: enc.proof(g) for g in range(enc.manifest.layout.groups)}


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize(
    "size", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 3 * CS + 1, 7 * CS + 100, 9 * CS, 20 * CS + 3]
)
def test_round_trip_from_data_pieces_and_from_parity(size: int) -> None:
    data, enc = content(size)
    lay, m = enc.manifest.layout, enc.manifest
    assert len(enc.pieces) == lay.pieces
    assert [len(p) for p in enc.pieces] == [lay.piece_length(i) for i in range(lay.pieces)]
    everything = dict(enumerate(enc.pieces))
    for i, piece in everything.items():
        verify_piece(m, i, piece, enc.proof(lay.locate(i)[0]))
    assert assemble(m, everything, proofs(enc)) == data
    # drop the first two data chunks of every group (the most parity needed)
    fewest = {i: p for i, p in everything.items() if lay.locate(i)[1] not in (0, 1)}
    assert assemble(m, fewest, proofs(enc)) == data
    assert missing(lay, fewest) == []
    assert missing(lay, everything) == []
    assert missing(lay, {}) == list(range(lay.pieces))


def test_the_last_short_group_needs_only_its_own_chunks() -> None:
    _, enc = content(4 * CS)  # groups: 3 chunks, then 1 chunk + 2 parity
    lay = enc.manifest.layout
    last = lay.group_pieces(1)
    assert list(last) == [5, 6, 7]
    for one in last:  # any one piece of the last group rebuilds it
        assert missing(lay, {*range(5), one}) == []
        decode_group(enc.manifest, 1, {one: enc.pieces[one]}, enc.proof(1))
    assert missing(lay, set(range(4))) == [5, 6, 7]
    assert missing(lay, {0, 1, 5}) == [2, 3, 4]


def test_too_few_pieces_fail_clearly() -> None:
    _, enc = content(6 * CS)
    with pytest.raises(NotEnoughPiecesError, match="group 0 needs 3 pieces, 2 given"):
        decode_group(enc.manifest, 0, {0: enc.pieces[0], 4: enc.pieces[4]}, enc.proof(0))
    with pytest.raises(ProofError, match="bytes, not"):
        decode_group(
            enc.manifest,
            0,
            {0: enc.pieces[0] + b"x", 1: enc.pieces[1], 2: enc.pieces[2]},
            enc.proof(0),
        )
    with pytest.raises(NotEnoughPiecesError, match="no proof for group 1"):
        assemble(enc.manifest, dict(enumerate(enc.pieces)), {0: enc.proof(0)})


def test_a_flipped_bit_in_a_piece_is_rejected() -> None:
    _, enc = content(7 * CS + 100)
    m, lay = enc.manifest, enc.manifest.layout
    for i, piece in enumerate(enc.pieces):
        proof = enc.proof(lay.locate(i)[0])
        for bit in (0, 8 * len(piece) - 1, 12345):
            with pytest.raises(ProofError, match="does not match its hash"):
                verify_piece(m, i, flip(piece, bit), proof)


def test_a_flipped_bit_in_a_proof_is_rejected() -> None:
    _, enc = content(20 * CS + 3)
    m = enc.manifest
    proof = enc.proof(2)
    index = m.layout.group_pieces(2)[1]
    for h in range(len(proof.hashes)):
        bad = GroupProof(
            (*proof.hashes[:h], flip(proof.hashes[h], 77), *proof.hashes[h + 1 :]), proof.path
        )
        with pytest.raises(ProofError):
            verify_piece(m, index, enc.pieces[index], bad)
    for h in range(len(proof.path)):
        bad = GroupProof(
            proof.hashes, (*proof.path[:h], flip(proof.path[h], 3), *proof.path[h + 1 :])
        )
        with pytest.raises(ProofError, match="root"):
            verify_piece(m, index, enc.pieces[index], bad)
    # the same proof with a bit flipped anywhere in its encoding
    wire = proof.encode()
    for bit in range(0, 8 * len(wire), 61):
        try:
            forged = decode_group_proof(flip(wire, bit))
        except ProofError:
            continue
        with pytest.raises(ProofError):
            verify_piece(m, index, enc.pieces[index], forged)


def test_pieces_with_wrong_length_index_or_proof_are_rejected() -> None:
    _, enc = content(7 * CS + 100)
    m = enc.manifest
    with pytest.raises(ProofError, match="bytes, not"):
        verify_piece(m, 0, enc.pieces[0] + b"\0", enc.proof(0))
    with pytest.raises(ProofError, match="bytes, not"):
        verify_piece(m, 7, enc.pieces[7] + b"\0", enc.proof(1))  # the short last chunk, padded
    with pytest.raises(ProofError):
        verify_piece(m, 1, enc.pieces[0], enc.proof(0))  # right piece, wrong index
    with pytest.raises(ProofError):
        verify_piece(m, 0, enc.pieces[0], enc.proof(1))  # another group's proof
    with pytest.raises(ManifestError, match="outside"):
        verify_piece(m, m.layout.pieces, b"", enc.proof(0))
    with pytest.raises(ProofError, match="has 5 pieces, the proof 4"):
        verify_group_proof(m, 0, GroupProof(enc.proof(0).hashes[:4], enc.proof(0).path))


def test_pieces_of_another_content_are_rejected() -> None:
    _, enc = content(6 * CS)
    _, other = content(6 * CS + 1)
    with pytest.raises(ProofError):
        verify_piece(enc.manifest, 0, other.pieces[0], other.proof(0))


def test_parity_inconsistent_with_the_data_is_caught_on_rebuild() -> None:
    """A sharer commits to honest data chunks and garbage parity: every piece verifies on
    arrival, but a chunk rebuilt from that parity does not match its committed hash."""
    data, honest = content(6 * CS)
    lay = honest.manifest.layout
    pieces = list(honest.pieces)
    for g in range(lay.groups):
        for index in lay.group_pieces(g)[lay.k :]:
            pieces[index] = flip(pieces[index], 5)
    group_hashes = tuple(
        tuple(piece_hash(pieces[i]) for i in lay.group_pieces(g)) for g in range(lay.groups)
    )
    tree = MerkleTree([group_leaf(h) for h in group_hashes])
    liar = EncodedContent(Manifest(lay, tree.root), tuple(pieces), group_hashes, tree)
    for i, piece in enumerate(liar.pieces):
        verify_piece(liar.manifest, i, piece, liar.proof(lay.locate(i)[0]))
    assert (
        decode_group(liar.manifest, 0, {0: pieces[0], 1: pieces[1], 2: pieces[2]}, liar.proof(0))
        == data[: 3 * CS]
    )
    with pytest.raises(ProofError, match="rebuilt from parity"):
        decode_group(liar.manifest, 0, {0: pieces[0], 3: pieces[3], 4: pieces[4]}, liar.proof(0))


def test_group_proof_round_trip_split_and_trailing() -> None:
    _, enc = content(20 * CS + 3)
    proof = enc.proof(3)
    wire = proof.encode()
    assert len(wire) == 1 + 32 * len(proof.hashes) + 1 + 32 * len(proof.path)
    assert decode_group_proof(wire) == proof
    for cut in range(len(wire)):
        with pytest.raises(ProofError):
            decode_group_proof(wire[:cut])
    with pytest.raises(ProofError, match="trailing"):
        decode_group_proof(wire + b"\0")


def test_group_proof_bounds_are_enforced() -> None:
    with pytest.raises(ProofError, match="33 piece hashes exceeds 32"):
        decode_group_proof(bytes([33]) + bytes(33 * 32) + b"\0")
    with pytest.raises(ProofError, match="exceeds 64"):
        decode_group_proof(b"\0" + bytes([MAX_PROOF_LENGTH + 1]) + bytes(65 * 32))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
@example(b"")
@example(b"\x01" + bytes(32) + b"\x00")
def test_fuzz_group_proof_parses_or_raises_proof_error(wire: bytes) -> None:
    try:
        proof = decode_group_proof(wire)
    except ProofError:
        return
    assert proof.encode() == wire


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=9 * CS), st.integers(1, 4), st.integers(0, 3), st.data())
def test_fuzz_any_enough_pieces_rebuild_the_file(
    data: bytes, k: int, extra: int, draw: st.DataObject
) -> None:
    enc = encode_content(data, CS, k, k + extra)
    lay = enc.manifest.layout
    held: dict[int, bytes] = {}
    for g in range(lay.groups):
        indices = list(lay.group_pieces(g))
        chosen = draw.draw(st.permutations(indices))[: lay.group_data_count(g)]
        held.update({i: enc.pieces[i] for i in chosen})
    assert missing(lay, held) == []
    assert assemble(enc.manifest, held, proofs(enc)) == data
    assert enc.manifest.content_id == encode_content(data, CS, k, k + extra).manifest.content_id


def test_encoding_is_deterministic_and_names_the_content() -> None:
    data, enc = content(5 * CS)
    again = encode_content(data, CS, 3, 5)
    assert again.manifest == enc.manifest and again.pieces == enc.pieces
    assert encode_content(data, CS, 3, 6).manifest.content_id != enc.manifest.content_id
    assert encode_content(data[:-1], CS, 3, 5).manifest.content_id != enc.manifest.content_id
    assert piece_hash(b"x") == hashlib.sha256(b"\x02x").digest()
    assert erasure.BACKEND in {"zfec", "gf256"}


def test_default_parameters() -> None:
    enc = encode_content(b"hello")
    assert enc.manifest.layout == Layout(5, 256 * 1024, 8, 10)
    assert [len(p) for p in enc.pieces] == [5, 5, 5]
