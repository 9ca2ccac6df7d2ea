"""Benchmark: first byte on a fresh session in the simulator (issue 12, item 4; D49).

A client, four relays and an exit, fully linked, every link ``--latency`` one way.  At
t0 the client connects a managed session (:meth:`~zmesh.circuit.sessions.Sessions.
connect`) and opens a stream at once, as a SOCKS proxy does for a new isolation key;
when the stream is CONNECTED it sends a short request, which the exit echoes.  Prints,
over ``--rounds`` runs (seeds 1, 2, ...), the median time from t0 to CONNECTED (what a
SOCKS reply waits for) and to the first byte of the answer, and both in circuit round
trips (6 x latency).  Today
CONNECTED takes two circuit round trips (the build, then OPEN) and the first byte
three; with a session's first cells right behind its CREATE (docs/decisions.md D49: the
relays and the builder carry them, the session side is not enabled) one less each.
Deterministic from the seeds.
"""

import argparse
import statistics
import sys

from zmesh.circuit.sessions import SessionStreamEvent
from zmesh.identity import Flags
from zmesh.node import Event, NodeConfig
from zmesh.session.endpoint import StreamConnected, StreamData, StreamOpened
from zmesh.sim import SimNode, Simulator
from zmesh.sim.transport import LinkModel

REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def one(seed: int, latency: float) -> tuple[float, float]:
    """(seconds to CONNECTED, seconds to the first byte) for one fresh session."""
    sim = Simulator(seed, LinkModel(latency=latency))
    client = sim.add_node()
    relays = [sim.add_node() for _ in range(4)]
    exit_ = sim.add_node(NodeConfig(flags=Flags.RELAY | Flags.EXIT))
    nodes = [client, *relays, exit_]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            sim.connect(a, b)
    others = len(nodes) - 1
    formed = sim.run(
        lambda: all(
            len(n.node.directory) == others and len(n.node.peers()) == others for n in nodes
        ),
        max_time=60,
    )
    if not formed:
        raise SystemExit("the mesh did not form")
    sessions = client.node.sessions
    marks: dict[str, float] = {}

    def on_event(sn: SimNode, event: Event) -> None:
        if not isinstance(event, SessionStreamEvent):
            return
        sid, inner = event.session_id, event.event
        if sn is exit_:
            theirs = exit_.node.sessions
            if isinstance(inner, StreamOpened):
                sim.call(exit_, lambda: theirs.accept(sid, inner.stream_id, sim.now))
            elif isinstance(inner, StreamData):
                data = inner.data
                sim.call(exit_, lambda: theirs.send(sid, inner.stream_id, data, sim.now))
        elif sn is client:
            if isinstance(inner, StreamConnected) and "connected" not in marks:
                marks["connected"] = sim.now
                sim.call(client, lambda: sessions.send(sid, inner.stream_id, REQUEST, sim.now))
            elif isinstance(inner, StreamData) and "data" not in marks:
                marks["data"] = sim.now

    sim.on_event = on_event
    start = sim.now

    def begin(now: float) -> None:
        session = sessions.connect(now)
        sessions.open(session, "example.org:80", now)

    sim.call(client, lambda: begin(sim.now))
    if not sim.run(lambda: "data" in marks, max_time=start + 30):
        raise SystemExit(f"seed {seed}: no answer within 30 s")
    return marks["connected"] - start, marks["data"] - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs, one seed each (default 5)")
    parser.add_argument("--latency", type=float, default=0.010, help="one way, s (0.010)")
    parser.add_argument("--quick", action="store_true", help="2 seeds")
    args = parser.parse_args()
    if args.rounds < 1 or args.latency <= 0:
        parser.error("rounds and latency must be positive")
    seeds = 2 if args.quick else args.rounds
    runs = [one(seed, args.latency) for seed in range(1, seeds + 1)]
    rtt = 6 * args.latency
    connected = statistics.median(r[0] for r in runs)
    first = statistics.median(r[1] for r in runs)
    print(f"fresh session, 3 hops, {args.latency * 1000:g} ms links, {seeds} seeds (medians)")
    for label, value in (("CONNECTED", connected), ("first byte", first)):
        print(
            f"{label:<11} {value * 1000:7.1f} ms  ratio to a circuit round trip {value / rtt:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
