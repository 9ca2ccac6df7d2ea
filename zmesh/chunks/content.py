"""Content: cutting a file into verifiable pieces, checking pieces, rebuilding the file.

The Merkle tree of a file (:mod:`zmesh.chunks.merkle`) has one leaf per *group*: the
RFC 6962 leaf hash of the concatenated hashes of the group's pieces, each piece hash being
SHA-256(0x02 || piece) (a third prefix, so a piece hash is never a tree hash).  A
:class:`GroupProof` carries the group's piece hashes and the group's audit path: it proves
every piece of the group at once (``n`` hashes plus about log2(groups), ~0.2% of a
256 KiB chunk), and it gives a fetcher the hashes of the data chunks it rebuilds from
parity, so a sharer that committed to parity inconsistent with its data is caught
(:func:`decode_group` checks every chunk it returns).

A fetcher's loop: :func:`missing` says which pieces it still lacks, each arriving
``(index, bytes, proof)`` goes through :func:`verify_piece` (a bad one raises
:class:`~zmesh.chunks.errors.ProofError`: drop it, score the sender down), and once a
group has enough pieces :func:`decode_group` returns its bytes of the file.
"""

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from ..codec import Buffer, BufferReadError, push_uint
from . import erasure
from .errors import NotEnoughPiecesError, ProofError
from .manifest import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_K,
    DEFAULT_N,
    MAX_N,
    Layout,
    Manifest,
)
from .merkle import HASH_SIZE, MAX_PROOF_LENGTH, MerkleTree, leaf_hash, verify_inclusion

PIECE_PREFIX = b"\x02"


def piece_hash(piece: bytes) -> bytes:
    """SHA-256(0x02 || piece) (fed in two parts: a piece is not copied)."""
    h = hashlib.sha256(PIECE_PREFIX)
    h.update(piece)
    return h.digest()


def group_leaf(hashes: Sequence[bytes]) -> bytes:
    """The tree leaf of a group: the RFC 6962 leaf hash of its piece hashes, in order."""
    return leaf_hash(b"".join(hashes))


@dataclass(frozen=True, slots=True)
class GroupProof:
    """The piece hashes of one group and the audit path of its leaf."""

    hashes: tuple[bytes, ...]
    path: tuple[bytes, ...]

    def encode(self) -> bytes:
        return b"".join(
            (push_uint(len(self.hashes), 1), *self.hashes, push_uint(len(self.path), 1), *self.path)
        )


def decode_group_proof(data: bytes) -> GroupProof:
    """Parse a group proof; raises ProofError for more than ``MAX_N`` piece hashes, a
    path longer than ``MAX_PROOF_LENGTH``, truncation or trailing bytes."""
    buf = Buffer(bytes(data))
    try:
        count = buf.pull_uint8()
        if count > MAX_N:
            raise ProofError(f"a group proof of {count} piece hashes exceeds {MAX_N}")
        hashes = tuple(buf.pull_bytes(HASH_SIZE) for _ in range(count))
        depth = buf.pull_uint8()
        if depth > MAX_PROOF_LENGTH:
            raise ProofError(f"an audit path of {depth} hashes exceeds {MAX_PROOF_LENGTH}")
        path = tuple(buf.pull_bytes(HASH_SIZE) for _ in range(depth))
    except BufferReadError as exc:
        raise ProofError(f"bad group proof: {exc}") from None
    if not buf.eof():
        raise ProofError(f"bad group proof: {buf.remaining} trailing bytes")
    return GroupProof(hashes, path)


def verify_group_proof(manifest: Manifest, group: int, proof: GroupProof) -> None:
    """Check that ``proof`` holds the piece hashes of ``group`` under the manifest's root.

    Raises ProofError (or ManifestError for a group outside the file)."""
    expected = manifest.layout.group_piece_count(group)
    if len(proof.hashes) != expected:
        raise ProofError(f"group {group} has {expected} pieces, the proof {len(proof.hashes)}")
    leaf = group_leaf(proof.hashes)
    verify_inclusion(manifest.root, manifest.layout.groups, group, leaf, proof.path)


def verify_piece(manifest: Manifest, index: int, piece: bytes, proof: GroupProof) -> None:
    """Check piece ``index`` against the manifest: its length, its hash and the proof.

    Raises ProofError if any of them fails, ManifestError for an index outside the file."""
    layout = manifest.layout
    length = layout.piece_length(index)
    if len(piece) != length:
        raise ProofError(f"piece {index} is {length} bytes, not {len(piece)}")
    group, _ = layout.locate(index)
    verify_group_proof(manifest, group, proof)
    if piece_hash(piece) != proof.hashes[index - group * layout.n]:
        raise ProofError(f"piece {index} does not match its hash")


