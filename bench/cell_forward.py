"""Benchmark: forwarding one cell at a middle relay, against the raw primitives it uses.

For each cell size (``Geometry(cell_size=...)``), timed per cell and interleaved round by
round:

* ``baseline``: what one hop's LIONESS layer costs in raw primitive calls on a cell of
  that size: two ``backend.chacha20_xor`` and two keyed ``hashlib.blake2b`` passes over
  ``cell_size - 32`` bytes;
* ``layer``: ``cell.relay_forward(geometry, keys, counter, cell)``, the layer alone;
* ``full relay``: a real :class:`~zmesh.node.Node`, the middle hop of a circuit built for
  real (source -> middle -> final, three linked nodes in a
  :class:`~zmesh.sim.network.Simulator`): a CELL frame fed through ``node.receive`` and the
  forwarded frame drained from ``datagrams_to_send``.

Forward hops do not authenticate, so the relay forwards random cells; its cell counter
advances with every one.  ``MB/s`` is the cell size over the full relay time (one core,
one relay, 1 MB = 10^6 bytes).  Goal: full/baseline <= 2x.
"""

import argparse
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from _harness import Subject, measure, note, paired_ratio, print_table

from zmesh.circuit.relay import _Hop
from zmesh.crypto import backend, lioness
from zmesh.link import frames as lf
from zmesh.node import CircuitBuilt, Node, NodeConfig
from zmesh.onion.cell import relay_forward
from zmesh.onion.geometry import Geometry
from zmesh.rng import DeterministicRng
from zmesh.sim.network import Simulator

GOAL = 2.0
DEFAULT_SIZES = "512,1024,2048,4096,8192,16384"
POOL = 64  # distinct random cells, reused round-robin


@dataclass
class Relay:
    """The middle hop of a real circuit, ready to be fed cells."""

    node: Node
    hop: _Hop
    link_id: int
    circ_id: int
    now: float


def build_relay(geometry: Geometry, seed: int) -> Relay:
    """Build source -> middle -> final for real and return the middle hop's incoming side."""
    sim = Simulator(seed)
    config = NodeConfig(geometry=geometry)
    source, middle, final = (sim.add_node(config) for _ in range(3))
    for a, b in ((source, middle), (middle, final), (source, final)):
        sim.connect(a, b)
    if not sim.run(lambda: all(len(n.node.peers()) == 2 for n in (source, middle, final))):
        raise SystemExit("the mesh did not come up")
    path = [sim.descriptor(middle), sim.descriptor(final)]
    sim.call(source, lambda: source.node.build_circuit(path, sim.now))
    if not sim.run(lambda: any(isinstance(e, CircuitBuilt) for e in source.events)):
        raise SystemExit("the circuit was not built")
    for side, circ in middle.node.relay._hops.items():
        if isinstance(circ, _Hop) and circ.next is not None and side == circ.prev:
            return Relay(middle.node, circ, side[0], side[1], sim.now)
    raise SystemExit("the middle node holds no relay circuit")


