"""The self-healing experiment: many sessions on real nodes while on-path relays fail.

A full mesh of relays, ``exits`` exits and ``clients`` clients runs on the simulator,
every link shaped by ``link`` (by default 20 ms one way and 10 Mbit/s, so that a
transfer is under way when a fault strikes).
Every ``interval`` seconds a client connects a managed session (two legs to an exit,
:meth:`~zmesh.circuit.sessions.Sessions.connect`) and sends ``size`` random bytes, which
the exit echoes back.  Every ``fault_every`` seconds a relay on a live leg (never an exit
or a client) crashes or goes silent (a blackhole), in turn, and a new relay joins in its
place.  Deterministic from the seed: the same arguments give the same report.

A session's *stall* is the longest gap in the echo its client received around a lost leg
(:attr:`~zmesh.circuit.sessions.SessionInfo.longest_stall`); bytes are *lost* when an
echo differs from what was sent or a session ends before its echo is whole.
"""

import functools
import hashlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from ..circuit.sessions import SessionClosed, SessionInfo, SessionLegLost, SessionStreamEvent
from ..identity import Flags
from ..link.frames import SEND_BATCH
from ..node import Event, NodeConfig
from ..rng import randbelow
from ..session.endpoint import StreamData, StreamEvent, StreamFinished, StreamOpened
from .faults import Blackhole, Crash, Join
from .network import SimNode, Simulator
from .transport import LinkModel

TARGET = "echo:7"
LINK = LinkModel(latency=0.02, bandwidth=1.25e6)


@dataclass
class HealReport:
    sessions: int
    completed: int  # echo whole and equal to what was sent
    failed: int  # ended (SessionClosed) before the echo was whole
    bytes_sent: int
    bytes_lost: int
    failovers: int  # sessions that lost a leg with data in flight
    stalls: list[float]  # each such session's longest gap around a failover (seconds)
    gaps: list[float]  # every other session's longest gap (the baseline)
    faults: list[str]
    sim_seconds: float
    # legs given up as stalled: by a client, with a dead or blackholed node on the path
    # (true) or every node of the path alive (false), and by an exit (its path unknown)
    stalls_true: int = 0
    stalls_false: int = 0
    stalls_exit: int = 0

    @staticmethod
    def _pct(values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:.0f} ms"

        return (
            f"{self.sessions} sessions, {self.completed} intact, {self.failed} failed, "
            f"{self.bytes_lost} of {self.bytes_sent} bytes lost; {len(self.faults)} faults; "
            f"{self.failovers} sessions failed over: stall p50 {ms(self._pct(self.stalls, 0.5))}"
            f" p99 {ms(self._pct(self.stalls, 0.99))} max {ms(max(self.stalls, default=None))}"
            f"; sessions without a failover: longest gap p50 {ms(self._pct(self.gaps, 0.5))}"
            f" p99 {ms(self._pct(self.gaps, 0.99))}; {self.sim_seconds:.0f} s simulated; "
            f"legs stalled: {self.stalls_true} true, {self.stalls_false} false (clients), "
            f"{self.stalls_exit} at exits"
        )

    @property
    def median_stall(self) -> float | None:
        return statistics.median(self.stalls) if self.stalls else None


@dataclass
class _Run:
    client: SimNode
    session_id: int
    data: bytes
    echo: bytearray = field(default_factory=bytearray)
    done: bool = False
    failed: bool = False
    info: SessionInfo | None = None  # taken when the echo ended, before the session closed


