"""Benchmark: the receiver's cost per DATA frame with many out-of-order segments buffered.

A hostile (or badly reordered) peer scatters one-byte DATA frames across a 1 MiB stream
window, never sending offset 0, so nothing is delivered and every byte stays buffered.
After ``--fill`` frames are buffered, the next ``--rounds`` frames are timed one by one
(half fresh positions, half duplicates of buffered ones); the baseline is the same
probe with nothing buffered, in the same run, and the ratio is printed.

Run: ``python bench/stream_reassembly.py [--fill 40000] [--rounds 1000] [--seed 1]``.
"""

import argparse
import random
import statistics
import time

from zmesh.session.frames import DataFrame
from zmesh.session.stream import DEFAULT_WINDOW, Stream


def probe(fill: int, count: int, seed: int) -> dict[str, float]:
    """Median seconds per frame, fresh and duplicate, with ``fill`` segments buffered."""
    rnd = random.Random(seed)
    positions = rnd.sample(range(1, DEFAULT_WINDOW), fill + count)
    stream = Stream(5)
    for p in positions[:fill]:
        stream.receive(DataFrame(5, p, b"x"))
    fresh = positions[fill:]
    dups = rnd.sample(positions[:fill], count) if fill else fresh
    timings: dict[str, list[float]] = {"fresh": [], "duplicate": []}
    for new, old in zip(fresh, dups, strict=True):
        for kind, p in (("fresh", new), ("duplicate", old)):
            t0 = time.perf_counter()
            stream.receive(DataFrame(5, p, b"x"))
            timings[kind].append(time.perf_counter() - t0)
    return {kind: statistics.median(ts) for kind, ts in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fill", type=int, default=40_000, help="segments buffered")
    parser.add_argument("--rounds", type=int, default=1000, help="frames timed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a small run (smoke test)")
    args = parser.parse_args()
    fill, count = (2000, 100) if args.quick else (args.fill, args.rounds)
    base = probe(0, count, args.seed)  # the baseline: the same frames, nothing buffered
    full = probe(fill, count, args.seed)
    print(f"per one-byte DATA frame, {fill} segments buffered vs none (medians)")
    for kind in ("fresh", "duplicate"):
        b, f = base[kind] * 1e6, full[kind] * 1e6
        print(f"  {kind:9s}: {f:7.1f} us vs {b:7.1f} us, ratio {f / b:.2f}x")


if __name__ == "__main__":
    main()
