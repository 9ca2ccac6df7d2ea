"""CircuitBuilder: builds, key confirmation, timeouts, and its bounds."""

import pytest
from mesh import build, events_of, full_mesh

from zmesh.circuit import builder as cb
from zmesh.errors import CloseCode, LocalProtocolError
from zmesh.node import CircuitBuilt, CircuitClosed, NodeConfig


def test_build_then_close_releases_the_circuit_everywhere() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    cid = build(sim, source, [relay, dest])
    assert cid is not None and cid in source.node.builder
    assert source.node.builder.built() == {cid}
    sim.call(source, lambda: source.node.close_circuit(cid, sim.now))
    sim.run(max_time=sim.now + 1)
    assert not source.node.builder.built() and cid not in source.node.builder
    assert len(relay.node.relay) == len(dest.node.relay) == 0
    assert events_of(source, CircuitClosed)[-1] == CircuitClosed(cid, CloseCode.REQUESTED)
    with pytest.raises(LocalProtocolError):
        source.node.close_circuit(cid, sim.now)


def test_bad_paths_are_local_errors() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    with pytest.raises(LocalProtocolError):
        a.node.build_circuit([], sim.now)
    with pytest.raises(LocalProtocolError):
        a.node.build_circuit([sim.descriptor(b)] * 5, sim.now)
    with pytest.raises(LocalProtocolError):  # no link to a stranger's first hop
        a.node.build_circuit([sim.descriptor(a)], sim.now)


def test_builds_waiting_for_created_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cb, "MAX_BUILDING", 3)
    sim = full_mesh(2, config=NodeConfig(build_timeout=1.0))
    a, b = sim.nodes
    path = [sim.descriptor(b)]
    for _ in range(3):
        a.node.build_circuit(path, sim.now)
    with pytest.raises(LocalProtocolError):
        a.node.build_circuit(path, sim.now)
    sim.call(a, lambda: None)
    sim.run(max_time=sim.now + 1)  # they are built: the cap frees up
    assert len(events_of(a, CircuitBuilt)) == 3
    a.node.build_circuit(path, sim.now)