@dataclass(frozen=True, slots=True)
class EncodedContent:
    """A file cut into pieces, with its manifest and tree: what a sharer seeds."""

    manifest: Manifest
    pieces: tuple[bytes, ...]
    group_hashes: tuple[tuple[bytes, ...], ...]
    tree: MerkleTree

    def proof(self, group: int) -> GroupProof:
        """The proof of every piece of ``group``; raises IndexError outside the file."""
        return GroupProof(self.group_hashes[group], tuple(self.tree.proof(group)))


def encode_content(
    data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE, k: int = DEFAULT_K, n: int = DEFAULT_N
) -> EncodedContent:
    """Cut ``data`` into chunks, add each group's parity, hash, and build the manifest.

    Raises ManifestError if the parameters (or the size) break a bound."""
    layout = Layout(len(data), chunk_size, k, n)
    view = memoryview(data)
    pieces: list[bytes] = []
    group_hashes: list[tuple[bytes, ...]] = []
    for group in range(layout.groups):
        start, end = layout.chunk_range(group)
        chunks = [bytes(view[i : min(i + chunk_size, end)]) for i in range(start, end, chunk_size)]
        block = layout.block_length(group)
        padded = [c.ljust(block, b"\0") for c in chunks]
        padded += [bytes(block)] * (k - len(chunks))
        group_pieces = chunks + erasure.encode(padded, n)
        pieces += group_pieces
        group_hashes.append(tuple(piece_hash(p) for p in group_pieces))
    tree = MerkleTree([group_leaf(h) for h in group_hashes])
    return EncodedContent(Manifest(layout, tree.root), tuple(pieces), tuple(group_hashes), tree)


def missing(layout: Layout, held: Collection[int]) -> list[int]:
    """The pieces of every group that cannot be rebuilt yet from the ``held`` ones, in
    order: any of them will do, a group needs as many as it has data chunks."""
    out: list[int] = []
    for group in range(layout.groups):
        indices = layout.group_pieces(group)
        have = sum(1 for i in indices if i in held)
        if have < layout.group_data_count(group):
            out += [i for i in indices if i not in held]
    return out


def decode_group(
    manifest: Manifest, group: int, pieces: Mapping[int, bytes], proof: GroupProof
) -> bytes:
    """The file's bytes covered by ``group``, from its verified pieces (index to bytes).

    Every chunk returned, held or rebuilt, is checked against the proof's hashes.
    Raises NotEnoughPiecesError if too few of the group's pieces are given, ProofError if
    the proof fails, a piece has the wrong length, or a chunk does not match its hash
    (for a rebuilt one: the sharer's parity is inconsistent with its data: drop the
    content)."""
    layout = manifest.layout
    verify_group_proof(manifest, group, proof)
    data_count = layout.group_data_count(group)
    block = layout.block_length(group)
    indices = layout.group_pieces(group)
    shares: dict[int, bytes] = {s: bytes(block) for s in range(data_count, layout.k)}
    for index in indices:
        if index in pieces:
            piece = pieces[index]
            if len(piece) != layout.piece_length(index):
                raise ProofError(
                    f"piece {index} is {layout.piece_length(index)} bytes, not {len(piece)}"
                )
            _, share = layout.locate(index)
            shares[share] = bytes(piece).ljust(block, b"\0")
    if len(shares) < layout.k:
        raise NotEnoughPiecesError(
            f"group {group} needs {data_count} pieces, {len(shares) - layout.k + data_count} given"
        )
    blocks = erasure.decode(shares, layout.k, layout.n)
    out = []
    for share in range(data_count):
        index = indices[share]
        chunk = blocks[share][: layout.piece_length(index)]
        if piece_hash(chunk) != proof.hashes[share]:
            raise ProofError(f"chunk {index} rebuilt from parity does not match its hash")
        out.append(chunk)
    return b"".join(out)


def assemble(
    manifest: Manifest, pieces: Mapping[int, bytes], proofs: Mapping[int, GroupProof]
) -> bytes:
    """The whole file from verified pieces and one proof per group.

    Raises NotEnoughPiecesError (also for a group without a proof) and ProofError as
    :func:`decode_group` does."""
    out = []
    for group in range(manifest.layout.groups):
        if group not in proofs:
            raise NotEnoughPiecesError(f"no proof for group {group}")
        out.append(decode_group(manifest, group, pieces, proofs[group]))
    return b"".join(out)
