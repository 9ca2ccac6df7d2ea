"""Benchmark: hybrid signing and verification, against pyca's own primitives.

Signing (baseline: pyca's hedged ML-DSA-44 signature with its Ed25519 half, what a
non-reproducible node pays):

* ``sign, deterministic``: a reproducible identity's signature, whose ML-DSA half is FIPS
  204's deterministic variant on the pure-Python dilithium-py (docs/decisions.md, D3).

Verification (baseline: pyca's Ed25519 plus ML-DSA-44 verification, no zMesh rule):

* ``verify, key cached``: :func:`zmesh.crypto.signing.verify`, the key's subgroup check
  already cached (a known signer), so the rule adds the pure-Python check of ``R``;
* ``verify, new key``: the same with the key check cache cleared first (D30).

Every subject signs or verifies the same 300-byte message in the descriptor context.
"""

import argparse
import sys

from _harness import Op, Subject, measure, note, paired_ratio, print_table, quartiles_us

from zmesh.crypto import backend, signing
from zmesh.rng import DeterministicRng

CONTEXT = b"zmesh-descriptor-v1"


def make_subjects(seed: int) -> tuple[list[Subject], list[Subject]]:
    rng = DeterministicRng(seed, b"bench-signing")
    key_seed, message = rng.bytes(signing.SEED_SIZE), rng.bytes(300)
    hedged = signing.SigningKey.from_seed(key_seed)
    deterministic = signing.SigningKey.from_seed(key_seed, deterministic=True)
    signature = hedged.sign(message, CONTEXT)
    public = hedged.public
    assert signing.verify(public, deterministic.sign(message, CONTEXT), message, CONTEXT)

    def sign_with(key: signing.SigningKey) -> Op:
        def run(n: int) -> None:
            for _ in range(n):
                key.sign(message, CONTEXT)

        return run

    def verify_raw(n: int) -> None:
        ed, pq = public[: signing.ED25519_PK], public[signing.ED25519_PK :]
        for _ in range(n):
            assert backend.ed25519_verify(ed, signature[: signing.ED25519_SIG], CONTEXT + message)
            assert backend.mldsa44_verify(pq, signature[signing.ED25519_SIG :], message, CONTEXT)

    def verify_cached(n: int) -> None:
        for _ in range(n):
            assert signing.verify(public, signature, message, CONTEXT)

    def verify_new_key(n: int) -> None:
        for _ in range(n):
            signing._key_has_prime_order.cache_clear()
            assert signing.verify(public, signature, message, CONTEXT)

    signs = [
        Subject("sign, hedged (pyca)", sign_with(hedged)),
        Subject("sign, deterministic (dilithium-py)", sign_with(deterministic)),
    ]
    verifies = [
        Subject("verify, backend only", verify_raw),
        Subject("verify, key cached", verify_cached),
        Subject("verify, new key", verify_new_key),
    ]
    return signs, verifies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--batch", type=int, default=4, help="operations per round (default 4)")
    parser.add_argument("--quick", action="store_true", help="a few rounds (smoke test)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the key and message")
    args = parser.parse_args(argv)
    rounds = 4 if args.quick else args.rounds
    batch = 1 if args.quick else args.batch
    if rounds < 2 or batch < 1:
        parser.error("--rounds must be at least 2 and --batch at least 1")
    if backend.NAME != "pyca":
        parser.error("this benchmark compares pyca with dilithium-py: run it on CPython")
    signs, verifies = make_subjects(args.seed)
    rows = []
    for group in (signs, verifies):
        note(f"{rounds} rounds of {batch}: " + ", ".join(s.name for s in group) + "…")
        measure(group, rounds, batch)
        base = group[0]
        for subject in group:
            q1, q3 = quartiles_us(subject)
            ratio = "1 (baseline)" if subject is base else f"{paired_ratio(subject, base):.1f}x"
            rows.append([subject.name, f"{subject.median_us:.0f}", f"{q1:.0f}–{q3:.0f}", ratio])
    print_table(["subject", "median µs", "quartiles µs", "ratio"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
