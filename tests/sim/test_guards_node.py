"""Guards in a real node on the simulator: a client with ``NodeConfig.guards`` dials its
guards, starts every circuit at one of at most two of them, and moves to the next guard
when one dies."""

from functools import partial

from zmesh.identity import Flags
from zmesh.node import NodeConfig
from zmesh.onion.guards import IN_USE
from zmesh.runtime.control import guards_per_client
from zmesh.sim import SimNode, Simulator
from zmesh.sim.faults import Crash


def mesh(seed: int) -> tuple[Simulator, SimNode, list[SimNode]]:
    """Eight relays (three exits) linked in a full mesh, and a client linked to one."""
    sim = Simulator(seed)
    relays = [
        sim.add_node(NodeConfig(flags=Flags.RELAY | (Flags.EXIT if i < 3 else Flags.NONE)))
        for i in range(8)
    ]
    for i, a in enumerate(relays):
        for b in relays[i + 1 :]:
            sim.connect(a, b)
    client = sim.add_node(NodeConfig(guards=True))
    sim.connect(client, relays[7])
    sim.run(max_time=10.0)
    return sim, client, relays


def first_hops(client: SimNode) -> set[bytes]:
    builder = client.node.builder
    return {builder.path(cid)[0] for cid in builder.built()}


def connect(sim: Simulator, client: SimNode, legs: int = 2) -> int:
    sessions = client.node.sessions
    assert sim.run(partial(lambda: sim.call(client, partial(sessions.can_connect, sim.now))),
                   max_time=sim.now + 60.0)  # fmt: skip
    sid = sim.call(client, partial(sessions.connect, sim.now, legs))
    assert sim.run(lambda: len(sessions.legs_of(sid)) == legs, max_time=sim.now + 60.0)
    return sid


def test_a_client_dials_its_guards_and_uses_at_most_two() -> None:
    sim, client, _ = mesh(1)
    guards = client.node.guards
    assert guards is not None
    for _ in range(4):
        connect(sim, client)
    in_use = guards.first_hops(sim.now)
    assert len(in_use) == IN_USE
    assert first_hops(client) == set(in_use)  # every circuit starts at a guard
    assert guards_per_client(client.node) == IN_USE
    for guard in in_use:  # the client linked to its guards on its own
        assert client.node.link_to(guard) is not None


def test_a_dead_guard_is_replaced_by_the_next() -> None:
    sim, client, relays = mesh(2)
    guards = client.node.guards
    assert guards is not None
    connect(sim, client)
    first = guards.first_hops(sim.now)[0]
    [dead] = [r for r in relays if r.node.node_id == first]
    sim.apply(Crash(dead.index))
    sim.run(max_time=sim.now + 10.0)  # the link times out: the guard is noted
    assert first not in guards.first_hops(sim.now)
    assert first in guards.primary()  # still a primary guard, waiting for its retry
    for _ in range(2):
        connect(sim, client)
    assert first not in first_hops(client)
    assert guards_per_client(client.node) <= IN_USE
