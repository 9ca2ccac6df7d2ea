"""The core session pool run by the simulator on real nodes: dirty sessions are closed.

A session past its dirtiness with no open stream is closed, so every relay on its legs
drops the circuits' keys (and the standby circuit to its exit goes too, when no other
session uses that exit); one that still carries a stream is closed when it ends.
"""

from mesh import accept_streams, received

from zmesh.circuit.pool import PooledSession, SessionPool
from zmesh.identity import Flags
from zmesh.node import NodeConfig
from zmesh.sim import SimNode, Simulator

DIRTINESS = 30.0


class SimPoolDriver:
    """What the runtime Pool does for the core pool, on the simulator's virtual clock:
    connect the sessions it asks for, close the ones it gives up, drop the ones the node
    closed, keep one timer armed."""

    def __init__(self, sim: Simulator, client: SimNode, pool: SessionPool) -> None:
        self.sim, self.client, self.pool = sim, client, pool
        self._generation = 0
        self._armed: float | None = None

    def session_for(self, key: bytes) -> PooledSession:
        sim, sessions = self.sim, self.client.node.sessions
        self._drop_closed()
        session = self.pool.request(key, sim.now)
        if session is None:
            session_id = sim.call(self.client, lambda: sessions.connect(sim.now))
            session = self.pool.connected(key, session_id, sim.now)
        self.apply()
        return session

    def stream_closed(self, session: PooledSession) -> None:
        self.pool.stream_closed(session, self.sim.now)
        self.apply()

    def _drop_closed(self) -> None:
        alive = set(self.client.node.sessions.ids())
        for session in self.pool.sessions():
            if session.session_id not in alive:
                self.pool.session_closed(session.session_id)

    def apply(self) -> None:
        sessions = self.client.node.sessions
        for session_id in self.pool.sessions_to_close():
            self.sim.call(self.client, lambda s=session_id: sessions.close(s, self.sim.now))
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
                    self._drop_closed()
                    self.pool.handle_timer(self.sim.now)
                    self.apply()

            self.sim.schedule(deadline, fire)


def mesh(seed: int) -> tuple[Simulator, SimNode, list[SimNode]]:
    """A client, three relays and an exit, fully linked, every descriptor known; the
    exit accepts every stream."""
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
    accept_streams(sim, others[-1])
    return sim, client, others


def holding(relays: list[SimNode]) -> list[int]:
    """How many circuits each relay holds keys for."""
    return [len(r.node.relay) for r in relays]


def ready(client: SimNode, session: PooledSession) -> bool:
    """The session has its two legs, and the standby circuit is built."""
    sessions = client.node.sessions
    return len(sessions.legs_of(session.session_id)) == 2 and len(sessions.standby()) == 1


def open_stream(sim: Simulator, client: SimNode, session: PooledSession) -> int:
    sessions = client.node.sessions
    return sim.call(client, lambda: sessions.open(session.session_id, "example.org:80", sim.now))


def test_a_dirty_session_without_streams_is_closed_and_its_relays_drop_its_keys() -> None:
    sim, client, relays = mesh(11)
    driver = SimPoolDriver(sim, client, SessionPool(max_dirtiness=DIRTINESS))
    connected_at = sim.now
    session = driver.session_for(b"alice")
    stream = open_stream(sim, client, session)
    assert sim.run(lambda: ready(client, session), max_time=sim.now + 10)
    legs = client.node.sessions.legs_of(session.session_id)
    (standby,) = client.node.sessions.standby()
    assert client.node.builder.built() == {*legs, standby}
    # every hop of the three circuits holds its keys
    assert sum(holding(relays)) == 3 * 3 and holding(relays)[-1] == 3
    sessions = client.node.sessions
    sim.call(client, lambda: sessions.reset(session.session_id, stream, 0, sim.now))
    driver.stream_closed(session)
    sim.run(max_time=connected_at + DIRTINESS - 0.01)
    assert sum(holding(relays)) == 9  # fresh: kept for the next stream
    assert session.session_id in client.node.sessions.ids()
    sim.run(max_time=connected_at + DIRTINESS + 1)
    assert session.retired and session.session_id not in client.node.sessions.ids()
    assert holding(relays) == [0, 0, 0, 0]  # the legs and the standby, on every hop
    assert not client.node.builder.built() and client.node.sessions.standby() == []
    assert driver.pool.sessions() == [] and driver.pool.get_timer() is None


def test_a_dirty_session_is_closed_only_after_its_last_stream_ends() -> None:
    sim, client, relays = mesh(12)
    driver = SimPoolDriver(sim, client, SessionPool(max_dirtiness=DIRTINESS))
    session = driver.session_for(b"alice")
    stream = open_stream(sim, client, session)
    assert sim.run(lambda: ready(client, session), max_time=sim.now + 10)
    old_legs = client.node.sessions.legs_of(session.session_id)
    sim.run(max_time=sim.now + 2 * DIRTINESS)
    assert session.retired  # past its dirtiness: no new streams on it ...
    assert session.session_id in client.node.sessions.ids()  # ... but its stream lives on
    assert client.node.sessions.legs_of(session.session_id) == old_legs
    sessions = client.node.sessions
    sim.call(client, lambda: sessions.send(session.session_id, stream, b"still here", sim.now))
    assert sim.run(lambda: received(relays[-1]) == b"still here", max_time=sim.now + 5)
    fresh = driver.session_for(b"alice")
    assert fresh is not session and fresh.session_id != session.session_id
    assert sim.run(lambda: ready(client, fresh), max_time=sim.now + 10)
    sim.call(client, lambda: sessions.reset(session.session_id, stream, 0, sim.now))
    driver.stream_closed(session)
    sim.run(max_time=sim.now + 1)
    assert session.session_id not in client.node.sessions.ids()
    built = client.node.builder.built()
    assert not built & set(old_legs)
    # What the relays still hold is the fresh session's legs and the standby to the
    # exit it still uses, nothing of the old session.
    assert built == {*client.node.sessions.legs_of(fresh.session_id), *sessions.standby()}
    assert len(built) == 3 and sum(holding(relays)) == 3 * len(built)
    assert driver.pool.sessions() == [fresh]