def make_subjects(geometry: Geometry, seed: int) -> tuple[list[Subject], Callable[[], int]]:
    """The three subjects for one cell size, and a function counting cells forwarded."""
    size = geometry.cell_size
    relay = build_relay(geometry, seed)
    rng = DeterministicRng(seed, b"bench-cells-%d" % size)
    cells = [rng.bytes(size) for _ in range(POOL)]
    frames = [lf.encode_frame(lf.Cell(relay.circ_id, c)) for c in cells]
    keys = relay.hop.keys
    chacha_key, blake_key, nonce = rng.bytes(32), rng.bytes(32), rng.bytes(12)
    state = {"base": 0, "layer": 0, "node": 0, "forwarded": 0}

    def baseline(n: int) -> None:
        i = state["base"]
        for _ in range(n):
            right = cells[i % POOL][lioness.HALF :]
            backend.chacha20_xor(chacha_key, nonce, right)
            hashlib.blake2b(right, key=blake_key, digest_size=32).digest()
            backend.chacha20_xor(chacha_key, nonce, right)
            hashlib.blake2b(right, key=blake_key, digest_size=32).digest()
            i += 1
        state["base"] = i

    def layer(n: int) -> None:
        i = state["layer"]
        for _ in range(n):
            relay_forward(geometry, keys, i, cells[i % POOL])
            i += 1
        state["layer"] = i

    node, link_id, now = relay.node, relay.link_id, relay.now
    assert relay.hop.next is not None
    out_link = relay.hop.next[0]
    credit_frame = lf.encode_frame(lf.Credit(256))
    owed = [0]  # cells sent downstream that the (simulated) next hop has not credited yet

    def full(n: int) -> None:
        i, forwarded = state["node"], state["forwarded"]
        for _ in range(n):
            node.receive(link_id, frames[i % POOL], now)
            for out, data in node.datagrams_to_send(now):
                if out == out_link and data[0] == lf.FrameType.CELL:
                    forwarded += 1
                    owed[0] += 1
            if owed[0] >= 256:  # the next hop returns link credit, as a real peer does
                node.receive(out_link, credit_frame, now)
                owed[0] -= 256
            i += 1
        state["node"], state["forwarded"] = i, forwarded

    def check() -> int:
        # every cell fed came out once, and the hop's counter advanced once per cell
        assert state["forwarded"] == state["node"] == relay.hop.fwd, "cells went missing"
        conn = node._links.get(link_id)
        assert conn is not None and node.link_to(conn.peer_id or b"") == link_id, "link closed"
        return relay.hop.fwd

    subjects = [
        Subject("baseline", baseline),
        Subject("layer", layer),
        Subject("full relay", full),
    ]
    return subjects, check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds (default 200)")
    parser.add_argument(
        "--sizes", default=DEFAULT_SIZES, help=f"cell sizes in bytes (default {DEFAULT_SIZES})"
    )
    parser.add_argument(
        "--batch-bytes",
        type=int,
        default=128 * 1024,
        help="cell bytes per subject per round; the batch is this over the cell size",
    )
    parser.add_argument("--quick", action="store_true", help="a few rounds (smoke test)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the simulated mesh")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes takes a comma-separated list of integers")
    rounds = 6 if args.quick else args.rounds
    if rounds < 2 or not sizes:
        parser.error("--rounds must be at least 2 and --sizes non-empty")

    rows = []
    worst = 0.0
    for size in sizes:
        try:
            geometry = Geometry(cell_size=size)
        except ValueError as exc:
            parser.error(f"cell size {size}: {exc}")
        batch = max(4, args.batch_bytes // size)
        if args.quick:
            batch = min(batch, 8)
        note(f"cell size {size}: building a circuit, then {rounds} rounds of {batch} cells…")
        subjects, check = make_subjects(geometry, args.seed)
        measure(subjects, rounds, batch)
        check()
        base, layer, full = subjects
        ratio = paired_ratio(full, base)
        worst = max(worst, ratio)
        rows.append(
            [
                str(size),
                f"{base.median_us:.2f}",
                f"{layer.median_us:.2f}",
                f"{full.median_us:.2f}",
                f"{paired_ratio(layer, base):.2f}x",
                f"{ratio:.2f}x",
                f"{size / full.median_us:.0f}",
            ]
        )
    print(f"\nMiddle-relay cell forwarding: {rounds} rounds, medians per cell")
    headers = [
        "cell B",
        "baseline µs",
        "layer µs",
        "full relay µs",
        "ratio layer/base",
        "ratio full/base",
        "MB/s",
    ]
    print_table(headers, rows)
    verdict = "meets" if worst <= GOAL else "MISSES"
    print(f"\nworst full/baseline ratio {worst:.2f}x {verdict} the goal of <= {GOAL}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
