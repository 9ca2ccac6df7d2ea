"""The core circuit pool run by the simulator on real nodes: stale circuits are closed.

A circuit past its dirtiness with no open stream is destroyed, so every relay on its path
drops the circuit's keys; one that still carries a stream is destroyed when it ends.
"""

from mesh import open_stream
from zmesh.onion.pool import BuildPath, CircuitPool, PooledCircuit, UseCircuit

from zmesh.identity import Flags
from zmesh.node import CircuitBuilt, CircuitClosed, NodeConfig
from zmesh.rng import DeterministicRng
from zmesh.sim import SimNode, Simulator

DIRTINESS = 30.0


class SimPoolDriver:
    """What a driver does for the core pool, on the simulator's virtual clock: build the
    circuits it asks for, close the ones it gives up, keep one timer armed."""

    def __init__(self, sim: Simulator, client: SimNode, pool: CircuitPool) -> None:
        self.sim, self.client, self.pool = sim, client, pool
        self._generation = 0
        self._armed: float | None = None

    def circuit_for(self, key: bytes) -> PooledCircuit:
        sim, node = self.sim, self.client.node
        linked = {i for i in node.directory if node.link_to(i) is not None}
        decision = self.pool.request(
            key, sim.now, list(node.directory.values()), linked, node.node_id
        )
        if isinstance(decision, UseCircuit):
            return decision.circuit
        assert isinstance(decision, BuildPath)
        mark = self.client.event_count
        cid = sim.call(self.client, lambda: node.build_circuit(decision.path, sim.now))
        assert sim.run(
            lambda: any(
                isinstance(e, CircuitBuilt) and e.circuit_id == cid
                for e in self.client.events_since(mark)
            ),
            max_time=sim.now + 10,
        )
        circuit = self.pool.built(key, cid, [d.node_id for d in decision.path], sim.now)
        self.apply()
        return circuit

    def stream_closed(self, circuit: PooledCircuit) -> None:
        self.pool.stream_closed(circuit, self.sim.now)
        self.apply()

    def apply(self) -> None:
        for cid in self.pool.circuits_to_close():
            self.sim.call(
                self.client, lambda cid=cid: self.client.node.close_circuit(cid, self.sim.now)
            )
        deadline = self.pool.get_timer()
        if deadline == self._armed:
            return
        self._armed = deadline
        self._generation += 1
        if deadline is not None:
            generation = self._generation

            def fire() -> None:
                if generation == self._generation:
                    self._armed = None
                    self.pool.handle_timer(self.sim.now)
                    self.apply()

            self.sim.schedule(deadline, fire)


def mesh(seed: int) -> tuple[Simulator, SimNode, dict[bytes, SimNode]]:
    """A client, three relays and an exit, fully linked, every descriptor known."""
    sim = Simulator(seed)
    client = sim.add_node()
    others = [sim.add_node() for _ in range(3)]
    others.append(sim.add_node(NodeConfig(flags=Flags.RELAY | Flags.EXIT)))
    nodes = [client, *others]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            sim.connect(a, b)
    assert sim.run(
        lambda: len(client.node.directory) == 4 and all(len(n.node.peers()) == 4 for n in nodes),
        max_time=30,
    )
    return sim, client, {n.node.node_id: n for n in others}


def holding(relays: dict[bytes, SimNode], circuit: PooledCircuit) -> list[int]:
    """How many circuits each relay on ``circuit``'s path holds keys for."""
    return [len(relays[node_id].node.relay) for node_id in circuit.path]


def closed(client: SimNode, circuit: PooledCircuit) -> bool:
    return any(isinstance(e, CircuitClosed) and e.circuit_id == circuit.cid for e in client.events)


def test_a_dirty_circuit_without_streams_is_destroyed_and_its_relays_drop_its_keys() -> None:
    sim, client, relays = mesh(11)
    driver = SimPoolDriver(sim, client, CircuitPool(DeterministicRng(11), max_dirtiness=DIRTINESS))
    built_at = sim.now
    circuit = driver.circuit_for(b"alice")
    session, sid = open_stream(sim, client, [circuit.cid], "example.org:80")
    sim.run(max_time=sim.now + 1)
    sim.call(client, lambda: client.node.sessions.reset(session, sid, 0, sim.now))
    driver.stream_closed(circuit)
    assert holding(relays, circuit) == [1, 1, 1]
    sim.run(max_time=built_at + DIRTINESS - 0.01)
    assert holding(relays, circuit) == [1, 1, 1]  # fresh: kept for the next stream
    assert circuit.cid in client.node.client_circuits()
    sim.run(max_time=built_at + DIRTINESS + 1)
    assert holding(relays, circuit) == [0, 0, 0]
    assert circuit.cid not in client.node.client_circuits()
    assert closed(client, circuit)
    assert driver.pool.circuit_ids() == [] and driver.pool.get_timer() is None


def test_a_dirty_circuit_is_destroyed_only_after_its_last_stream_ends() -> None:
    sim, client, relays = mesh(12)
    driver = SimPoolDriver(sim, client, CircuitPool(DeterministicRng(12), max_dirtiness=DIRTINESS))
    circuit = driver.circuit_for(b"alice")
    session, sid = open_stream(sim, client, [circuit.cid], "example.org:80")
    sim.run(max_time=sim.now + 2 * DIRTINESS)
    assert circuit.retired  # past its dirtiness: no new streams on it ...
    assert holding(relays, circuit) == [1, 1, 1]
    assert circuit.cid in client.node.client_circuits()  # ... but its stream lives on
    fresh = driver.circuit_for(b"alice")
    assert fresh is not circuit
    sim.call(client, lambda: client.node.sessions.reset(session, sid, 0, sim.now))
    driver.stream_closed(circuit)
    sim.run(max_time=sim.now + 1)
    assert circuit.cid not in client.node.client_circuits()
    assert closed(client, circuit)
    # What the relays still hold is the fresh circuit's keys, nothing of the old one.
    assert holding(relays, circuit) == [int(i in fresh.path) for i in circuit.path]
    assert driver.pool.circuit_ids() == [fresh.cid]


def test_same_seed_same_paths_in_the_simulator() -> None:
    def paths(sim_seed: int, pool_seed: int) -> list[list[bytes]]:
        sim, client, _ = mesh(sim_seed)
        pool = CircuitPool(DeterministicRng(pool_seed), circuits_per_key=1)
        driver = SimPoolDriver(sim, client, pool)
        return [driver.circuit_for(b"key%d" % i).path for i in range(8)]

    assert paths(13, 1) == paths(13, 1)
    assert paths(13, 1) != paths(13, 2)
