"""Benchmark: the S/Kademlia node-id puzzle (zmesh/dht/puzzle.py), against one SHA-256.

Per attempt (baseline: one SHA-256 of 32 bytes, the checker's whole cost):

* ``check``: :func:`zmesh.dht.puzzle.satisfies`, what every node pays per id it sees;
* ``attempt, honest``: what :func:`zmesh.dht.puzzle.solve` pays per candidate id: a new
  Ed25519 key (the backend's keygen), the node id over the 2,576 bytes of key material,
  and the puzzle hash;
* ``attempt, floor``: the two hashes alone, with the fixed prefix (label and X-Wing key)
  hashed once: the least an attacker with a faster key source (successive Ed25519 keys by
  point addition) pays per candidate.

Then, per difficulty, the expected cost of one id (``2**d`` attempts) at each per-attempt
figure, and (for small difficulties) the measured time of ``solve`` averaged over seeds.
"""

import argparse
import hashlib
import statistics
import sys
import time

from _harness import Op, Subject, measure, note, paired_ratio, print_table, quartiles_us

from zmesh.crypto import backend, xwing
from zmesh.dht.puzzle import satisfies, solve
from zmesh.identity import node_id_of
from zmesh.rng import DeterministicRng


def make_subjects(seed: int) -> list[Subject]:
    rng = DeterministicRng(seed, b"bench-dht-puzzle")
    kem_pk = xwing.PrivateKey(rng.bytes(xwing.SEED_SIZE)).public
    mldsa_pk = backend.mldsa44_public(rng.bytes(32))
    ed_seeds = [rng.bytes(32) for _ in range(64)]
    ed_pks = [backend.ed25519_public(s) for s in ed_seeds]
    node_id = node_id_of(kem_pk, ed_pks[0] + mldsa_pk)
    prefix = hashlib.sha256(b"zmesh-node-id-v1" + kem_pk)
    assert prefix.copy().digest() != node_id
    check_prefix = prefix.copy()
    check_prefix.update(ed_pks[0] + mldsa_pk)
    assert check_prefix.digest() == node_id  # the floor hashes what node_id_of hashes

    def baseline(n: int) -> None:
        for _ in range(n):
            hashlib.sha256(node_id).digest()

    def check(n: int) -> None:
        for _ in range(n):
            satisfies(node_id, 8)

    def honest(n: int) -> None:
        for i in range(n):
            pk = backend.ed25519_public(ed_seeds[i % 64])
            satisfies(node_id_of(kem_pk, pk + mldsa_pk), 8)

    def floor(n: int) -> None:
        for i in range(n):
            h = prefix.copy()
            h.update(ed_pks[i % 64])
            h.update(mldsa_pk)
            hashlib.sha256(h.digest()).digest()

    ops: list[tuple[str, Op]] = [
        ("sha-256 of 32 bytes", baseline),
        ("check", check),
        ("attempt, honest (Ed25519 keygen + 2 hashes)", honest),
        ("attempt, floor (2 hashes, midstate)", floor),
    ]
    return [Subject(name, run) for name, run in ops]


def solve_seconds(difficulty: int, seeds: int) -> float:
    """The mean wall time of ``solve`` at ``difficulty`` over ``seeds`` seeds."""
    times = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        solve(DeterministicRng(seed, b"bench-solve"), difficulty)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--batch", type=int, default=200, help="operations per round (default 200)")
    parser.add_argument("--quick", action="store_true", help="a few rounds (smoke test)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the keys")
    parser.add_argument(
        "--solve-up-to", type=int, default=12, help="measure solve() up to this difficulty"
    )
    args = parser.parse_args(argv)
    rounds = 4 if args.quick else args.rounds
    batch = 20 if args.quick else args.batch
    solve_max = min(args.solve_up_to, 6) if args.quick else args.solve_up_to
    if rounds < 2 or batch < 1:
        parser.error("--rounds must be at least 2 and --batch at least 1")
    subjects = make_subjects(args.seed)
    note(f"{rounds} rounds of {batch}: " + ", ".join(s.name for s in subjects) + "…")
    measure(subjects, rounds, batch)
    base = subjects[0]
    rows = []
    for subject in subjects:
        q1, q3 = quartiles_us(subject)
        ratio = "1 (baseline)" if subject is base else f"{paired_ratio(subject, base):.1f}x"
        rows.append([subject.name, f"{subject.median_us:.2f}", f"{q1:.2f}–{q3:.2f}", ratio])
    print(f"backend: {backend.NAME}")
    print_table(["per attempt", "median µs", "quartiles µs", "ratio"], rows)
    print()

    honest_us, floor_us = subjects[2].median_us, subjects[3].median_us
    rows = []
    for d in range(4, 29, 4):
        measured = ""
        if d <= solve_max:
            seeds = 3 if args.quick else max(3, 2 ** max(0, 14 - d))
            note(f"solve at difficulty {d}, {seeds} seeds…")
            measured = f"{solve_seconds(d, seeds):.3f}"
        rows.append(
            [
                str(d),
                f"{2**d:,}",
                f"{2**d * honest_us / 1e6:.3f}",
                f"{2**d * floor_us / 1e6:.3f}",
                measured,
                f"{honest_us / floor_us:.1f}x",
            ]
        )
    print_table(
        [
            "difficulty",
            "expected attempts",
            "honest s/id",
            "floor s/id",
            "solve() measured s",
            "honest/floor ratio",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
