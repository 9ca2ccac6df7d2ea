"""CircuitBuilder and zmesh.health: the adaptive build timeout and the avoidance table."""

from mesh import build, events_of, full_mesh

from zmesh.errors import CloseCode
from zmesh.link import frames as lf
from zmesh.node import CircuitBuilt, CircuitClosed
from zmesh.sim import Partition, SimNode, Simulator, TamperLink


def withhold_created(sim: Simulator, final: SimNode, relay: SimNode) -> None:
    """The final hop's CREATED never leaves it; its link stays up."""

    def withhold(data: bytes) -> bytes | None:
        return None if data[0] == lf.FrameType.CREATED else data

    sim.apply(TamperLink(final.index, relay.index, withhold))


def test_a_build_records_its_time_and_blames_no_one() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    builder = source.node.builder
    start = sim.now
    assert build(sim, source, [relay, dest]) is not None
    assert len(builder.build_times) == 1 and builder.build_times.timeouts == 0
    ((took, completed),) = builder.build_times._samples
    assert completed and 0.0 < took <= sim.now - start
    assert len(builder.avoidance) == 0


def test_a_timeout_is_a_censored_sample_and_blames_the_relays_past_the_first_hop() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    withhold_created(sim, dest, relay)
    builder = source.node.builder
    assert build(sim, source, [relay, dest]) is None
    assert events_of(source, CircuitClosed)[-1].code == CloseCode.TIMEOUT
    assert builder.build_times.timeouts == 1
    assert builder.build_times._samples[0] == (source.node.config.build_timeout, False)
    assert builder.avoidance.avoided(dest.node.node_id, sim.now)
    assert not builder.avoidance.avoided(relay.node.node_id, sim.now)  # our own link


def test_a_refused_build_blames_the_path_but_gives_no_sample() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    sim.apply(Partition.between([relay.index], [dest.index]))
    builder = source.node.builder
    assert build(sim, source, [relay, dest]) is None
    assert events_of(source, CircuitClosed)[-1].code == CloseCode.CONNECTION_FAILED
    assert len(builder.build_times) == 0
    assert builder.avoidance.avoided(dest.node.node_id, sim.now)
    assert len(builder.avoidance) == 1


def test_new_builds_wait_only_as_long_as_the_learned_timeout() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    builder = source.node.builder
    for _ in range(builder.build_times.min_samples):
        builder.build_times.add(0.05)  # a fast network: the timeout drops to its minimum
    learned = builder.build_times.timeout()
    assert learned == 1.0 < source.node.config.build_timeout
    withhold_created(sim, dest, relay)
    start = sim.now
    assert build(sim, source, [relay, dest]) is None
    assert learned <= sim.now - start < learned + 0.5
    assert builder.build_times._samples[-1] == (learned, False)


def test_the_ceiling_is_the_configured_build_timeout() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    builder = a.node.builder
    for _ in range(builder.build_times.min_samples):
        builder.build_times.add(1e6)
    assert builder.build_times.timeout() == a.node.config.build_timeout
    assert build(sim, a, [b]) is not None
    assert len(events_of(a, CircuitBuilt)) == 1
