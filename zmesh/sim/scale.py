"""``zmesh sim``: the control plane of an open network at scale, then anonymity over days
(issue 9).

:func:`simulate` runs two levels on the production components and returns one
:class:`ScaleReport` (the keys of ``zmesh sim --json``):

1. **The control plane for ``duration`` seconds.**  Every node, honest or hostile, is a
   real :class:`~zmesh.dht.service.Dht` (one per node, with its own identity, signed
   descriptor, routing table, record store and seeded generator) driven directly by an
   event heap in virtual time.  What is real and what is modelled:

   *Real*: every DHT message is encoded by the sender's ``Dht`` (:mod:`zmesh.dht.messages`)
   and decoded by the receiver's ``Dht.receive``; lookups (bootstrap, refresh, replication,
   republishing, measured lookups), the routing tables and their subnet caps, the record
   stores and their budgets, the S/Kademlia puzzle on every id (every id, Sybils included,
   is solved with :func:`zmesh.dht.puzzle.solve` at ``PUZZLE_DIFFICULTY`` and checked by
   each ``Dht``), node records signed with the real hybrid signature (Ed25519 + ML-DSA-44)
   and verified by the receiving ``Dht``.  Path choice is the production
   :class:`~zmesh.onion.paths.RelayPool` under the subnet rule, fed with what the client's
   DHT knows (the descriptors of the node records it holds for its routing-table
   entries); guards are each client's own :class:`~zmesh.onion.guards.GuardSet` over
   :func:`~zmesh.onion.guards.eligible_guards`; relays that failed are avoided through
   each client's :class:`~zmesh.health.avoid.Avoidance` (a lost link weighs
   ``LINK_FAILED``, as in the node); a failed build waits for its client's
   :class:`~zmesh.health.cbt.BuildTimes` timeout before the next try.

   *Modelled*: links carry no :class:`~zmesh.link.connection.LinkConnection` and no
   handshake.  A ``Dht``'s ``dial`` schedules :meth:`Dht.link_up` at both ends after
   ``DIAL_RTTS`` round trips (signaling, ICE and DTLS, the link handshake); a dial to a
   node that left fails after the dialer's :data:`~zmesh.dialer.DIAL_TIMEOUT`.  A
   :class:`~zmesh.dht.service.DhtSend` is handed to the peer's ``Dht.receive`` one one-way
   latency later (what one input made a node send to one peer arrives as one event, in
   order, and the receiver's effects are carried out after the last: the same outcome
   with fewer events; the messages stay separate).  Links stay up until a node leaves;
   idle keepalives are not sent.  A node that leaves stops at once (messages to it are
   lost); each linked peer learns it after the link layer's detection delay, drawn as
   ``detection - U(0, keepalive)`` plus one latency, where ``detection`` is what the real
   :class:`~zmesh.health.link.LinkHealth` answers for a steady link after its last PONG
   (its phi rule with the :class:`~zmesh.link.connection.LinkLimits` defaults: a PING
   every 1 s, dead about 3 s after the last PONG;
   :func:`~zmesh.sim.scale_world.detection_delay`), then gets ``Dht.link_down``.

   *Latency*: each pair of nodes has a fixed core round-trip time drawn from a log-normal
   with median ``RTT_MEDIAN`` (150 ms) and sigma ``RTT_SIGMA`` (0.6: 10% of pairs
   under 70 ms, 10% over 325 ms), an approximation of the pairwise RTTs of the King data
   set (Gummadi, Saroiu and Gribble, "King: Estimating Latency between Arbitrary Internet
   End Hosts", IMW 2002; the matrix of 1,740 DNS servers Vivaldi was evaluated on, Dabek
   et al., SIGCOMM 2004), whose RTTs are unimodal with a long right tail and a median in
   the 100-200 ms range; the parameters are chosen by hand to that shape, not fitted to
   the matrix, which is not available here.  Each end adds an access delay one way:
   ``ACCESS_NATIVE`` for a native relay on a server, ``ACCESS_BROWSER`` for a
   browser node on a home connection.  Half of the nodes are native, half browsers.

   *Crypto stand-in* (labelled ``fast_crypto`` in the report): nodes' generators are
   :class:`~zmesh.sim.dht.FastCryptoRng`, so ML-DSA signing draws its randomness from the
   OS (real signatures, same sizes, different bytes from run to run: no signature byte
   enters the digest); and every node's ``Dht`` decodes records through one
   :class:`~zmesh.sim.scale_world.SharedRecords` (its ``record_decoder`` argument): the
   same bytes give one shared immutable :class:`~zmesh.dht.records.Record`, so 10,000
   nodes' copies of a record sit in memory once, and since a Record and its Descriptor
   check their signatures once per object, each signature is checked once in the run,
   with the real verdict.  Nothing in the production modules is replaced or patched.

   *Hostile nodes* (``adversary``: that fraction of the nodes, and of the newcomers that
   replace leavers) run the real ``Dht`` for their own upkeep and answer PING, STORE and a
   request for their own node record (at link up: they want to be linked), but never
   answer a lookup honestly: half of them drop every FIND_NODE and every other FIND_VALUE
   (the asker waits for its timeout), the other half answer each with ``k`` fake contacts
   closer to the target than anyone, ids that pass the puzzle but name no node (the asker
   cannot describe them, so each costs a failed request).  In circuits they relay
   correctly (a passive, colluding adversary, as TorPS's).

   *Sybils* (``sybil``): extra identities in ``sybil_subnets`` IPv4 /24 networks (each in
   its own /16), every one solving the puzzle, joining during the ramp like any node, never
   leaving, claiming the EXIT flag, and behaving well in the DHT (answering every lookup
   truthfully), which is what gets an id into other nodes' tables and samples.  They are
   new (first seen at their join), so the guard age rule applies to them.

   *Churn* (``churn``): per simulated hour that fraction of the nodes leaves, at uniformly
   drawn times, each replaced at once by a newcomer of the same kind that links to
   ``JOIN_LINKS`` native nodes (its operator's bootstrap list) and bootstraps.  As in
   :mod:`zmesh.sim.anonymity`, native relays leave at the rate of a mean lifetime of a year
   and browser nodes take the other departures; the nodes of the start have been in the
   network for a time drawn from that stationary lifetime (what the guard age rule reads).

   *Start*: the initial nodes come up one by one over a ramp of ``min(duration / 4, 600
   s)``, each linking to ``JOIN_LINKS`` earlier nodes and bootstrapping through the
   real protocol; measurements start a minute after the ramp.

   *Workload*: ``lookups`` lookups (:meth:`Dht.lookup_node`) of a random live honest node's
   id from another, at uniform times; a success is the target itself among the answers,
   closest first.  ``circuits`` circuit requests from random live honest nodes: up to
   ``MAX_ATTEMPTS`` paths drawn with the production code, each failing if a hop has
   left (the client's table still lists it); a successful build takes one round trip over
   the path (Sphinx setup: CREATE out, CREATED back, D8), plus a dial of ``DIAL_RTTS``
   round trips for each hop pair not linked, plus per-hop processing
   (``HOP_NATIVE``: a CREATE through a CPython node, D40; ``HOP_BROWSER`` for a
   browser hop).  Circuits do not add DHT links.

   ``bytes_per_node_per_s``: the DHT message bytes each node sent and received (its
   ``Dht.stats``, link-up record exchange included), summed over the honest and hostile
   nodes (not Sybils) and divided by their summed time in the network.

2. **Anonymity over ``anonymity_days`` days**: :func:`zmesh.sim.anonymity.simulate_anonymity`
   with the run's node count, adversary fraction, churn and seed (TorPS, Johnson et al.,
   CCS 2013), and ``anonymity_clients`` clients (4,000 by default, at most one per node):
   ``clients_deanonymized`` is a fraction of independent clients, so its standard error,
   ``clients_deanonymized_se``, is about 0.006 near 0.2, well under the bound's margin.
   ``zmesh sim`` runs it in a second process beside the control plane (the two share
   nothing, and the report is the same either way: ``start_anonymity``).

Modules: :mod:`zmesh.sim.scale_config` holds :class:`ScaleConfig` and the constants named
above (``DIAL_RTTS`` and the rest), :mod:`zmesh.sim.scale_world` the nodes and the event
heap (:class:`~zmesh.sim.scale_world.World`), this module the report and its figures.

Deterministic: the same :class:`ScaleConfig` gives the same :attr:`ScaleReport.digest`,
a SHA-256 over every measured outcome (lookups, circuits, each node's byte counts) and the
anonymity run's digest; wall time and signature bytes never enter it.
"""

