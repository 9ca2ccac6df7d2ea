"""Benchmark: a 2-hop circuit whose relay must first dial the last hop, against the same
circuit over links that exist (docs/decisions.md, D12).

Each round starts three fresh in-process nodes on loopback, with real WebRTC links
(libdatachannel): a client C linked to relays R1 and R2, which have no link to each other.
R1 learns R2's descriptor from C's gossip.  Then, timed from ``build_circuit`` to
CircuitBuilt:

* ``dial on demand``: C builds C -> R1 -> R2; R1 parks the CREATE, dials R2 through mesh
  signaling (the offer and answer travel via C), and forwards it once the link is up;
* ``existing links`` (the baseline): C builds C -> R1 -> R2 again, over the link R1 made.

The medians and their ratio are printed.  What dialling costs is the signaling round trip
and the WebRTC connection setup (ICE, DTLS, SCTP) plus the link handshake.
"""

import argparse
import asyncio
import statistics
import sys
import time

from _harness import note, print_table

from zmesh.identity import Identity
from zmesh.node import Node, NodeConfig
from zmesh.runtime import webrtc
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.entropy import SystemRng


def _node() -> AsyncNode:
    rng = SystemRng()
    node = Node(Identity.generate(rng), rng, wall_clock(), NodeConfig())
    return AsyncNode(node, rtc=webrtc, loopback=True)


async def _wait(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _round() -> tuple[float, float]:
    client, r1, r2 = _node(), _node(), _node()
    try:
        urls = []
        for relay in (r1, r2):
            port = await relay.serve_http("127.0.0.1", 0)
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            await client.bootstrap(url)
        r2_id = r2.node.node_id
        await _wait(lambda: r2_id in r1.node.directory, "R1 to learn R2's descriptor")
        if r1.node.link_to(r2_id) is not None:
            raise SystemExit("R1 and R2 are linked already: nothing to measure")
        path = [r1.node.descriptor(wall_clock()), r2.node.descriptor(wall_clock())]
        times = []
        for _ in range(2):
            start = time.perf_counter()
            await client.build_circuit(path, timeout=30)
            times.append(time.perf_counter() - start)
        if r1.node.link_to(r2_id) is None:
            raise SystemExit("R1 did not link to R2")
        return times[0], times[1]
    finally:
        for n in (client, r1, r2):
            await n.close()


async def _main(rounds: int) -> int:
    dial, existing = [], []
    for i in range(rounds):
        first, second = await _round()
        dial.append(first * 1000)
        existing.append(second * 1000)
        note(f"round {i + 1}/{rounds}: dial {first * 1000:.1f} ms, existing {second * 1000:.1f} ms")
    d, e = statistics.median(dial), statistics.median(existing)
    print(f"\nCircuit build C -> R1 -> R2 on loopback, {rounds} rounds, medians")
    print_table(
        ["subject", "median ms", "min ms", "max ms", "ratio"],
        [
            [
                "existing links (baseline)",
                f"{e:.1f}",
                f"{min(existing):.1f}",
                f"{max(existing):.1f}",
                "1.00x",
            ],
            ["dial on demand", f"{d:.1f}", f"{min(dial):.1f}", f"{max(dial):.1f}", f"{d / e:.2f}x"],
        ],
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="fresh node triples (default 10)")
    parser.add_argument("--quick", action="store_true", help="two rounds (smoke test)")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    return asyncio.run(_main(rounds))


if __name__ == "__main__":
    sys.exit(main())
