"""Content: files as verifiable, erasure-coded pieces named by a short id (sans-I/O).

- :mod:`.manifest`: the layout of a file in chunks, groups and pieces, the 54-byte
  manifest and the ``zm1...`` content id that names it;
- :mod:`.merkle`: the RFC 6962 Merkle tree and inclusion proofs;
- :mod:`.erasure`: Reed–Solomon k-of-n coding (zfec on CPython, the same code in pure
  Python in Pyodide);
- :mod:`.content`: cutting a file into pieces, checking a piece on arrival, telling which
  pieces are missing, rebuilding groups.

Nothing here reads the clock, draws randomness or does I/O; the store lives in
:mod:`zmesh.runtime.chunkstore`.
"""

from .content import (
    EncodedContent,
    GroupProof,
    assemble,
    decode_group,
    decode_group_proof,
    encode_content,
    missing,
    piece_hash,
    verify_group_proof,
    verify_piece,
)
from .errors import ContentError, ContentIdError, ManifestError, NotEnoughPiecesError, ProofError
from .manifest import ContentId, Layout, Manifest, decode_manifest, manifest_for

__all__ = [
    "ContentError",
    "ContentId",
    "ContentIdError",
    "EncodedContent",
    "GroupProof",
    "Layout",
    "Manifest",
    "ManifestError",
    "NotEnoughPiecesError",
    "ProofError",
    "assemble",
    "decode_group",
    "decode_group_proof",
    "decode_manifest",
    "encode_content",
    "manifest_for",
    "missing",
    "piece_hash",
    "verify_group_proof",
    "verify_piece",
]