def run_heal(
    seed: int,
    *,
    sessions: int = 1000,
    relays: int = 14,
    exits: int = 2,
    clients: int = 4,
    size: int = 256 * 1024,
    interval: float = 0.05,
    fault_every: float = 1.0,
    link: LinkModel = LINK,
    batch: int = SEND_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> HealReport:
    """Run the experiment (see the module doc); ``batch`` is every node's
    :attr:`~zmesh.node.NodeConfig.link_batch`.  Raises AssertionError if the mesh does
    not form."""
    sim = Simulator(seed, link)
    config = NodeConfig(link_batch=batch)
    exit_config = NodeConfig(flags=Flags.RELAY | Flags.EXIT, link_batch=batch)
    client_nodes = [sim.add_node(config) for _ in range(clients)]
    exit_nodes = [sim.add_node(exit_config) for _ in range(exits)]
    relay_nodes = [sim.add_node(config) for _ in range(relays)]
    nodes = [*client_nodes, *exit_nodes, *relay_nodes]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            sim.connect(a, b)
    everyone = len(nodes) - 1
    assert sim.run(lambda: all(len(n.node.directory) >= everyone for n in nodes), max_time=60)
    protected = {n.index for n in client_nodes + exit_nodes}
    runs: dict[tuple[int, int], _Run] = {}
    stalls = {"true": 0, "false": 0, "exit": 0}

    def on_event(sn: SimNode, event: Event) -> None:
        if isinstance(event, SessionStreamEvent):
            inner, sid = event.event, event.session_id
            if sn in exit_nodes:
                _echo(sim, sn, sid, inner)
                return
            run = runs.get((sn.index, sid))
            if run is not None and isinstance(inner, StreamData):
                run.echo += inner.data
            elif run is not None and isinstance(inner, StreamFinished):
                run.done = True
                sessions_ = sn.node.sessions
                run.info = sessions_.info(sid, sim.now)
                sim.call(sn, lambda: sessions_.close(sid, sim.now))
        elif isinstance(event, SessionLegLost) and event.reason == "stalled":
            if sn in exit_nodes:
                stalls["exit"] += 1
            else:
                alive = {n.node.node_id for n in sim.live_nodes()}
                stalls["true" if any(h not in alive for h in event.path) else "false"] += 1
        elif isinstance(event, SessionClosed):
            run = runs.get((sn.index, event.session_id))
            if run is not None and not run.done:
                run.failed = True

    sim.on_event = on_event
    start = sim.now
    faults: list[str] = []
    rng = sim.rng.fork(b"heal")

    def launch(i: int) -> None:
        client = client_nodes[i % clients]
        data = rng.bytes(size)
        sessions_ = client.node.sessions

        def begin(now: float) -> int:
            sid = sessions_.connect(now)
            stream = sessions_.open(sid, TARGET, now)
            sessions_.send(sid, stream, data, now)
            sessions_.finish(sid, stream, now)
            return sid

        sid = sim.call(client, lambda: begin(sim.now))
        runs[(client.index, sid)] = _Run(client, sid, data)

    def fault(k: int) -> None:
        on_path = sorted(
            {
                node_id
                for run in runs.values()
                if not (run.done or run.failed)
                for cid in run.client.node.sessions.legs_of(run.session_id)
                for node_id in run.client.node.builder.path(cid)
            }
        )
        victims = [
            sn
            for sn in sim.live_nodes()
            if sn.node.node_id in on_path and sn.index not in protected
        ]
        if victims:
            victim = victims[randbelow(rng, len(victims))]
            kind = Crash if k % 2 == 0 else Blackhole
            sim.apply(kind(victim.index))
            faults.append(f"{sim.now:.2f} s: {kind.__name__.lower()} relay {victim.index}")
            sim.apply(Join(links=everyone, config=config))

    for i in range(sessions):
        sim.schedule(start + 1.0 + i * interval, functools.partial(launch, i))
    end = start + 1.0 + sessions * interval
    k = 0
    t = start + 1.0 + fault_every
    while t < end:
        sim.schedule(t, functools.partial(fault, k))
        k += 1
        t += fault_every

    def finished() -> bool:
        return len(runs) == sessions and all(r.done or r.failed for r in runs.values())

    def tick() -> None:
        if progress is not None:
            progress(sum(1 for r in runs.values() if r.done or r.failed), sessions)
        if not finished():
            sim.schedule(sim.now + 1.0, tick)

    sim.schedule(start + 1.0, tick)
    sim.run(finished, max_time=end + 120)
    report = _report(sim, runs=runs, sessions=sessions, size=size, faults=faults, start=start)
    report.stalls_true, report.stalls_false = stalls["true"], stalls["false"]
    report.stalls_exit = stalls["exit"]
    return report


def _echo(sim: Simulator, exit_: SimNode, sid: int, event: StreamEvent) -> None:
    """What an exit does in the experiment: accept every stream and echo it."""
    sessions, stream = exit_.node.sessions, event.stream_id
    if isinstance(event, StreamOpened):
        sim.call(exit_, lambda: sessions.accept(sid, stream, sim.now))
    elif isinstance(event, StreamData):
        data = event.data
        sim.call(exit_, lambda: sessions.send(sid, stream, data, sim.now))
    elif isinstance(event, StreamFinished):
        sim.call(exit_, lambda: sessions.finish(sid, stream, sim.now))


def _report(
    sim: Simulator,
    *,
    runs: dict[tuple[int, int], _Run],
    sessions: int,
    size: int,
    faults: list[str],
    start: float,
) -> HealReport:
    completed = failed = lost = failovers = 0
    stalls: list[float] = []
    gaps: list[float] = []
    for run in runs.values():
        intact = run.done and hashlib.sha256(run.echo).digest() == hashlib.sha256(run.data).digest()
        completed += intact
        failed += run.failed
        if not intact:
            lost += size
        if run.info is not None and run.info.failovers:
            failovers += 1
            stalls.append(run.info.longest_stall)
        elif run.info is not None:
            gaps.append(run.info.longest_gap)
    return HealReport(
        sessions=sessions,
        completed=completed,
        failed=failed,
        bytes_sent=sessions * size,
        bytes_lost=lost,
        failovers=failovers,
        stalls=stalls,
        gaps=gaps,
        faults=faults,
        sim_seconds=sim.now - start,
    )
