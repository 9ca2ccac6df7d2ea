"""``zmesh demo``: a mesh of real nodes on simulated links, one circuit, one verified transfer.

Pure and deterministic: the caller injects a wall clock (only to report timings) and a
progress callback.  The same seed gives the same path, bytes and trace digest.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..circuit.sessions import SessionStreamEvent
from ..identity import short_id
from ..node import (
    CircuitBuilt,
    CircuitClosed,
    Event,
    HopOpened,
    LinkUp,
    NodeConfig,
)
from ..onion.geometry import DEFAULT_GEOMETRY
from ..rng import sample
from ..session.endpoint import StreamData, StreamFinished, StreamOpened
from .network import LinkModel, SimNode, Simulator

SINK_TARGET = "zmesh:sink"
WRITE_CHUNK = 256 * 1024


class DemoError(Exception):
    """The demo could not complete (it says why)."""


@dataclass
class HopReport:
    role: str
    node: str
    predecessor: str
    successor: str
    saw_source: bool
    saw_destination: bool


@dataclass
class DemoResult:
    path: list[str]
    size: int
    sent_sha256: str
    received_sha256: str
    build_sim: float
    build_wall: float
    transfer_sim: float
    transfer_wall: float
    mesh_wall: float
    hops: list[HopReport] = field(default_factory=list)
    trace_digest: str = ""
    cells_relayed: int = 0

    @property
    def ok(self) -> bool:
        return self.sent_sha256 == self.received_sha256 and not any(
            h.saw_source and h.saw_destination for h in self.hops if h.role.startswith("relay")
        )


@dataclass
class _Sink:
    """The destination's application: hash whatever arrives, then close its side."""

    sha: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    received: int = 0
    finished: bool = False


