"""Test helpers: small simulated meshes of real nodes (virtual time, no sleeps)."""

from zmesh.circuit.sessions import SessionStreamEvent
from zmesh.node import CircuitBuilt, CircuitClosed, Event, LinkUp, NodeConfig
from zmesh.rng import DeterministicRng
from zmesh.session.endpoint import StreamData, StreamFinished, StreamOpened
from zmesh.sim import LinkModel, SimNode, Simulator


def full_mesh(
    n: int, seed: int = 1, model: LinkModel | None = None, config: NodeConfig | None = None
) -> Simulator:
    sim = Simulator(seed, model)
    nodes = [sim.add_node(config) for _ in range(n)]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            sim.connect(a, b)
    assert sim.run(lambda: all(len(x.node.peers()) == n - 1 for x in nodes), max_time=30)
    return sim


def events_of[T](sn: SimNode, kind: type[T]) -> list[T]:
    return [e for e in sn.events if isinstance(e, kind)]


def build(sim: Simulator, source: SimNode, path: list[SimNode]) -> int | None:
    """Build a circuit; return its id, or None if it closed instead."""
    descriptors = [sim.descriptor(n) for n in path]
    mark = source.event_count
    cid = sim.call(source, lambda: source.node.build_circuit(descriptors, sim.now))

    def settled() -> bool:
        return any(
            isinstance(e, CircuitBuilt | CircuitClosed) and e.circuit_id == cid
            for e in source.events_since(mark)
        )

    sim.run(settled, max_time=sim.now + 60)
    built = any(
        isinstance(e, CircuitBuilt) and e.circuit_id == cid for e in source.events_since(mark)
    )
    return cid if built else None


def open_stream(sim: Simulator, source: SimNode, cids: list[int], target: str) -> tuple[int, int]:
    """A session whose legs are the built circuits ``cids``, and a stream on it to
    ``target``: returns (session id, stream id)."""
    sessions = source.node.sessions

    def open_(now: float) -> tuple[int, int]:
        session_id = sessions.create(now)
        for cid in cids:
            sessions.add_leg(session_id, cid, now)
        return session_id, sessions.open(session_id, target, now)

    return sim.call(source, lambda: open_(sim.now))


def accept_streams(sim: Simulator, *nodes: SimNode) -> None:
    """Make ``nodes`` accept every stream opened to them (as an exit that reached the
    target would), after whatever ``sim.on_event`` did before."""
    before = sim.on_event

    def on_event(sn: SimNode, event: Event) -> None:
        if before is not None:
            before(sn, event)
        if sn in nodes and isinstance(event, SessionStreamEvent):
            inner, session_id = event.event, event.session_id
            if isinstance(inner, StreamOpened):
                sessions = sn.node.sessions
                sim.call(sn, lambda: sessions.accept(session_id, inner.stream_id, sim.now))

    sim.on_event = on_event


def received(sn: SimNode, session_id: int | None = None) -> bytes:
    return b"".join(
        e.event.data
        for e in sn.events
        if isinstance(e, SessionStreamEvent)
        and isinstance(e.event, StreamData)
        and (session_id is None or e.session_id == session_id)
    )


def send_all(sim: Simulator, source: SimNode, session: int, stream: int, size: int) -> bytes:
    """Send ``size`` seeded bytes on a session's stream and FIN; returns them."""
    data = DeterministicRng(size).bytes(size)
    sim.call(source, lambda: source.node.sessions.send(session, stream, data, sim.now))
    sim.call(source, lambda: source.node.sessions.finish(session, stream, sim.now))
    return data


def finished(sn: SimNode) -> bool:
    return any(
        isinstance(e, SessionStreamEvent) and isinstance(e.event, StreamFinished) for e in sn.events
    )


__all__ = [
    "Event",
    "LinkUp",
    "accept_streams",
    "build",
    "events_of",
    "finished",
    "full_mesh",
    "open_stream",
    "received",
    "send_all",
]
