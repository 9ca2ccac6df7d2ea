"""The simulator: virtual time, RTCDataChannel-shaped links, loss, determinism."""

from zmesh.sim import LinkModel, MemoryTransport, Simulator
from zmesh.sim.demo import run_demo


def linked_transports(sim: Simulator, model: LinkModel) -> tuple[MemoryTransport, MemoryTransport]:
    a = MemoryTransport(sim, model, b"x", "a>b")
    b = MemoryTransport(sim, model, b"x", "b>a")
    a.peer, b.peer = b, a
    return a, b


def test_latency_bandwidth_and_order() -> None:
    sim = Simulator(1)
    model = LinkModel(latency=0.05, bandwidth=1000.0)
    a, b = linked_transports(sim, model)
    got: list[tuple[float, bytes]] = []
    b.onmessage = lambda d: got.append((sim.now, d))
    a.send(b"x" * 100)
    a.send(b"y" * 100)
    assert a.bufferedAmount == 200
    sim.run()
    assert [d[:1] for _, d in got] == [b"x", b"y"]
    assert abs(got[0][0] - 0.15) < 1e-9 and abs(got[1][0] - 0.25) < 1e-9
    assert a.bufferedAmount == 0


def test_bufferedamountlow_fires_when_the_queue_drains() -> None:
    sim = Simulator(1)
    a, _ = linked_transports(sim, LinkModel(bandwidth=1000.0))
    a.bufferedAmountLowThreshold = 50
    fired: list[float] = []
    a.onbufferedamountlow = lambda: fired.append(sim.now)
    for _ in range(3):
        a.send(bytes(100))
    sim.run()
    assert len(fired) == 1 and abs(fired[0] - 0.3) < 1e-9


def test_loss_delays_but_never_reorders_or_drops() -> None:
    sim = Simulator(7)
    a, b = linked_transports(sim, LinkModel(loss=0.3, rto=0.5))
    got: list[int] = []
    b.onmessage = lambda d: got.append(d[0])
    for i in range(200):
        a.send(bytes([i % 256]))
    sim.run()
    assert got == [i % 256 for i in range(200)]
    assert sim.now > 0.5  # some message was "retransmitted"


def test_close_reaches_both_ends() -> None:
    sim = Simulator(1)
    a, b = linked_transports(sim, LinkModel())
    closed: list[str] = []
    a.onclose = lambda: closed.append("a")
    b.onclose = lambda: closed.append("b")
    a.close()
    sim.run()
    assert sorted(closed) == ["a", "b"]
    assert a.readyState == b.readyState == "closed"
    a.send(b"ignored")  # sending on a closed channel is a no-op, as in browsers


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    runs = [run_demo(nodes=4, hops=2, size=20_000, seed=s) for s in (5, 5, 6)]
    assert runs[0].trace_digest == runs[1].trace_digest
    assert runs[0].trace_digest != runs[2].trace_digest
    assert all(r.ok for r in runs)
