"""Test helpers: small simulated meshes of real nodes (virtual time, no sleeps)."""

from zmesh.node import CircuitBuilt, CircuitClosed, CircuitStreamEvent, Event, LinkUp, NodeConfig
from zmesh.session.endpoint import StreamData, StreamFinished
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


def received(sn: SimNode, circuit_id: int | None = None) -> bytes:
    return b"".join(
        e.event.data
        for e in sn.events
        if isinstance(e, CircuitStreamEvent)
        and isinstance(e.event, StreamData)
        and (circuit_id is None or e.circuit_id == circuit_id)
    )


def finished(sn: SimNode) -> bool:
    return any(
        isinstance(e, CircuitStreamEvent) and isinstance(e.event, StreamFinished) for e in sn.events
    )


__all__ = ["Event", "LinkUp", "build", "events_of", "finished", "full_mesh", "received"]
