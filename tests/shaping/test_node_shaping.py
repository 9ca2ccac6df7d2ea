"""Shaped links between real nodes (virtual time): circuits build, data flows, circuits
tear down, and every message on the wire has the profile's size, whatever it carries."""

from collections import Counter

from mesh import accept_streams, build, finished, open_stream, received, send_all

from zmesh.identity import Flags
from zmesh.link import frames as lf
from zmesh.node import CircuitClosed, LinkClosed, NodeConfig
from zmesh.shaping import ShapeConfig, VideoProfile
from zmesh.sim import Simulator

CONSTANT = ShapeConfig("constant", size=8448, interval=0.005)


def mesh(configs: list[NodeConfig], seed: int = 1) -> tuple[Simulator, Counter[int]]:
    """A full mesh of nodes with these configs; returns it and a counter of the sizes of
    every message delivered (from the start: handshakes included)."""
    sim = Simulator(seed)
    sizes: Counter[int] = Counter()
    record = sim.record

    def counting(name: str, data: bytes) -> None:
        sizes[len(data)] += 1
        record(name, data)

    sim.record = counting  # type: ignore[method-assign]
    nodes = [sim.add_node(c) for c in configs]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            sim.connect(a, b)
    n = len(nodes)
    assert sim.run(lambda: all(len(x.node.peers()) == n - 1 for x in nodes), max_time=30)
    return sim, sizes


def circuit_transfer_teardown(sim: Simulator, size: int = 300_000) -> None:
    src, r1, r2, dst = sim.nodes[:4]
    cid = build(sim, src, [r1, r2, dst])
    assert cid is not None
    accept_streams(sim, dst)
    session, stream = open_stream(sim, src, [cid], "example:80")
    data = send_all(sim, src, session, stream, size)
    assert sim.run(lambda: finished(dst), max_time=sim.now + 120)
    assert received(dst) == data
    sim.call(src, lambda: src.node.close_circuit(cid, sim.now))
    assert sim.run(
        lambda: any(isinstance(e, CircuitClosed) for e in dst.events), max_time=sim.now + 30
    )
    sim.run(max_time=sim.now + 1)


def test_constant_every_message_one_size() -> None:
    config = NodeConfig(flags=Flags.RELAY | Flags.EXIT, shape=CONSTANT)
    sim, sizes = mesh([config] * 4)
    circuit_transfer_teardown(sim)
    assert set(sizes) == {8448}, sizes
    assert not any(isinstance(e, LinkClosed) for n in sim.nodes for e in n.events)
    sent, cover, queued = sim.nodes[0].node.shaping.stats()
    assert sent > 300_000 and cover > 0 and queued == 0


def test_video_sizes_come_from_the_profile() -> None:
    profile = VideoProfile.measured()
    config = NodeConfig(flags=Flags.RELAY | Flags.EXIT, shape=ShapeConfig("video", video=profile))
    sim, sizes = mesh([config] * 4, seed=2)
    circuit_transfer_teardown(sim, 100_000)
    allowed = set(profile.delta_size) | set(profile.key_size)
    assert set(sizes) <= allowed | {7}, set(sizes) - allowed
    assert not any(isinstance(e, LinkClosed) for n in sim.nodes for e in n.events)


def test_unshaped_sizes_show_frame_types() -> None:
    """The control: without shaping, the sizes name the frames (CREDIT 8 B, CREATED...)."""
    config = NodeConfig(flags=Flags.RELAY | Flags.EXIT)
    sim, sizes = mesh([config] * 4)
    circuit_transfer_teardown(sim)
    cell = lf.FRAME_HEADER + 4 + 8192
    assert {8, 9, cell} <= set(sizes)  # CREDIT or PING, DESTROY, CELL


def test_mixed_shaped_and_unshaped_nodes() -> None:
    """Unwrapping is always on: a shaping node and one that does not shape work together."""
    shaped = NodeConfig(flags=Flags.RELAY | Flags.EXIT, shape=CONSTANT)
    plain = NodeConfig(flags=Flags.RELAY | Flags.EXIT)
    sim, _ = mesh([plain, shaped, plain, shaped], seed=3)
    circuit_transfer_teardown(sim, 100_000)
    assert not any(isinstance(e, LinkClosed) for n in sim.nodes for e in n.events)


def test_same_seed_same_trace() -> None:
    config = NodeConfig(shape=ShapeConfig("video"))
    digests = []
    for _ in range(2):
        sim, _ = mesh([config] * 3, seed=4)
        sim.run(max_time=sim.now + 3)
        digests.append(sim.trace_digest)
    assert digests[0] == digests[1]