import hashlib
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

from .anonymity import AnonymityConfig, AnonymityReport, simulate_anonymity
from .scale_config import PUZZLE_DIFFICULTY, ScaleConfig
from .scale_world import World

AnonymityStarter = Callable[[AnonymityConfig], Callable[[], AnonymityReport]]


@dataclass(frozen=True, slots=True)
class ScaleReport:
    """What ``zmesh sim --json`` writes: the issue's keys, then details."""

    nodes: int
    simulated_s: float
    wall_s: float
    digest: str
    lookup_success: float
    lookup_hops_median: float
    lookup_latency_ms_median: float
    circuit_success: float
    circuit_build_ms_median: float
    adversary_fraction: float
    guards_per_client: int
    anonymity_days: float
    circuits_compromised: float
    clients_deanonymized: float
    clients_deanonymized_no_guards: float
    clients_deanonymized_se: float  # the standard error of clients_deanonymized
    sybil_path_share: float
    sybil_guard_share: float
    bytes_per_node_per_s: float
    # details
    churn: float
    sybil: int
    sybil_subnets: int
    no_guards: bool
    seed: int
    fast_crypto: bool
    puzzle_difficulty: int
    lookups: int
    lookup_rpcs_median: float
    lookup_latency_ms_p90: float
    circuits: int
    circuit_first_try: float
    circuit_build_ms_p90: float
    bytes_per_node_per_s_second_half: float
    nodes_joined: int
    nodes_left: int
    links_per_node_median: float
    table_size_median: float
    events: int
    anonymity_clients: int
    anonymity_wall_s: float  # after the control plane, until the anonymity report was in
    anonymity_in_parallel: bool  # it ran in another process beside the control plane
    control_wall_s: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _standard_error(p: float, n: int) -> float:
    """The standard error of a fraction ``p`` of ``n`` independent clients."""
    return math.sqrt(p * (1 - p) / n) if n else 0.0


