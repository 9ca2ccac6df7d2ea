"""The DHT on the simulator: real nodes join one by one and look each other up (issue 9).

:func:`build` adds ``n`` real :class:`~zmesh.node.Node` objects with ``NodeConfig.dht``
(and gossip off: no descriptor flooding); each links to ``links`` random nodes already
there and bootstraps (a lookup of its own id), dialling on demand the contacts it learns.
:func:`measure` then runs lookups of random nodes' ids from random nodes and reports
success (the target itself answered), sequential rounds, latency, requests and the links
dialled.

``fast_crypto`` (labelled in every report): the nodes' generators say they are not
reproducible, so X-Wing encapsulation and ML-DSA signing draw their randomness from the OS
through the crypto backend (real crypto, about 17x and 25x faster than the deterministic
pure-Python paths, docs/decisions.md D23).  Ids, request ids and every choice the protocol
makes still follow the seed, and message sizes are unchanged, so the figures are the same
from run to run; only ciphertext and signature bytes differ.
"""

import statistics
from dataclasses import dataclass
from functools import partial

from ..dht.service import Dht
from ..errors import LocalProtocolError
from ..node import LookupDone, NodeConfig
from ..rng import DeterministicRng, randbelow
from .network import SimNode, Simulator
from .transport import LinkModel


class FastCryptoRng(DeterministicRng):
    """A seeded generator that lets the crypto backend draw its own randomness (see the
    module doc): the simulator's stand-in for speed, never a runtime's."""

    reproducible = False

    def fork(self, label: bytes) -> "FastCryptoRng":
        return FastCryptoRng(self._key, label)


@dataclass(frozen=True, slots=True)
class Figures:
    nodes: int
    lookups: int
    success: float
    rounds_median: float
    rounds_max: int
    latency_ms_median: float
    latency_ms_p90: float
    rpcs_median: float
    links_median: float
    dials: int
    simulated_s: float
    fast_crypto: bool


def build(
    n: int,
    seed: int,
    *,
    latency: float = 0.025,
    links: int = 2,
    fast_crypto: bool = True,
    config: NodeConfig | None = None,
) -> Simulator:
    """``n`` DHT nodes joined one at a time, each to ``links`` random earlier ones, each
    bootstrapped before the next joins (or after 30 simulated seconds)."""
    sim = Simulator(seed, LinkModel(latency=latency))
    if fast_crypto:
        sim.rng = FastCryptoRng(seed, b"simulator")
    cfg = config or NodeConfig(dht=True, gossip=False, keepalive=60.0, link_timeout=180.0)
    booted: set[int] = set()

    def on_event(sn: SimNode, event: object) -> None:
        if isinstance(event, LookupDone) and event.kind.value == "bootstrap":
            booted.add(sn.index)

    sim.on_event = on_event
    for i in range(n):
        sn = sim.add_node(cfg)
        for j in sorted({randbelow(sim.rng, i) for _ in range(links)} if i else set()):
            sim.connect(sn, sim.nodes[j])
        if i:
            sim.run(partial(booted.__contains__, i), max_time=sim.now + 30.0)
    sim.on_event = None
    return sim


def pairs(sim: Simulator, count: int) -> list[tuple[int, int]]:
    """``count`` (origin, target) pairs of distinct live nodes, by index, drawn from the
    simulator's generator."""
    nodes = [sn.index for sn in sim.live_nodes()]
    out = []
    for _ in range(count):
        a = nodes[randbelow(sim.rng, len(nodes))]
        b = a
        while b == a:
            b = nodes[randbelow(sim.rng, len(nodes))]
        out.append((a, b))
    return out


def measure(sim: Simulator, lookups: list[tuple[int, int]], *, fast_crypto: bool = True) -> Figures:
    """Run the lookups, one at a time: each (origin, target) pair looks the target's id up
    from the origin.  Returns the figures."""
    nodes = sim.live_nodes()
    done: list[LookupDone] = []

    def on_event(sn: SimNode, event: object) -> None:
        if isinstance(event, LookupDone) and event.kind.value == "node":
            done.append(event)

    sim.on_event = on_event
    dials_before = sum(_dht(sn).stats.dials for sn in nodes)
    found = 0
    for origin, goal in lookups:
        dht, target = _dht(sim.nodes[origin]), sim.nodes[goal].node.node_id
        count = len(done)
        sim.call(sim.nodes[origin], partial(dht.lookup_node, target, sim.now))
        sim.run(partial(_more, done, count), max_time=sim.now + 120.0)
        if len(done) > count and any(c.node_id == target for c in done[-1].closest[:1]):
            found += 1
    sim.on_event = None
    latencies = sorted(e.elapsed * 1000 for e in done)
    return Figures(
        nodes=len(nodes),
        lookups=len(lookups),
        success=found / len(lookups),
        rounds_median=statistics.median(e.rounds for e in done),
        rounds_max=max(e.rounds for e in done),
        latency_ms_median=statistics.median(latencies),
        latency_ms_p90=latencies[int(0.9 * (len(latencies) - 1))],
        rpcs_median=statistics.median(e.rpcs for e in done),
        links_median=statistics.median(len(sn.node.peers()) for sn in nodes),
        dials=sum(_dht(sn).stats.dials for sn in nodes) - dials_before,
        simulated_s=sim.now,
        fast_crypto=fast_crypto,
    )


def _more(done: list[LookupDone], count: int) -> bool:
    return len(done) > count


def _dht(sn: SimNode) -> Dht:
    """The node's DHT; raises LocalProtocolError if it runs without one."""
    if sn.node.dht is None:
        raise LocalProtocolError(f"node {sn.index} runs without NodeConfig.dht")
    return sn.node.dht