def run_demo(
    *,
    nodes: int = 12,
    hops: int = 3,
    size: int = 5_000_000,
    seed: int = 7,
    model: LinkModel | None = None,
    clock: Callable[[], float] = lambda: 0.0,
    progress: Callable[[str, int, int], None] = lambda phase, done, total: None,
) -> DemoResult:
    """Build the mesh, a circuit of ``hops`` relays to a destination, and stream ``size`` bytes.

    ``hops`` counts the relays between the source and the destination, which ends the
    circuit, so no relay is adjacent to both.  Raises DemoError on failure.
    """
    if hops < 2:
        raise DemoError(
            "--hops must be at least 2: a single relay would be adjacent to both the "
            "source and the destination"
        )
    if nodes < hops + 2:
        raise DemoError(f"{hops} relays need at least {hops + 2} nodes (source and destination)")
    if hops + 1 > DEFAULT_GEOMETRY.max_hops:
        raise DemoError(f"at most {DEFAULT_GEOMETRY.max_hops - 1} relays fit in a circuit")
    sim = Simulator(seed, model)
    wall0 = clock()
    mesh = [sim.add_node(NodeConfig(hop_events=True)) for _ in range(nodes)]
    pairs = [(a, b) for i, a in enumerate(mesh) for b in mesh[i + 1 :]]
    links_up = [0]

    def count_links(sn: SimNode, event: Event) -> None:
        if isinstance(event, LinkUp):
            links_up[0] += 1
            progress("mesh", links_up[0], 2 * len(pairs))

    sim.on_event = count_links
    for a, b in pairs:
        sim.connect(a, b)
    if not sim.run(lambda: all(len(n.node.peers()) == nodes - 1 for n in mesh), max_time=60):
        raise DemoError("the mesh did not come up")
    mesh_wall = clock() - wall0

    chosen = sample(sim.rng, [n.node.node_id for n in mesh], hops + 2)
    by_id = {n.node.node_id: n for n in mesh}
    source, *relays, destination = (by_id[i] for i in chosen)
    path = [*relays, destination]
    descriptors = [sim.descriptor(n) for n in path]
    for d in descriptors:
        d.verify(sim.now)

    sink = _Sink()
    state: dict[str, int | None] = {"circuit": None, "closed": None}
    opened: dict[int, list[HopOpened]] = {n.index: [] for n in path}

    def on_event(sn: SimNode, event: Event) -> None:
        if isinstance(event, HopOpened) and sn.index in opened:
            opened[sn.index].append(event)  # kept here: the node's event log is bounded
        elif sn is source and isinstance(event, CircuitBuilt):
            state["circuit"] = event.circuit_id
        elif isinstance(event, CircuitClosed):
            state["closed"] = event.code
        elif sn is destination and isinstance(event, SessionStreamEvent):
            inner, session_id = event.event, event.session_id
            if isinstance(inner, StreamOpened):
                sessions = sn.node.sessions
                if inner.target == SINK_TARGET:
                    sim.call(sn, lambda: sessions.accept(session_id, inner.stream_id, sim.now))
                else:
                    sim.call(sn, lambda: sessions.reset(session_id, inner.stream_id, 0, sim.now))
            elif isinstance(inner, StreamData):
                sink.sha.update(inner.data)
                sink.received += len(inner.data)
                progress("transfer", sink.received, size)
            elif isinstance(inner, StreamFinished):
                sink.finished = True
                sim.call(sn, lambda: sn.node.sessions.finish(session_id, inner.stream_id, sim.now))

    sim.on_event = on_event
    t0, w0 = sim.now, clock()
    sim.call(source, lambda: source.node.build_circuit(descriptors, sim.now))
    sim.run(lambda: state["circuit"] is not None or state["closed"] is not None, max_time=t0 + 60)
    circuit = state["circuit"]
    if circuit is None:
        raise DemoError(f"circuit build failed (code {state['closed']})")
    build_sim, build_wall = sim.now - t0, clock() - w0

    data = sim.rng.bytes(size)
    sent_sha = hashlib.sha256(data).hexdigest()
    t1, w1 = sim.now, clock()
    sessions = source.node.sessions

    def open_session(now: float) -> tuple[int, int]:
        session_id = sessions.create(now)
        sessions.add_leg(session_id, circuit, now)
        return session_id, sessions.open(session_id, SINK_TARGET, now)

    session, sid = sim.call(source, lambda: open_session(sim.now))
    for offset in range(0, size, WRITE_CHUNK):
        chunk = data[offset : offset + WRITE_CHUNK]
        sim.call(source, lambda: sessions.send(session, sid, chunk, sim.now))  # noqa: B023 (runs now)
    sim.call(source, lambda: sessions.finish(session, sid, sim.now))
    progress("transfer", 0, size)
    if not sim.run(lambda: sink.finished or state["closed"] is not None, max_time=t1 + 3600):
        raise DemoError("the transfer stalled")
    if not sink.finished:
        raise DemoError(f"the circuit closed during the transfer (code {state['closed']})")
    transfer_sim, transfer_wall = sim.now - t1, clock() - w1

    names = {source.node.node_id: "source", destination.node.node_id: "destination"}
    for i, r in enumerate(relays, 1):
        names[r.node.node_id] = f"relay {i}"

    def label(node_id: bytes | None) -> str:
        if node_id is None:
            return "(none: final hop)"
        return f"{short_id(node_id)} ({names.get(node_id, 'unknown')})"

    src_id, dst_id = source.node.node_id, destination.node.node_id
    reports = [
        HopReport(
            role=names[sn.node.node_id],
            node=label(sn.node.node_id),
            predecessor=label(view.predecessor),
            successor=label(view.successor),
            saw_source=src_id in (view.predecessor, view.successor),
            saw_destination=dst_id in (view.predecessor, view.successor),
        )
        for sn in path
        for view in opened[sn.index]
    ]
    return DemoResult(
        path=[label(n.node.node_id) for n in (source, *path)],
        size=size,
        sent_sha256=sent_sha,
        received_sha256=sink.sha.hexdigest(),
        build_sim=build_sim,
        build_wall=build_wall,
        transfer_sim=transfer_sim,
        transfer_wall=transfer_wall,
        mesh_wall=mesh_wall,
        hops=reports,
        trace_digest=sim.trace_digest,
        cells_relayed=sum(n.node.relay.cells_relayed for n in relays),
    )
