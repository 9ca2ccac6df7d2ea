"""Benchmark: DHT lookups on the simulator, links dialled on demand (issue 9).

``--nodes`` real nodes (default 1,000) join one at a time through ``zmesh.sim.dht.build``:
each links to two random earlier nodes and bootstraps (a lookup of its own id, dialling the
contacts it learns).  Then ``--lookups`` lookups of a random node's id from another random
node run one at a time, twice over the same pairs:

* ``first pass``: most contacts are not linked yet, so a request waits for a fetch of the
  contact's node record from whoever named it and a dial (a signaling round trip, then the
  link handshake);
* ``second pass`` (the baseline): the same lookups, over the links the first pass made.

Printed: success (the target itself answered), sequential rounds, simulated latency
(median and p90), requests per lookup, links per node, dials, and the first pass's latency
as a ratio of the second's.  Every link has the same one-way latency (``--latency``).
Crypto: real, with the simulator's fast stand-in (labelled; see ``zmesh.sim.dht``).
"""

import argparse
import time

from _harness import note, print_table

from zmesh.sim import dht as sim_dht


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="nodes (default 1000)")
    parser.add_argument("--lookups", type=int, default=200, help="lookups (default 200)")
    parser.add_argument("--latency", type=float, default=0.025, help="one-way seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rounds", type=int, default=1, help="passes over linked contacts (default 1)"
    )
    parser.add_argument("--quick", action="store_true", help="60 nodes, 20 lookups")
    args = parser.parse_args(argv)
    nodes, lookups = (60, 20) if args.quick else (args.nodes, args.lookups)
    if nodes < 3 or lookups < 1 or args.rounds < 1:
        parser.error("--nodes must be at least 3, --lookups and --rounds at least 1")
    note(f"{nodes} nodes joining…")
    t0 = time.perf_counter()
    sim = sim_dht.build(nodes, args.seed, latency=args.latency)
    built = time.perf_counter() - t0
    pairs = sim_dht.pairs(sim, lookups)
    note(f"built in {built:.0f} s; {lookups} lookups, {1 + args.rounds} passes…")
    first = sim_dht.measure(sim, pairs)
    # the linked passes: the one with the median latency stands for them
    linked = sorted(
        (sim_dht.measure(sim, pairs) for _ in range(args.rounds)), key=lambda f: f.latency_ms_median
    )
    second = linked[len(linked) // 2]
    wall = time.perf_counter() - t0
    rows = [
        [
            name,
            f"{f.success:.3f}",
            f"{f.rounds_median:g} / {f.rounds_max}",
            f"{f.latency_ms_median:.0f}",
            f"{f.latency_ms_p90:.0f}",
            f"{f.rpcs_median:g}",
            f"{f.links_median:g}",
            str(f.dials),
        ]
        for name, f in (("first pass (dials)", first), ("second pass (linked)", second))
    ]
    print(
        f"{nodes} nodes, one-way latency {args.latency * 1000:.0f} ms, seed {args.seed}, "
        f"crypto: real, fast stand-in={first.fast_crypto}; wall {wall:.0f} s "
        f"(build {built:.0f} s)"
    )
    print_table(
        [
            "pass",
            "success",
            "rounds med/max",
            "latency ms med",
            "p90",
            "RPCs med",
            "links/node med",
            "dials",
        ],
        rows,
    )
    ratio = first.latency_ms_median / second.latency_ms_median
    print(f"ratio, first pass / second pass median latency: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
