"""Benchmark: the receiver's cost per DATA frame with many out-of-order segments buffered.

A hostile (or badly reordered) peer scatters one-byte DATA frames across a 1 MiB stream
window, never sending offset 0, so nothing is delivered and every byte stays buffered.
After ``--fill`` frames are buffered, the next ``--probe`` frames are timed one by one
(half fresh positions, half duplicates of buffered ones) and the median is printed.

Run: ``python bench/stream_reassembly.py [--fill 40000] [--probe 1000] [--seed 1]``.
"""

import argparse
import random
import statistics
import time

from zmesh.session.frames import DataFrame
from zmesh.session.stream import DEFAULT_WINDOW, Stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fill", type=int, default=40_000)
    parser.add_argument("--probe", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    positions = rnd.sample(range(1, DEFAULT_WINDOW), args.fill + args.probe)
    stream = Stream(5)
    start = time.perf_counter()
    for p in positions[: args.fill]:
        stream.receive(DataFrame(5, p, b"x"))
    fill_s = time.perf_counter() - start
    fresh = positions[args.fill :]
    dups = rnd.sample(positions[: args.fill], args.probe)
    timings: dict[str, list[float]] = {"fresh": [], "duplicate": []}
    for new, old in zip(fresh, dups, strict=True):
        for kind, p in (("fresh", new), ("duplicate", old)):
            t0 = time.perf_counter()
            stream.receive(DataFrame(5, p, b"x"))
            timings[kind].append(time.perf_counter() - t0)
    print(f"filled {args.fill} one-byte segments in {fill_s:.2f} s")
    for kind, ts in timings.items():
        print(f"per cell, {kind:9s}: median {statistics.median(ts) * 1e6:9.1f} us")


if __name__ == "__main__":
    main()
