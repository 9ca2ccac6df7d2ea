"""Benchmark: the per-MB cost of checking chunks and of erasure coding, against SHA-256.

Every subject works on one group of a file at a time (``k`` data chunks, 2 MiB at the
defaults: 8 chunks of 256 KiB, 8-of-10), cycling through the file's groups, and every
figure is per MB of the group's data bytes, so all subjects handle the same bytes:

* ``sha256 (hashlib)``, the baseline: raw hashlib SHA-256 over the group's data chunks;
* ``verify chunks``: :func:`zmesh.chunks.verify_piece` on each data chunk (its hash and
  the group proof: the piece hashes and the Merkle audit path up to the root);
* ``encode``: the group's ``n - k`` parity pieces, on this runtime's backend (zfec on
  CPython) and on the pure-Python one that Pyodide uses (``gf256``);
* ``decode``: rebuilding the group's data when its first ``n - k`` data chunks are lost
  (the most parity a group can need), on both backends;
* ``encode_content``: the whole sharing path per MB (cutting, parity, hashing, the tree).

The ratio is each subject's time over SHA-256's in the same round (median of rounds).
"""

import argparse
import hashlib
import sys

from _harness import Op, Subject, measure, note, paired_ratio, print_table

from zmesh.chunks import _gf256, encode_content, erasure, verify_piece
from zmesh.chunks.content import EncodedContent
from zmesh.chunks.manifest import DEFAULT_CHUNK_SIZE, DEFAULT_K, DEFAULT_N
from zmesh.rng import DeterministicRng


def make_subjects(enc: EncodedContent, data: bytes) -> list[Subject]:
    m = enc.manifest
    lay = m.layout
    k, n = lay.k, lay.n
    groups = lay.groups
    proofs = [enc.proof(g) for g in range(groups)]
    chunks = [[enc.pieces[i] for i in lay.group_pieces(g)[:k]] for g in range(groups)]
    parity = [[enc.pieces[i] for i in lay.group_pieces(g)[k:]] for g in range(groups)]
    lost = n - k
    survivors = [{s: (chunks[g] + parity[g])[s] for s in range(lost, n)} for g in range(groups)]
    group_bytes = k * lay.chunk_size
    state = {"next": 0}

    def cycle() -> int:
        g = state["next"]
        state["next"] = (g + 1) % groups
        return g

    def sha256(count: int) -> None:
        for _ in range(count):
            for chunk in chunks[cycle()]:
                hashlib.sha256(chunk).digest()

    def verify(count: int) -> None:
        for _ in range(count):
            g = cycle()
            for share, index in enumerate(lay.group_pieces(g)[:k]):
                verify_piece(m, index, chunks[g][share], proofs[g])

    def encode_with(module: object) -> Op:
        def run(count: int) -> None:
            for _ in range(count):
                g = cycle()
                if module is erasure:
                    erasure.encode(chunks[g], n)
                else:
                    _gf256.encode(chunks[g], k, n)

        return run

    def decode_with(module: object) -> Op:
        def run(count: int) -> None:
            for _ in range(count):
                g = cycle()
                if module is erasure:
                    erasure.decode(survivors[g], k, n)
                else:
                    _gf256.decode(sorted(survivors[g].items())[:k], k, n)

        return run

    def whole(count: int) -> None:
        piece = data[:group_bytes]
        for _ in range(count):
            encode_content(piece, lay.chunk_size, k, n)

    backend = erasure.BACKEND
    subjects = [
        Subject("sha256 (hashlib)", sha256),
        Subject("verify chunks (hash + proof)", verify),
        Subject(f"encode ({backend})", encode_with(erasure)),
        Subject(f"decode ({backend}), {lost} chunks lost", decode_with(erasure)),
        Subject("encode_content (split+parity+tree)", whole),
    ]
    if backend != "gf256":
        subjects[4:4] = [
            Subject("encode (gf256, Pyodide's)", encode_with(_gf256)),
            Subject(f"decode (gf256), {lost} chunks lost", decode_with(_gf256)),
        ]
    return subjects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--batch", type=int, default=4, help="groups per round (default 4)")
    parser.add_argument("--quick", action="store_true", help="a few rounds (smoke test)")
    parser.add_argument("--mb", type=int, default=16, help="file size in MiB (default 16)")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="data chunks per group")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="pieces per group")
    parser.add_argument("--seed", type=int, default=1, help="seed for the file's bytes")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    batch = 1 if args.quick else args.batch
    if rounds < 2 or batch < 1 or args.mb < 1:
        parser.error("--rounds must be at least 2, --batch and --mb at least 1")
    if not 1 <= args.k < args.n:
        parser.error("--k and --n need 1 <= k < n")
    size = (2 if args.quick else args.mb) * (1 << 20)
    if size < args.k * DEFAULT_CHUNK_SIZE:
        parser.error("--mb must hold at least one whole group")
    data = DeterministicRng(args.seed, b"bench-chunks").bytes(size)
    note(f"encoding a {size >> 20} MiB file, {args.k}-of-{args.n}, {DEFAULT_CHUNK_SIZE} B chunks…")
    enc = encode_content(data, DEFAULT_CHUNK_SIZE, args.k, args.n)
    subjects = make_subjects(enc, data)
    note(f"{rounds} rounds of {batch} groups: " + ", ".join(s.name for s in subjects) + "…")
    measure(subjects, rounds, batch, warmup=1)
    group_mb = args.k * DEFAULT_CHUNK_SIZE / 1e6
    base = subjects[0]
    rows = []
    for subject in subjects:
        ms = subject.median_us / 1000
        ratio = "1 (baseline)" if subject is base else f"{paired_ratio(subject, base):.1f}x"
        rows.append([subject.name, f"{ms:.2f}", f"{group_mb / ms * 1000:.0f}", ratio])
    print_table(["subject", "ms per group", "MB/s", "ratio"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