def _p90(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[int(0.9 * (len(ordered) - 1))]


def anonymity_config(cfg: ScaleConfig) -> AnonymityConfig:
    """The anonymity run of ``cfg``: its node count, clients, days, adversary, churn and
    seed."""
    return AnonymityConfig(
        relays=cfg.nodes,
        clients=min(cfg.anonymity_clients, cfg.nodes),
        days=cfg.anonymity_days,
        adversary=cfg.adversary,
        churn=min(cfg.churn, 1.0),
        seed=cfg.seed,
    )


def simulate(
    cfg: ScaleConfig,
    *,
    clock: Callable[[], float] = lambda: 0.0,
    progress: Callable[[str, int, int], None] | None = None,
    start_anonymity: AnonymityStarter | None = None,
) -> ScaleReport:
    """Run the control plane and the anonymity run of the module doc; ``clock`` (the
    driver's wall clock, for ``wall_s`` only) and ``progress(phase, done, total)`` are the
    caller's.  ``start_anonymity(config)`` starts the anonymity run elsewhere (the command
    line runs it in a second process, beside the control plane: the two share nothing)
    and returns a function that waits for its report; without it the run follows the
    control plane here.  Either way the report is the same.  Raises ValueError for a bad
    configuration (at :class:`ScaleConfig`)."""
    t0 = clock()
    acfg = anonymity_config(cfg)
    wait = start_anonymity(acfg) if start_anonymity is not None else None
    run = World(cfg, progress)
    run.run()
    t1 = clock()
    if wait is not None:
        anonymity = wait()
    else:
        anonymity = simulate_anonymity(
            acfg, None if progress is None else partial(_anonymity_progress, progress)
        )
    t2 = clock()
    lookups = run.lookup_results
    circuits = run.circuit_results
    total_bytes, seconds = run.bytes_and_seconds(cfg.duration)
    half_bytes = run.half_bytes or 0
    second_half = (total_bytes - half_bytes) / max(1e-9, seconds - run.half_seconds)
    positions = sybil_positions = 0
    for outcome in circuits:
        for path in outcome.paths:
            positions += len(path)
            sybil_positions += sum(run.nodes[i].sybil for i in path)
    slots = sybil_slots = 0
    for n in run.nodes:
        if n.guards is not None:
            for g in n.guards.guards:
                slots += 1
                sybil_slots += run.nodes[run.by_id[g.node_id]].sybil
    live = [n for n in run.nodes if n.alive and not n.sybil]
    digest = hashlib.sha256(repr(_digest_config(cfg)).encode())
    for lo in lookups:
        digest.update(
            b"L%d:%d:%d:%d:%d:%d;"
            % (lo.origin, lo.target, lo.success, lo.rounds, lo.rpcs, round(lo.latency * 1e6))
        )
    for co in circuits:
        digest.update(
            b"C%d:%d:%d:%d:%r;"
            % (co.client, co.success, co.attempts, round(co.build * 1e6), co.paths)
        )
    for n in run.nodes:
        digest.update(b"N%d:%d:%d;" % (n.index, n.dht.stats.bytes_in, n.dht.stats.bytes_out))
    digest.update(anonymity.digest.encode())
    deanonymized = anonymity.clients_deanonymized
    if cfg.no_guards:
        deanonymized = anonymity.clients_deanonymized_no_guards
    builds = [c.build * 1000 for c in circuits if c.success]
    latencies = [lo.latency * 1000 for lo in lookups]
    return ScaleReport(
        nodes=cfg.nodes,
        simulated_s=cfg.duration,
        wall_s=round(t2 - t0, 3),
        digest=digest.hexdigest(),
        lookup_success=sum(lo.success for lo in lookups) / len(lookups) if lookups else 0.0,
        lookup_hops_median=_median([float(lo.rounds) for lo in lookups]),
        lookup_latency_ms_median=_median(latencies),
        circuit_success=sum(c.success for c in circuits) / len(circuits) if circuits else 0.0,
        circuit_build_ms_median=_median(builds),
        adversary_fraction=anonymity.adversary_fraction,
        guards_per_client=0 if cfg.no_guards else anonymity.guards_per_client,
        anonymity_days=cfg.anonymity_days,
        circuits_compromised=(
            anonymity.circuits_compromised_no_guards
            if cfg.no_guards
            else anonymity.circuits_compromised
        ),
        clients_deanonymized=deanonymized,
        clients_deanonymized_no_guards=anonymity.clients_deanonymized_no_guards,
        clients_deanonymized_se=_standard_error(deanonymized, anonymity.clients),
        sybil_path_share=sybil_positions / positions if positions else 0.0,
        sybil_guard_share=sybil_slots / slots if slots else 0.0,
        bytes_per_node_per_s=total_bytes / seconds if seconds else 0.0,
        churn=cfg.churn,
        sybil=cfg.sybil,
        sybil_subnets=cfg.sybil_subnets,
        no_guards=cfg.no_guards,
        seed=cfg.seed,
        fast_crypto=True,
        puzzle_difficulty=PUZZLE_DIFFICULTY,
        lookups=len(lookups),
        lookup_rpcs_median=_median([float(lo.rpcs) for lo in lookups]),
        lookup_latency_ms_p90=_p90(latencies),
        circuits=len(circuits),
        circuit_first_try=(
            sum(c.success and c.attempts == 1 for c in circuits) / len(circuits)
            if circuits
            else 0.0
        ),
        circuit_build_ms_p90=_p90(builds),
        bytes_per_node_per_s_second_half=second_half,
        nodes_joined=run.joined_count,
        nodes_left=run.left_count,
        links_per_node_median=_median([float(len(n.links)) for n in live]),
        table_size_median=_median([float(len(n.dht.table)) for n in live]),
        events=run.events,
        anonymity_clients=min(cfg.anonymity_clients, cfg.nodes),
        anonymity_wall_s=round(t2 - t1, 3),
        anonymity_in_parallel=wait is not None,
        control_wall_s=round(t1 - t0, 3),
    )


def _digest_config(cfg: ScaleConfig) -> tuple[object, ...]:
    return (
        cfg.nodes,
        cfg.duration,
        cfg.churn,
        cfg.adversary,
        cfg.sybil,
        cfg.sybil_subnets,
        cfg.anonymity_days,
        cfg.no_guards,
        cfg.seed,
        cfg.lookup_count,
        cfg.circuit_count,
        cfg.anonymity_clients,
    )


def _anonymity_progress(progress: Callable[[str, int, int], None], done: int, total: int) -> None:
    progress("anonymity", done, total)


__all__ = [
    "PUZZLE_DIFFICULTY",
    "AnonymityStarter",
    "ScaleConfig",
    "ScaleReport",
    "anonymity_config",
    "simulate",
]
